"""``hallucinator transfer``: fine-tune a checkpoint as a detector and evaluate it;
``hallucinator make-detection-set``: the small COCO + VOC detection set of CIFAR-10 objects on noise."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from typing import Any

EPILOG = """\
examples:
  hallucinator make-detection-set --data-dir ../shared/datasets/cifar10-jpeg.tar.gz --output data/cifar-det
  hallucinator make-detection-set --data-dir CIFAR --output DIR --train-images 200 --test-images 50 --seed 1

DIR then holds COCO's layout (annotations/instances_{train,val}.json, train/, val/) and VOC's
(VOC2007/{Annotations,ImageSets/Main/{trainval,test}.txt,JPEGImages}); read them with
hallucinator.transfer.CocoDetection(DIR, "train") and VOCDetection(DIR, classes=None), or fine-tune on
them with hallucinator transfer CKPT --config configs/transfer/cifar_det_r18c4.yaml --data-dir DIR.
"""

TRANSFER_EPILOG = """\
examples:
  hallucinator transfer runs/in1k/checkpoints/last.ckpt --format voc --data-dir datasets/VOCdevkit \\
      --output-dir runs/voc --config configs/transfer/voc_r50c4_24k.yaml
  hallucinator transfer CKPT --task instance-segmentation --format coco --data-dir datasets/coco \\
      --output-dir runs/coco --config configs/transfer/coco_r50c4_2x.yaml --device gpu --devices 8
  hallucinator transfer runs/quickstart/checkpoints/last.ckpt --config configs/transfer/cifar_det_r18c4.yaml \\
      --format coco --data-dir data/cifar-det --output-dir runs/det   (the small set, on a CPU in minutes)
  hallucinator transfer CKPT ... --init random   (the same network from scratch: the baseline)
  hallucinator transfer CKPT ... --output-dir runs/voc --resume

Flags override the config file; without --config the recipe is MoCo's VOC R50-C4 24k one (COCO: its 2x
schedule). COCO: DIR/annotations/instances_<split>.json with the images in DIR/<split>/ (train2017 and
val2017, or train and val); VOC: DIR/VOC2007 (+ VOC2012) trainval for training, VOC2007 test for testing.
The run directory gets config.yaml, csv/, tensorboard/, checkpoints/last.ckpt and evaluation.json
(docs/transfer.md).
"""

# hallucinator.transfer.models' TASKS and ARCHS (tests/cli/test_transfer.py): named here, so that --help loads no torch
TASKS = ("detection", "instance-segmentation")
ARCHS = ("c4", "fpn")
# flag -> dotted config key
TRANSFER_FLAGS = {
    "checkpoint": "model.checkpoint",
    "task": "model.task",
    "arch": "model.arch",
    "init": "model.init",
    "format": "data.format",
    "data_dir": "data.data_dir",
    "num_workers": "data.num_workers",
    "output_dir": "output_dir",
    "max_steps": "solver.max_steps",
    "batch_size": "solver.batch_size",
    "lr": "solver.base_lr",
    "device": "trainer.accelerator",
    "devices": "trainer.devices",
    "threads": "trainer.cpu_threads",
    "seed": "seed",
}


def _devices(text: str) -> int | str:
    return text if text == "auto" else int(text)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "transfer",
        help="fine-tune a checkpoint as Faster / Mask R-CNN (R-C4 or FPN) on COCO or VOC, then its AP",
        description="Transfer to detection and instance segmentation after MoCo's detectron2 protocol (the paper's "
        "Table 7) on torchvision's detectors: fine-tunes the checkpoint's backbone with every layer and BatchNorm "
        "trained, then evaluates on the test split (COCO AP, AP50, AP75; VOC07 AP50 and detectron2's VOC AP).",
        epilog=TRANSFER_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("checkpoint", help="a `hallucinator pretrain` checkpoint, e.g. RUN/checkpoints/last.ckpt")
    parser.add_argument("--config", help="a recipe YAML file (configs/transfer/*.yaml); the flags override it")
    parser.add_argument("--task", choices=TASKS, help="model.task (default detection)")
    parser.add_argument("--format", choices=("coco", "voc"), help="the data's layout (data.format; default voc)")
    parser.add_argument("--data-dir", help="COCO's root (annotations/, train2017/, ...) or VOC's VOCdevkit")
    parser.add_argument("--output-dir", help="run directory (output_dir)")
    parser.add_argument("--arch", choices=ARCHS, help="c4 (the paper's R-C4, default) or fpn (model.arch)")
    parser.add_argument(
        "--init", choices=("checkpoint", "random"), help="random: the backbone from scratch, the baseline (model.init)"
    )
    parser.add_argument("--max-steps", type=int, help="training iterations (solver.max_steps)")
    parser.add_argument("--batch-size", type=int, help="images per step, all processes (solver.batch_size)")
    parser.add_argument("--lr", type=float, help="lr for a batch of 16, scaled to --batch-size (solver.base_lr)")
    parser.add_argument("--num-workers", type=int, help="DataLoader workers (data.num_workers)")
    parser.add_argument("--device", choices=("auto", "cpu", "gpu", "cuda", "mps"), help="trainer.accelerator")
    parser.add_argument("--devices", type=_devices, help="processes per node, DDP when > 1 (trainer.devices)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (trainer.cpu_threads)")
    parser.add_argument("--seed", type=int, help="seed")
    parser.add_argument("--resume", action="store_true", help="continue from OUTPUT_DIR/checkpoints/last.ckpt")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--json", action="store_true", help="end the output with one JSON line of the figures")
    parser.set_defaults(func=run_transfer)
    _register_make_detection_set(subparsers)


def _register_make_detection_set(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "make-detection-set",
        help="make a small detection set (COCO and VOC layouts) of CIFAR-10 test objects on noise",
        description="Pastes 1 to 4 CIFAR-10 test images, scaled 1x to 3x, onto seeded noise canvases without "
        "overlap, and writes every canvas with its exact boxes in COCO's and in PASCAL VOC's layout.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--data-dir", required=True, help="CIFAR-10: the JPEG archive, or torchvision's cifar-10-batches-py folder"
    )
    parser.add_argument("--output", required=True, help="directory to write (new or empty)")
    parser.add_argument("--train-images", type=int, default=1000, help="training canvases (default 1000)")
    parser.add_argument("--test-images", type=int, default=250, help="test canvases (default 250)")
    parser.add_argument(
        "--canvas", type=int, nargs=2, default=(128, 128), metavar=("HEIGHT", "WIDTH"), help="default 128 128"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache-dir", help="where CIFAR-10's decode is kept (default: the data cache)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from hallucinator.transfer.detection_set import make_detection_set

    try:
        made = make_detection_set(
            args.data_dir,
            args.output,
            images_per_split={"train": args.train_images, "test": args.test_images},
            canvas=tuple(args.canvas),
            seed=args.seed,
            cache_dir=args.cache_dir,
            progress=print,
        )
    except (FileNotFoundError, ValueError) as error:
        print(f"hallucinator make-detection-set: {error}", file=sys.stderr)
        return 2
    counts = ", ".join(
        f"{made.images[split]} {split} canvases ({made.objects[split]} objects)" for split in made.images
    )
    print(f"wrote {counts} to {made.root}: COCO in annotations/, train/, val/; VOC in VOC2007/")
    return 0


def transfer_overrides(args: argparse.Namespace) -> list[str]:
    """The flags given, as dotted overrides (JSON scalars: a value reaches the config as argparse typed it)."""
    overrides = [
        f"--{key}={json.dumps(getattr(args, flag))}"
        for flag, key in TRANSFER_FLAGS.items()
        if getattr(args, flag) is not None
    ]
    if args.no_progress:
        overrides.append("--trainer.progress_bar=false")
    return overrides


def _figures_line(metrics: dict[str, Any]) -> str:
    shown = [key for key in metrics if key.endswith(("AP", "AP50", "AP75"))]
    return ", ".join(f"{key} {metrics[key]:.2f}" for key in sorted(shown, key=lambda k: (k.split("_")[0], k)))


def run_transfer(args: argparse.Namespace) -> int:
    from hallucinator.engine import ConfigError, TrainingDiverged
    from hallucinator.evaluation.progress import progress_bar
    from hallucinator.transfer.config import load_transfer_config
    from hallucinator.transfer.train import transfer

    started = time.perf_counter()
    try:
        config = load_transfer_config(args.config, transfer_overrides(args))
        progress = (
            None
            if not config.trainer.progress_bar
            else lambda batches: progress_bar(batches, desc="evaluate", unit="batch")
        )
        result = transfer(config, resume=args.resume, progress=progress)
    except ConfigError as error:
        print(f"hallucinator transfer: config error: {error}", file=sys.stderr)
        return 2
    except TrainingDiverged as error:
        print(f"hallucinator transfer: training diverged: {error}", file=sys.stderr)
        return 1
    except (FileNotFoundError, ValueError, ImportError) as error:  # bad input: checkpoint, data, a missing library
        print(f"hallucinator transfer: {error}", file=sys.stderr)
        return 2
    if result.global_rank != 0:
        return 0
    if result.interrupted:
        print(
            f"interrupted by {result.interrupted} at step {result.global_step}; continue with the same command and "
            "--resume"
        )
        return 128 + signal.Signals[result.interrupted].value
    metrics = result.metrics
    print(
        f"fine-tuning: {result.global_step} steps, {result.train_seconds:.0f} s training, "
        f"{time.perf_counter() - started:.0f} s wall; {metrics['backbone_tensors_loaded']} backbone tensors loaded "
        f"from the checkpoint; checkpoint {result.checkpoint}"
    )
    print(f"on the {metrics['test_images']} test images (percent): {_figures_line(metrics)}")
    print(f"figures in {result.output_dir / 'evaluation.json'}")
    if args.json:
        print(json.dumps(json.loads((result.output_dir / "evaluation.json").read_text())))
    return 0
