"""``transfer(config)``: fine-tune a pre-trained encoder as Faster / Mask R-CNN and evaluate it (issue 25).

The run puts together the config (:mod:`hallucinator.transfer.config`), the data
(:mod:`~hallucinator.transfer.data`), the fine-tuning (:mod:`~hallucinator.transfer.module`, MoCo's detectron2
protocol) and, at the end, the evaluation on the test split (:mod:`~hallucinator.transfer.evaluation`): COCO's AP,
and for VOC also VOC07's.

Run directory (``config.output_dir``), as ``hallucinator pretrain``'s::

    config.yaml                 the resolved config
    csv/version_N/metrics.csv   per-step losses and lr; N counts (re)starts
    tensorboard/                the same for TensorBoard
    checkpoints/last.ckpt       every ``trainer.last_every_n_steps`` steps, on SIGINT/SIGTERM and at the end (atomic)
    evaluation.json             the final figures (percent), as ``hallucinator transfer --json`` prints them

Example:
    >>> config = load_transfer_config("configs/transfer/voc_r50c4_24k.yaml",
    ...                               ["--model.checkpoint=runs/in1k/checkpoints/last.ckpt", "--data.data_dir=VOCdevkit"])
    >>> transfer(config).metrics["bbox_AP50"]  # doctest: +SKIP
"""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities import rank_zero_info

from hallucinator.engine.callbacks import Checkpointing
from hallucinator.engine.config import ConfigError
from hallucinator.engine.train import (
    TrainingDiverged,
    build_trainer,
    check_accelerator,
    checkpoint_to_resume,
    quiet_lightning,
    resolve_precision,
)
from hallucinator.transfer.config import TransferConfig, engine_config
from hallucinator.transfer.data import build_datasets, resolved_data
from hallucinator.transfer.evaluation import Progress, evaluate
from hallucinator.transfer.module import TransferModule, build_model

__all__ = ["EVALUATION_FILE", "TransferResult", "transfer"]

EVALUATION_FILE = "evaluation.json"


@dataclass
class TransferResult:
    """What a run produced; ``metrics`` (rank 0, after a finished run) is what ``evaluation.json`` holds."""

    config: TransferConfig
    output_dir: Path
    checkpoint: Path
    global_step: int
    interrupted: str | None
    train_seconds: float
    backbone_tensors_loaded: int
    global_rank: int = 0
    metrics: dict[str, Any] = field(default_factory=dict)


def _write_json(path: Path, figures: Mapping[str, Any]) -> None:
    """``figures`` as strict JSON (a NaN, a figure without ground truth to measure, as ``null``), atomically."""
    strict = {key: None if isinstance(value, float) and math.isnan(value) else value for key, value in figures.items()}
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(strict, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def transfer(
    config: TransferConfig,
    callbacks: Sequence[pl.Callback] = (),
    *,
    resume: bool = False,
    progress: Progress | None = None,
) -> TransferResult:
    """Fine-tune ``config.model.checkpoint``'s backbone as a detector on ``config.data``, then evaluate it.

    Args:
        config: a checked config (:func:`load_transfer_config`), left unchanged; the run's copy (precision,
            splits and VOC years written out) is ``result.config`` and ``config.yaml``.
        callbacks: extra Lightning callbacks.
        resume: continue from ``output_dir/checkpoints/last.ckpt`` (same step, lr, optimizer, random draws).
        progress: wraps the evaluation's batches in a progress bar (the CLI passes one).

    Raises:
        ConfigError, FileNotFoundError, ValueError: bad input, one line naming the key or file that fixes it.
        TrainingDiverged: the loss became NaN or inf (the last good checkpoint is kept).
    """
    output_dir = Path(config.output_dir)
    checkpoints = Checkpointing(output_dir / "checkpoints", last_every_n_steps=config.trainer.last_every_n_steps)
    ckpt_path = checkpoint_to_resume(checkpoints.last) if resume else None
    if config.trainer.cpu_threads:
        torch.set_num_threads(config.trainer.cpu_threads)
    engine = engine_config(config)
    check_accelerator(engine)
    precision, reason = resolve_precision(engine)
    rank_zero_info(reason)
    engine = replace(engine, trainer=replace(engine.trainer, precision=precision))
    config = resolved_data(replace(config, trainer=replace(config.trainer, precision=precision)))
    train_set, test_set = build_datasets(config)
    rank_zero_info(f"training set: {train_set!r}\ntest set: {test_set!r}")
    if len(train_set) < config.solver.batch_size:
        raise ConfigError(
            f"solver.batch_size: {config.solver.batch_size} is more than the {len(train_set)} training images "
            "with objects (--batch-size)"
        )
    pl.seed_everything(config.seed, workers=True, verbose=False)
    detector, loaded = build_model(config, len(train_set.classes))
    module = TransferModule(config, detector, train_set)
    with quiet_lightning(), warnings.catch_warnings():
        # the run counts steps, not epochs: a small set's short epochs still log every log_every_n_steps steps
        warnings.filterwarnings("ignore", message=".*smaller than the logging interval.*")
        trainer = build_trainer(engine, [checkpoints, *callbacks], output_dir)
        try:
            trainer.fit(module, ckpt_path=ckpt_path, weights_only=True)
        except RuntimeError as error:
            if ckpt_path and "state_dict" in str(error):
                raise ConfigError(
                    f"--resume: {ckpt_path} holds another detector than this config builds ({config.model.arch}, "
                    f"{config.model.task}, {len(train_set.classes)} classes); resume with the run's own config "
                    f"({output_dir / 'config.yaml'})"
                ) from error
            raise
    if module.diverged:
        raise TrainingDiverged(f"{module.diverged} ({checkpoints.last}).")
    result = TransferResult(
        config=config,
        output_dir=output_dir,
        checkpoint=checkpoints.last,
        global_step=trainer.global_step,
        interrupted=checkpoints.interrupted,
        train_seconds=module.train_seconds,
        backbone_tensors_loaded=loaded,
        global_rank=trainer.global_rank,
    )
    if result.interrupted or result.global_rank != 0:
        return result
    rank_zero_info(f"evaluating on the {len(test_set)} test images ...")
    result.metrics = evaluate(
        module.detector,
        test_set,
        config.model.task,
        test_size=config.data.test_size,
        batch_size=config.data.test_batch_size,
        num_workers=config.data.num_workers,
        device=trainer.strategy.root_device,
        progress=progress,
    )
    result.metrics.update(
        backbone_tensors_loaded=loaded,
        steps=result.global_step,
        train_seconds=result.train_seconds,
        test_images=len(test_set),
    )
    _write_json(output_dir / EVALUATION_FILE, result.metrics)
    return result
