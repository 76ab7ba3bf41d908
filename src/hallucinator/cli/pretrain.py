"""``hallucinator pretrain CONFIG [overrides]``: pre-training from a YAML config."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from pathlib import Path
from typing import Any

EPILOG = """\
overrides: any config key as --section.key=value (or --section.key value), values in YAML, e.g.
  --hallucinator.enabled=false --trainer.max_epochs=10 --optimizer.base_lr=0.3 --model.hparams.temperature=0.2

examples:
  hallucinator pretrain configs/quickstart.yaml --data-dir ../shared/datasets/cifar10-jpeg.tar.gz
  hallucinator pretrain configs/table1/cifar10_mocov2_hal.yaml --print-config
  hallucinator pretrain configs/quickstart.yaml --output-dir runs/q --resume
  hallucinator pretrain configs/quickstart.yaml --dataset imagefolder --data-dir ~/photos   (your own images)
  torchrun --nproc_per_node 4 -m hallucinator pretrain CONFIG --trainer.devices=4   (DDP, see docs/training.md)
"""

# short flag -> dotted config key
SHORT_FLAGS = {
    "dataset": "data.dataset",
    "data_dir": "data.data_dir",
    "output_dir": "output_dir",
    "epochs": "trainer.max_epochs",
    "batch_size": "data.batch_size",
    "seed": "seed",
    "device": "trainer.accelerator",
    "class_list": "data.class_list",
}


def _add_short_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dataset",
        help="dataset name (data.dataset), e.g. cifar10, cifar100, stl10; imagefolder: a folder of your own images",
    )
    parser.add_argument("--data-dir", help="dataset root or archive (data.data_dir)")
    parser.add_argument("--output-dir", help="run directory (output_dir)")
    parser.add_argument("--epochs", type=int, help="number of epochs (trainer.max_epochs)")
    parser.add_argument("--batch-size", type=int, help="global batch size (data.batch_size; the lr scales with it)")
    parser.add_argument("--seed", type=int, help="random seed (seed)")
    parser.add_argument(
        "--class-list",
        help="ImageNet-200's classes: a file of wnids, or random (data.class_list; default: the authors')",
    )
    parser.add_argument("--device", choices=("auto", "cpu", "gpu", "cuda", "mps"), help="trainer.accelerator")
    parser.add_argument(
        "--no-hallucinator", action="store_true", help="train the plain method (hallucinator.enabled=false)"
    )
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    parser.add_argument("--resume", action="store_true", help="continue from OUTPUT_DIR/checkpoints/last.ckpt")
    parser.add_argument("--no-knn", action="store_true", help="skip the final kNN evaluation on the test set")
    parser.add_argument(
        "--no-online-linear",
        action="store_true",
        help="no online linear probe during pre-training (trainer.online_linear=false)",
    )
    parser.add_argument(
        "--knn-limit",
        type=int,
        help="kNN on a fixed random N train and N test images only (quick checks; default: all)",
    )


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "pretrain",
        help="self-supervised pre-training from a YAML config",
        description="Pre-train a backbone with any method of hallucinator.methods.METHODS (MoCo v1/v2, SimCLR, SimSiam; "
        "BYOL, Barlow Twins, VICReg, MoCo v3, NNCLR), with or without the Hallucinator.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("config", help="YAML config file (see configs/)")
    _add_short_flags(parser)
    # the --section.key=value overrides: what the parser does not know (hallucinator.cli.parse_arguments)
    parser.set_defaults(func=run, overrides=[])


def config_overrides(args: argparse.Namespace) -> list[str]:
    """The dotted overrides: the short flags first, then the explicit ones (which win).

    Only ``--section.key=value`` values are YAML; a short flag's value reaches the config as argparse typed it.
    """
    overrides = []
    for flag, key in SHORT_FLAGS.items():
        value = getattr(args, flag)
        if value is not None:
            # a JSON scalar is YAML that reads back as itself: --output-dir 2024_01 / on / null stays that string
            overrides.append(f"--{key}={json.dumps(value)}")
    if args.no_hallucinator:
        overrides.append("--hallucinator.enabled=false")
    if args.no_online_linear:
        overrides.append("--trainer.online_linear=false")
    return overrides + list(args.overrides)


def _knn_monitor(config: Any, limit: int | None = None) -> Any:
    """The evaluation layer's kNN monitor on the run's dataset (train split = bank, test split = queries)."""
    from hallucinator.engine.datamodule import dataset_options
    from hallucinator.evaluation.monitor import KNNMonitor

    every = config.trainer.knn_every_n_epochs
    d = config.data
    return KNNMonitor.from_dataset(
        d.dataset,
        d.data_dir,
        cache_dir=d.cache_dir,
        image_size=d.image_size,
        bank_size=limit,
        test_size=limit,
        every_n_epochs=every or 1,
        dataset_options=dataset_options(d),
    )


def _knn_unavailable(config: Any) -> str | None:
    """Why kNN cannot run on the run's data (a folder of one's own images without labels or test split)."""
    d = config.data
    if d.dataset != "imagefolder" or not Path(d.data_dir).expanduser().is_dir():
        return None
    from hallucinator.data.folder import missing_test_split
    from hallucinator.engine.datamodule import dataset_options

    return missing_test_split(d.data_dir, dataset_options(d)["folder"])


def run(args: argparse.Namespace) -> int:
    from hallucinator.engine import ConfigError, TrainingDiverged, dump_config, load_config, pretrain

    try:
        config = load_config(args.config, config_overrides(args))
    except ConfigError as error:
        print(f"hallucinator pretrain: config error: {error}", file=sys.stderr)
        return 2
    if args.print_config:
        print(dump_config(config), end="")
        return 0
    monitor = None
    started = time.perf_counter()
    knn = not args.no_knn
    try:
        unavailable = _knn_unavailable(config) if knn else None
        if unavailable:
            print(f"kNN monitor and final kNN skipped: {unavailable}", flush=True)
            knn = False
        if config.trainer.knn_every_n_epochs > 0 and knn:
            monitor = _knn_monitor(config, args.knn_limit)
        result = pretrain(config, [monitor] if monitor else [], resume=args.resume)
    except TrainingDiverged as error:
        print(f"hallucinator pretrain: training diverged: {error}", file=sys.stderr)
        return 1
    except (FileNotFoundError, ValueError) as error:  # bad input: config values, missing or corrupt data
        print(f"hallucinator pretrain: {error}", file=sys.stderr)
        return 2
    if result.global_rank != 0:
        return 0
    from hallucinator.engine.loggers import log_final

    logged: dict[str, float] = {}  # the final evaluation, for the run's loggers
    try:
        return _evaluate_and_record(args, result, monitor, time.perf_counter() - started, logged, knn)
    finally:
        log_final(result.loggers, logged, step=result.global_step)


def _evaluate_and_record(
    args: argparse.Namespace, result: Any, monitor: Any, wall: float, logged: dict[str, float], knn: bool
) -> int:
    """What follows the training on rank 0: its time and the final evaluation (``knn``: with the final kNN),
    printed and recorded."""
    config = result.config  # with what the run resolved (image size, precision)
    print(
        f"pre-training: {result.global_step} steps ({result.global_step / result.steps_per_epoch:.2f} epochs), "
        f"{wall:.0f} s wall, "
        f"{result.images_per_second:.0f} image pairs/s; checkpoint {result.checkpoint}"
    )
    _record_training(result, resumed=args.resume)  # also when interrupted: a resume adds its time
    _record_online_linear(config, result, logged)
    if result.interrupted:
        print(
            f"interrupted by {result.interrupted}; continue with: hallucinator pretrain {args.config} "
            f"--output-dir {config.output_dir} --resume"
        )
        return 128 + signal.Signals[result.interrupted].value
    if knn:
        try:
            _final_knn(config, result, monitor, args.knn_limit, logged)
        except (FileNotFoundError, ValueError) as error:  # e.g. an archive without test/: the training is kept
            print(
                f"hallucinator pretrain: final kNN not run: {error}; the checkpoint is saved "
                f"({result.checkpoint}), rerun with --no-knn to skip it",
                file=sys.stderr,
            )
            return 2
    return 0


def _record_evaluation(result: Any, key: str, figures: dict[str, Any], logged: dict[str, float]) -> None:
    """``figures`` into ``RUN/evaluation.json`` under ``key`` and, as ``evaluation/KEY/NAME``, into ``logged``
    (the numbers the run's loggers get at the end: W&B, MLflow, TensorBoard, the CSV's last row)."""
    from hallucinator.evaluation.report import save_evaluation

    save_evaluation(result.output_dir, key, figures)
    numbers = {name: v for name, v in figures.items() if isinstance(v, int | float) and not isinstance(v, bool)}
    logged.update({f"evaluation/{key}/{name}": float(value) for name, value in numbers.items()})


def _record_training(result: Any, resumed: bool) -> None:
    """Training time and speed into ``RUN/evaluation.json`` (seconds add up over resumes), for ``report``."""
    from hallucinator.evaluation.report import load_evaluation, save_evaluation

    previous = load_evaluation(result.output_dir).get("train", {}) if resumed else {}
    save_evaluation(
        result.output_dir,
        "train",
        {
            "seconds": previous.get("seconds", 0.0) + result.train_seconds,
            "steps": result.global_step,
            "epochs": result.global_step / result.steps_per_epoch,
            "images_per_second": _pairs_per_second_over_segments(previous, result),
        },
    )


def _record_online_linear(config: Any, result: Any, logged: dict[str, float], test_top1: float | None = None) -> None:
    """The online linear probe's figures into ``RUN/evaluation.json``: its training top-1 over the last
    epoch and, once the final kNN evaluation has the test features, its top-1 on the test set."""
    probe = result.online_linear
    if probe is None:
        return
    figures = {"train_top1_last_epoch": probe.epoch_top1(), "dataset": config.data.dataset}
    if test_top1 is not None:
        figures["top1"] = test_top1
        print(f"online linear top-1 on the {config.data.dataset} test set: {test_top1:.2f} %")
    _record_evaluation(result, "online_linear", figures, logged)


def _pairs_per_second_over_segments(previous: dict[str, Any], result: Any) -> float:
    """Pairs/s of the whole run: total steps over the summed step time of the earlier and this segment.

    A resume that trains no further step (the run was already finished) keeps the earlier figure.
    """
    steps_before, rate_before = previous.get("steps", 0), previous.get("images_per_second", 0.0)
    new_steps, rate_now = result.global_step - steps_before, result.images_per_second
    if new_steps <= 0 or not rate_now:
        return rate_before
    if not steps_before or not rate_before:
        return rate_now
    # the batch is the same in both segments, so step counts weigh the step times
    return result.global_step / (steps_before / rate_before + new_steps / rate_now)


def _final_knn(config: Any, result: Any, monitor: Any, limit: int | None, logged: dict[str, float]) -> None:
    """kNN top-1 of the trained backbone on the whole test set (the monitor's last result when current)."""
    final_epoch = config.trainer.max_steps <= 0 and result.epoch >= config.trainer.max_epochs
    if monitor is not None and monitor.last is not None and final_epoch:
        knn, test_features = monitor.last, monitor.last_test_features
    else:
        monitor = monitor or _knn_monitor(config, limit)
        print(
            f"kNN evaluation: features of {len(monitor.train_labels):,} bank and {len(monitor.test_labels):,} "
            "test images ...",
            flush=True,
        )
        device = next(result.backbone.parameters()).device
        knn, test_features = monitor.evaluate(result.backbone, device, progress=config.trainer.progress_bar)
    images = f"a fixed random {limit}" if limit else "all"
    print(
        f"kNN top-1 on the {config.data.dataset} test set ({images} images): {knn.top1:.2f} % "
        f"(top-5 {knn.top5:.2f} %, k={knn.k})"
    )
    result.metrics["knn_top1"] = knn.top1
    if limit is None:
        _record_evaluation(result, "knn", {**knn.as_dict(), "dataset": config.data.dataset}, logged)
        if result.online_linear is not None and test_features is not None:
            test_top1 = result.online_linear.top1(test_features, monitor.test_labels)
            _record_online_linear(config, result, logged, test_top1)
