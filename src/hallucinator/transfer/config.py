"""``hallucinator transfer``'s config: the sections ``model``, ``data``, ``solver`` and ``trainer``, read and checked.

A recipe is YAML (``base: other.yaml`` inherits, as ``hallucinator pretrain``'s configs do) over the defaults,
which are MoCo's ``pascal_voc_R_50_C4_24k`` (``configs/transfer/voc_r50c4_24k.yaml``); with ``data.format: coco``
they are its ``coco_R_50_C4_2x`` schedule (:data:`COCO_DEFAULTS`). Dotted overrides come last. An unknown key or
a bad value is a :class:`~hallucinator.engine.config.ConfigError` naming it; docs/transfer.md lists the keys.

Example:
    >>> config = load_transfer_config("configs/transfer/voc_r50c4_24k.yaml", ["--model.checkpoint=last.ckpt"])
    >>> config.solver.lr(), config.solver.steps
    (0.02, [18000, 22000])
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from hallucinator.engine.config import (
    ACCELERATORS,
    PRECISION_ALIASES,
    PRECISIONS,
    Config,
    ConfigError,
    TrainerConfig,
    dataclass_from_dict,
    deep_merge,
    parse_overrides,
    read_yaml,
)
from hallucinator.transfer.models import ARCHS, TASKS

__all__ = [
    "COCO_DEFAULTS",
    "FORMATS",
    "INITS",
    "REFERENCE_BATCH_SIZE",
    "SolverConfig",
    "TransferConfig",
    "TransferDataConfig",
    "TransferModelConfig",
    "TransferTrainerConfig",
    "engine_config",
    "load_transfer_config",
    "validate",
]

FORMATS = ("coco", "voc")
INITS = ("checkpoint", "random")
REFERENCE_BATCH_SIZE = 16  # the batch MoCo's detectron2 recipes (IMS_PER_BATCH) give their lr for
# without --config, COCO takes MoCo's coco_R_50_C4_2x schedule (configs/transfer/coco_r50c4_2x.yaml) over the
# defaults below, which are its pascal_voc_R_50_C4_24k (configs/transfer/voc_r50c4_24k.yaml)
COCO_DEFAULTS: dict[str, Any] = {
    "data": {"train_sizes": list(range(640, 801, 32)), "invalid_boxes": "repair"},
    # MoCo's COCO configs leave detectron2's default warm-up, 1000 iterations; its VOC config sets 100
    "solver": {"max_steps": 180_000, "steps": [120_000, 160_000], "warmup_steps": 1000},
}


@dataclass
class TransferModelConfig:
    checkpoint: str = ""
    """The ``hallucinator pretrain`` checkpoint whose backbone is fine-tuned (``hallucinator transfer CKPT``)."""
    init: str = "checkpoint"
    """``checkpoint``: the backbone's weights from it; ``random``: the same network from scratch (the baseline)."""
    task: str = "detection"
    """``detection`` (Faster R-CNN) or ``instance-segmentation`` (Mask R-CNN, COCO only)."""
    arch: str = "c4"
    """``c4`` (the paper's R-C4: RPN on res4, res5 as the box head) or ``fpn`` (torchvision's ResNet-FPN)."""
    anchor_sizes: list[int] | None = None
    """Anchor sides in input pixels (``None``: ``models.build_detector``'s, 32..512 at stride 16; FPN: one per level)."""
    detector: dict[str, Any] = field(default_factory=dict)
    """Extra keyword arguments of torchvision's ``FasterRCNN`` / ``MaskRCNN`` (e.g. ``box_batch_size_per_image``)."""


@dataclass
class TransferDataConfig:
    format: str = "voc"
    """``coco`` (``annotations/instances_<split>.json``, images in ``<split>/``) or ``voc`` (``VOC<year>/``)."""
    data_dir: str = "data"
    train_split: str | None = None
    """COCO: ``instances_<train_split>.json`` (``None``: ``train2017``, else ``train`` where only that exists);
    VOC: the image set of each year (``None``: ``trainval``)."""
    test_split: str | None = None
    """COCO: ``None`` = ``val2017``, else ``val``; VOC: the image set of VOC2007 (``None``: ``test``)."""
    voc_years: list[str] | None = None
    """VOC years trained on (``None``: 2007 and 2012 when ``VOC2012/`` has the training image set, else 2007)."""
    classes: list[str] | None = None
    """VOC's class names labelled ``1 .. C`` (``None``: VOC's 20); COCO reads its categories from the file."""
    train_sizes: list[int] = field(default_factory=lambda: list(range(480, 801, 32)))
    """Shorter sides a training image is resized to, one drawn per image (detectron2's ``MIN_SIZE_TRAIN``)."""
    test_size: int = 800
    """Shorter side of the test images (``MIN_SIZE_TEST``)."""
    max_size: int = 1333
    """Longer side at most, in training and test (``MAX_SIZE_TRAIN`` / ``_TEST``)."""
    flip: bool = True
    """Horizontal flip of half the training images (with their boxes and masks)."""
    invalid_boxes: str = "error"
    """Boxes outside the image or without area: ``error``, or ``repair`` (clip, drop degenerate ones; counted)."""
    num_workers: int = 2
    """DataLoader worker processes decoding images, for training and test."""
    test_batch_size: int = 1
    """Images per forward pass in the final evaluation (detectron2's: 1 per process)."""


@dataclass
class SolverConfig:
    batch_size: int = 16
    """Images per step, all processes together (``IMS_PER_BATCH``)."""
    base_lr: float = 0.02
    """The lr for a batch of ``reference_batch_size``; the lr used is ``base_lr * batch_size / reference_batch_size``."""
    reference_batch_size: int = REFERENCE_BATCH_SIZE
    momentum: float = 0.9
    weight_decay: float = 1e-4
    """On every weight and bias; normalisation layers take none (detectron2's ``WEIGHT_DECAY_NORM: 0``)."""
    max_steps: int = 24_000
    steps: list[int] = field(default_factory=lambda: [18_000, 22_000])
    """Iterations at which the lr is multiplied by ``gamma`` (not rescaled with the batch size)."""
    gamma: float = 0.1
    warmup_steps: int = 100
    warmup_factor: float = 0.001
    """The warm-up starts at ``warmup_factor * lr`` and rises linearly to ``lr`` (detectron2's)."""

    def lr(self) -> float:
        """The peak learning rate actually used (after linear scaling with the batch)."""
        return self.base_lr * self.batch_size / self.reference_batch_size


@dataclass
class TransferTrainerConfig:
    accelerator: str = "auto"
    devices: Any = "auto"
    """An int (processes per node), a list of GPU ids, or ``auto``; DDP when more than one."""
    strategy: str = "auto"
    num_nodes: int = 1
    precision: str = "32-true"
    """``32-true`` (default), or ``bf16-mixed`` / ``16-mixed`` / ``auto`` as ``hallucinator pretrain`` takes them."""
    log_every_n_steps: int = 20
    last_every_n_steps: int = 500
    """Refresh ``checkpoints/last.ckpt`` every N steps (it is also saved at the end and on SIGINT/SIGTERM)."""
    progress_bar: bool = True
    cpu_threads: int | None = None


@dataclass
class TransferConfig:
    """``hallucinator transfer``'s config; YAML sections ``model``, ``data``, ``solver``, ``trainer`` (docs/transfer.md)."""

    model: TransferModelConfig = field(default_factory=TransferModelConfig)
    data: TransferDataConfig = field(default_factory=TransferDataConfig)
    solver: SolverConfig = field(default_factory=SolverConfig)
    trainer: TransferTrainerConfig = field(default_factory=TransferTrainerConfig)
    output_dir: str = "runs/transfer"
    seed: int = 0


def load_transfer_config(path: str | Path | None, overrides: Sequence[str] = ()) -> TransferConfig:
    """The checked config: the defaults (with COCO's schedule for ``data.format: coco``), the file, the overrides.

    ``overrides`` are dotted keys as ``hallucinator pretrain`` takes them (``--solver.max_steps=100``);
    an unknown key or a bad value is a :class:`ConfigError` naming it.

    Example:
        >>> load_transfer_config(None, ["--model.checkpoint=last.ckpt", "--data.format=coco"]).solver.max_steps
        180000
    """
    data = deep_merge(read_yaml(path) if path is not None else {}, parse_overrides(overrides))
    if isinstance(data.get("data"), dict) and data["data"].get("format") == "coco":
        data = deep_merge(COCO_DEFAULTS, data)
    config = dataclass_from_dict(TransferConfig, data)
    precision = PRECISION_ALIASES.get(config.trainer.precision, config.trainer.precision)
    config = replace(config, trainer=replace(config.trainer, precision=precision))
    validate(config)
    return config


def _choice(key: str, value: str, allowed: Sequence[str]) -> None:
    if value not in allowed:
        raise ConfigError(f"{key}: {value!r} is not one of {list(allowed)}")


def _at_least(key: str, value: float, minimum: float) -> None:
    if value < minimum:
        raise ConfigError(f"{key}: must be >= {minimum:g}, got {value!r}")


def validate(config: TransferConfig) -> None:
    """Checks the values (types were checked when parsing); raises :class:`ConfigError` naming the key."""
    m, d, s, t = config.model, config.data, config.solver, config.trainer
    if not m.checkpoint:
        raise ConfigError("model.checkpoint: pass the pre-training checkpoint (hallucinator transfer CKPT)")
    _choice("model.init", m.init, INITS)
    _choice("model.task", m.task, TASKS)
    _choice("model.arch", m.arch, ARCHS)
    _choice("data.format", d.format, FORMATS)
    if m.task == "instance-segmentation" and d.format == "voc":
        raise ConfigError(
            "model.task: instance-segmentation trains on masks, which VOC's detection layout has none of; "
            "use --format coco (or --task detection)"
        )
    for key, values in (("model.anchor_sizes", m.anchor_sizes or []), ("data.train_sizes", d.train_sizes)):
        for i, value in enumerate(values):
            _at_least(f"{key}[{i}]", value, 1)
    if not d.train_sizes:
        raise ConfigError("data.train_sizes: give at least one shorter side, e.g. [800]")
    _at_least("data.test_size", d.test_size, 1)
    _at_least("data.max_size", d.max_size, 1)
    _choice("data.invalid_boxes", d.invalid_boxes, ("error", "repair"))
    _at_least("data.num_workers", d.num_workers, 0)
    _at_least("data.test_batch_size", d.test_batch_size, 1)
    if d.classes is not None and len(set(d.classes)) != len(d.classes):
        raise ConfigError(f"data.classes: a class is named twice in {d.classes}")
    _at_least("solver.batch_size", s.batch_size, 1)
    _at_least("solver.base_lr", s.base_lr, 0)
    _at_least("solver.reference_batch_size", s.reference_batch_size, 1)
    _at_least("solver.momentum", s.momentum, 0)
    _at_least("solver.weight_decay", s.weight_decay, 0)
    _at_least("solver.max_steps", s.max_steps, 1)
    _at_least("solver.warmup_steps", s.warmup_steps, 0)
    if not 0.0 <= s.warmup_factor <= 1.0:
        raise ConfigError(f"solver.warmup_factor: must be in [0, 1], got {s.warmup_factor}")
    if any(step < 1 for step in s.steps) or s.steps != sorted(s.steps):
        raise ConfigError(f"solver.steps: iterations must be positive and ascending, got {s.steps}")
    _at_least("solver.gamma", s.gamma, 0)
    _choice("trainer.accelerator", t.accelerator, ACCELERATORS)
    _choice("trainer.precision", t.precision, PRECISIONS)
    _at_least("trainer.num_nodes", t.num_nodes, 1)
    _at_least("trainer.log_every_n_steps", t.log_every_n_steps, 1)
    _at_least("trainer.last_every_n_steps", t.last_every_n_steps, 0)
    if t.cpu_threads is not None:
        _at_least("trainer.cpu_threads", t.cpu_threads, 1)


def engine_config(config: TransferConfig) -> Config:
    """The engine's config for the engine's trainer, device and precision checks: this run's trainer settings."""
    t = config.trainer
    trainer = TrainerConfig(
        max_steps=config.solver.max_steps,
        accelerator=t.accelerator,
        devices=t.devices,
        strategy=t.strategy,
        num_nodes=t.num_nodes,
        precision=t.precision,
        log_every_n_steps=t.log_every_n_steps,
        progress_bar=t.progress_bar,
        cpu_threads=t.cpu_threads,
    )
    return Config(trainer=trainer, output_dir=config.output_dir, seed=config.seed)
