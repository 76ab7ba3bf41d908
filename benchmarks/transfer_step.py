"""Time of one detection fine-tuning step of ``hallucinator transfer`` on the small set, with the small recipe.

A step is what the run does: the batch loaded and decoded, flipped, resized by torchvision's transform,
Faster R-CNN R18-C4's forward and losses, backward and SGD, inside the Lightning loop. The set is made
first (``make_detection_set``, 128 x 128 canvases) unless ``--data-dir`` names one, and the encoder is a
randomly initialised CIFAR-stem ResNet-18 of ``--width`` (the quickstart's 16): its weights do not change
the time. Each step's wall-clock and process CPU seconds are taken at the end of the step; the figures
are the medians after ``--warmup`` steps (CPU seconds with one thread are the least disturbed by other jobs).

    python benchmarks/transfer_step.py --threads 1                 # the figure of docs/BENCHMARKS.md
    python benchmarks/transfer_step.py --data-dir data/cifar-det --steps 40 --batch-size 16

The last line printed is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch

from hallucinator.engine.checkpoint import build_backbone
from hallucinator.engine.config import dump_config, load_config, to_dict
from hallucinator.transfer import load_transfer_config, make_detection_set, transfer

ROOT = Path(__file__).resolve().parents[1]


class StepTimer(pl.Callback):
    """Wall-clock and process CPU seconds of each training step, from the end of the previous one."""

    def __init__(self) -> None:
        self.wall: list[float] = []
        self.cpu: list[float] = []
        self._last: tuple[float, float] | None = None

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._last = (time.perf_counter(), time.process_time())

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        now = (time.perf_counter(), time.process_time())
        if self._last is not None:
            self.wall.append(now[0] - self._last[0])
            self.cpu.append(now[1] - self._last[1])
        self._last = now


def cpu_name() -> str:
    """``lscpu``'s model name (``platform.processor()`` where there is no lscpu)."""
    try:
        listing = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return platform.processor() or platform.machine()
    names = [line.split(":", 1)[1].strip() for line in listing.splitlines() if line.startswith("Model name")]
    return names[0] if names else platform.processor() or platform.machine()


def write_checkpoint(path: Path, width: int) -> Path:
    """A ``pretrain``-format checkpoint of a seeded random CIFAR-stem ResNet-18 of ``width``."""
    config = load_config(None, [f"--model.width={width}"])
    torch.manual_seed(0)
    state = {f"method.backbone.{k}": v for k, v in build_backbone(config).state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": state, "hyper_parameters": {"config": to_dict(config)}, "global_step": 0}, path)
    (path.parent.parent / "config.yaml").write_text(dump_config(config))
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(ROOT / "configs" / "transfer" / "cifar_det_r18c4.yaml"))
    parser.add_argument("--data-dir", help="a set made by `hallucinator make-detection-set` (default: made here)")
    parser.add_argument("--cifar", default=str(ROOT.parent / "shared" / "datasets" / "cifar10-jpeg.tar.gz"))
    parser.add_argument("--train-images", type=int, default=64, help="canvases of the set made here")
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--batch-size", type=int, help="default: the recipe's")
    parser.add_argument("--arch", default="c4", choices=("c4", "fpn"))
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: PyTorch's)")
    parser.add_argument("--device", default="cpu", choices=("cpu", "gpu"))
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        data_dir = Path(args.data_dir) if args.data_dir else work / "set"
        if not args.data_dir:
            make_detection_set(args.cifar, data_dir, images_per_split={"train": args.train_images, "test": 8})
        overrides = [
            f"--model.checkpoint={write_checkpoint(work / 'pre' / 'checkpoints' / 'last.ckpt', args.width)}",
            f"--model.arch={args.arch}",
            "--data.format=coco",
            f"--data.data_dir={data_dir}",
            f"--solver.max_steps={args.warmup + args.steps}",
            "--trainer.progress_bar=false",
            f"--trainer.accelerator={args.device}",
            f"--output_dir={work / 'run'}",
        ]
        if args.batch_size:
            overrides.append(f"--solver.batch_size={args.batch_size}")
        if args.threads:
            overrides.append(f"--trainer.cpu_threads={args.threads}")
        config = load_transfer_config(args.config, overrides)
        timer = StepTimer()
        result = transfer(config, [timer])
    wall, cpu = timer.wall[args.warmup :], timer.cpu[args.warmup :]
    batch = config.solver.batch_size
    figures = {
        "seconds_per_step": statistics.median(wall),
        "cpu_seconds_per_step": statistics.median(cpu),
        "images_per_s": batch / statistics.median(wall),
        "batch_size": batch,
        "steps_timed": len(wall),
        "train_sizes": config.data.train_sizes,
        "arch": args.arch,
        "width": args.width,
        "precision": result.config.trainer.precision,
        "threads": torch.get_num_threads(),
        "device": args.device,
        "cpu": cpu_name(),
        "torch": torch.__version__,
    }
    if args.device == "gpu":
        figures["gpu"] = torch.cuda.get_device_name()
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
