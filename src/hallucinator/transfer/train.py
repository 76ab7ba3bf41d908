"""``transfer(config)``: fine-tune a pre-trained encoder as Faster / Mask R-CNN and evaluate it (issue 25).

MoCo's detectron2 protocol (the paper's Table 7) on torchvision's detectors (:mod:`hallucinator.transfer.models`):
SGD with momentum 0.9 and weight decay 1e-4 (none on normalisation layers, detectron2's ``WEIGHT_DECAY_NORM: 0``),
the lr ``base_lr * batch_size / 16`` (MoCo's recipes are written for 16 images), a linear warm-up then steps
at given iterations (detectron2's ``WarmupMultiStepLR``), every layer trained, BatchNorm included, and
synchronised over processes under DDP. Training images get a shorter side drawn from ``data.train_sizes``
and a horizontal flip (detectron2's ``ResizeShortestEdge`` "choice" + ``RandomFlip``); crowd objects are
left out of the training targets and images without objects out of the training set, as detectron2 does.
At the end the detector is evaluated on the test split: COCO's AP through :func:`coco_metrics`, and for VOC
also VOC07's AP (:func:`voc_metrics`).

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

import bisect
import json
import math
import os
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, cast

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor, nn
from torchvision.transforms.v2 import functional as TF
from torchvision.tv_tensors import BoundingBoxFormat

from hallucinator.data import batch_loader, presets
from hallucinator.distributed import gather_with_grad, world_size
from hallucinator.engine.callbacks import Checkpointing
from hallucinator.engine.checkpoint import build_backbone, load_pretrained
from hallucinator.engine.config import (
    ACCELERATORS,
    PRECISION_ALIASES,
    PRECISIONS,
    Config,
    ConfigError,
    TrainerConfig,
    _from_dict,
    _merge,
    dump_config,
    parse_overrides,
    read_yaml,
    to_dict,
)
from hallucinator.engine.module import step_seed
from hallucinator.engine.train import (
    TrainingDiverged,
    _checkpoint_to_resume,
    build_trainer,
    check_accelerator,
    quiet_lightning,
    resolve_precision,
)
from hallucinator.transfer.coco_eval import coco_metrics
from hallucinator.transfer.datasets import (
    VOC_CLASSES,
    CocoDetection,
    DetectionDataset,
    InvalidBoxes,
    Target,
    VOCDetection,
)
from hallucinator.transfer.models import ARCHS, TASKS, build_detector, load_backbone_weights
from hallucinator.transfer.voc_ap import voc_metrics

__all__ = [
    "FORMATS",
    "INITS",
    "REFERENCE_BATCH_SIZE",
    "NaiveSyncBatchNorm",
    "TransferConfig",
    "TransferModule",
    "TransferResult",
    "convert_sync_batchnorm",
    "evaluate",
    "lr_factor",
    "load_transfer_config",
    "transfer",
]

FORMATS = ("coco", "voc")
INITS = ("checkpoint", "random")
REFERENCE_BATCH_SIZE = 16  # the batch MoCo's detectron2 recipes (IMS_PER_BATCH) give their lr for
EVALUATION_FILE = "evaluation.json"
# without --config, COCO takes MoCo's coco_R_50_C4_2x schedule (configs/transfer/coco_r50c4_2x.yaml) over the
# defaults below, which are its pascal_voc_R_50_C4_24k (configs/transfer/voc_r50c4_24k.yaml)
COCO_DEFAULTS: dict[str, Any] = {
    "data": {"train_sizes": list(range(640, 801, 32)), "invalid_boxes": "repair"},
    # MoCo's COCO configs leave detectron2's default warm-up, 1000 iterations; its VOC config sets 100
    "solver": {"max_steps": 180_000, "steps": [120_000, 160_000], "warmup_steps": 1000},
}
# (training, test) split names: COCO's, then the ones `hallucinator make-detection-set` writes
COCO_SPLITS = (("train2017", "val2017"), ("train", "val"))


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
        >>> load_transfer_config(None, ["--data.format=coco"]).solver.max_steps
        180000
    """
    data = _merge(read_yaml(path) if path is not None else {}, parse_overrides(overrides))
    if isinstance(data.get("data"), dict) and data["data"].get("format") == "coco":
        data = _merge(COCO_DEFAULTS, data)
    config = _from_dict(TransferConfig, data)
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


# ---------------------------------------------------------------------------------------
# data


def resolved_data(config: TransferConfig) -> TransferConfig:
    """A copy with what ``None`` chose (splits, VOC years) written out, read from ``data.data_dir``'s layout.

    A missing folder or the other format's layout is a one-line error naming the flag that fixes it.
    """
    d = config.data
    root = Path(d.data_dir).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"data.data_dir: {root} is not a directory (--data-dir)")
    coco_files = sorted(path.name for path in (root / "annotations").glob("instances_*.json"))
    has_voc = (root / "VOC2007").is_dir()
    if d.format == "coco":
        if not coco_files and has_voc:
            raise ValueError(
                f"{root} has VOC's layout (VOC2007/), not COCO's (annotations/instances_*.json): --format voc"
            )
        # COCO's names, unless only the small set's are there (a missing file is then named as COCO names it)
        train, test = next((pair for pair in COCO_SPLITS if f"instances_{pair[0]}.json" in coco_files), COCO_SPLITS[0])
        return replace(config, data=replace(d, train_split=d.train_split or train, test_split=d.test_split or test))
    if not has_voc and coco_files:
        raise ValueError(f"{root} has COCO's layout (annotations/{coco_files[0]}), not VOC's (VOC2007/): --format coco")
    train_split = d.train_split or "trainval"
    years = d.voc_years
    if years is None:
        years = (
            ["2007", "2012"] if (root / "VOC2012" / "ImageSets" / "Main" / f"{train_split}.txt").is_file() else ["2007"]
        )
    return replace(config, data=replace(d, train_split=train_split, test_split=d.test_split or "test", voc_years=years))


def build_datasets(config: TransferConfig) -> tuple[DetectionDataset, DetectionDataset]:
    """The training split (without images that have no objects) and the test split of a resolved config."""
    d = config.data
    masks = config.model.task == "instance-segmentation"
    invalid_boxes = cast(InvalidBoxes, d.invalid_boxes)  # checked by validate
    assert d.train_split and d.test_split  # written out by resolved_data
    if d.format == "coco":
        train: DetectionDataset = CocoDetection(
            d.data_dir, d.train_split, masks, skip_empty=True, invalid_boxes=invalid_boxes
        )
        test: DetectionDataset = CocoDetection(d.data_dir, d.test_split, invalid_boxes=invalid_boxes)
        return train, test
    classes = d.classes or VOC_CLASSES
    try:
        train = VOCDetection(
            d.data_dir,
            d.voc_years or ["2007"],
            d.train_split,
            classes=classes,
            skip_empty=True,
            invalid_boxes=invalid_boxes,
        )
        test = VOCDetection(d.data_dir, ("2007",), d.test_split, classes=classes, invalid_boxes=invalid_boxes)
    except ValueError as error:
        if "unknown class" in str(error):  # name the config key, not the reader's argument
            raise ValueError(f"{str(error).split('; pass')[0]}; list the set's classes in data.classes") from None
        raise
    return train, test


def training_target(target: Target, masks: bool) -> Target:
    """What the detector trains on: boxes, labels (and masks) of the objects that are not crowd regions."""
    keep = target["iscrowd"] == 0
    kept = {"boxes": target["boxes"][keep], "labels": target["labels"][keep]}
    if masks:
        kept["masks"] = target["masks"][keep]
    return kept


class DetectionBatches:
    """``batches[indices]``: a batch of a detection dataset as ``(images, targets)`` lists, for :func:`batch_loader`.

    ``train``: targets as :func:`training_target` makes them (the loader's workers do it).

    Example:
        >>> loader = batch_loader(DetectionBatches(CocoDetection(root, "val")), 4, shuffle=False, drop_last=False)
        >>> images, targets = next(iter(loader))  # 4 uint8 (3, H, W) images and their targets
    """

    def __init__(self, dataset: DetectionDataset, train: bool = False) -> None:
        self.dataset = dataset
        self.train = train

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, indices: Tensor) -> tuple[list[Tensor], list[Target]]:
        images, targets = [], []
        for index in indices.tolist():
            image, target = self.dataset[index]
            images.append(image)
            targets.append(training_target(target, self.dataset.masks) if self.train else target)
        return images, targets


def hflip(image: Tensor, target: Target) -> tuple[Tensor, Target]:
    """``image`` mirrored left-right with its boxes and masks (torchvision's v2 kernels)."""
    height, width = image.shape[-2:]
    flipped = dict(target)
    flipped["boxes"] = TF.horizontal_flip_bounding_boxes(
        target["boxes"], format=BoundingBoxFormat.XYXY, canvas_size=(height, width)
    )
    if "masks" in target:
        flipped["masks"] = TF.horizontal_flip_mask(target["masks"])
    return TF.horizontal_flip_image(image), flipped


# ---------------------------------------------------------------------------------------
# the model


class NaiveSyncBatchNorm(nn.BatchNorm2d):
    """BatchNorm with the statistics of the global batch, on any process-group backend (gloo on CPUs too).

    detectron2's ``NaiveSyncBatchNorm``, the norm of MoCo's ``Base-RCNN-C4-BN`` (``NORM: naiveSyncBN``; its
    comment: "SyncBN seems to cause larger variance"); ``nn.SyncBatchNorm`` runs on GPUs only. Each process
    sums ``x`` and ``x**2`` per channel (in fp32 at least) and counts its elements; the sums are gathered
    differentiably (:func:`hallucinator.distributed.gather_with_grad`) and added, and the batch is normalised
    by the global mean and biased variance; the running statistics take the unbiased one, as BatchNorm's do.
    Processes with different numbers of elements (RoIs in the res5 head) weigh by their counts (detectron2's
    ``stats_mode="N"``). Without a process group, or in eval mode, it is ``nn.BatchNorm2d``; the state dict
    is BatchNorm's, so checkpoints load either way.

    Example:
        >>> model = convert_sync_batchnorm(model)  # before DDP wraps it and an optimizer takes its parameters
    """

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or world_size() == 1:
            return super().forward(x)
        channels = x.shape[1]
        exact = x.to(torch.promote_types(x.dtype, torch.float32))
        count = torch.full((1,), x.numel() // channels, dtype=exact.dtype, device=x.device)
        local = torch.cat([exact.sum((0, 2, 3)), exact.square().sum((0, 2, 3)), count])
        total = gather_with_grad(local[None]).sum(0)
        n = total[-1]
        mean = total[:channels] / n
        var = (total[channels : 2 * channels] / n - mean.square()).clamp(min=0)
        if self.track_running_stats and self.running_mean is not None and self.running_var is not None:
            with torch.no_grad():
                tracked = self.num_batches_tracked
                assert tracked is not None  # with track_running_stats
                tracked.add_(1)
                factor = self.momentum if self.momentum is not None else 1.0 / float(tracked)
                self.running_mean.lerp_(mean.to(self.running_mean.dtype), factor)
                unbiased = var * n / (n - 1).clamp(min=1)
                self.running_var.lerp_(unbiased.to(self.running_var.dtype), factor)
        scale = torch.rsqrt(var + self.eps)
        shift = -mean * scale
        if self.affine:
            scale, shift = scale * self.weight, shift * self.weight + self.bias
        return x * scale.to(x.dtype).view(1, -1, 1, 1) + shift.to(x.dtype).view(1, -1, 1, 1)


def convert_sync_batchnorm(module: nn.Module) -> nn.Module:
    """``module`` with every ``BatchNorm2d`` a :class:`NaiveSyncBatchNorm` of the same values (in place below the top)."""
    if type(module) is nn.BatchNorm2d:
        like = next(t for t in (*module.parameters(), *module.buffers()) if t.is_floating_point())
        synced = NaiveSyncBatchNorm(
            module.num_features,
            module.eps,
            module.momentum,
            module.affine,
            module.track_running_stats,
            device=like.device,
            dtype=like.dtype,
        )
        synced.load_state_dict(module.state_dict())
        synced.train(module.training)
        return synced
    for name, child in module.named_children():
        module.add_module(name, convert_sync_batchnorm(child))
    return module


def lr_factor(solver: SolverConfig, step: int) -> float:
    """Multiplier of the peak lr at iteration ``step`` (0-based): detectron2's ``WarmupMultiStepLR``.

    ``gamma ** (number of solver.steps <= step)``, times ``warmup_factor * (1 - a) + a`` with
    ``a = step / warmup_steps`` during the warm-up.

    Example:
        >>> solver = SolverConfig(steps=[18_000, 22_000], warmup_steps=100)
        >>> lr_factor(solver, 0), lr_factor(solver, 100), lr_factor(solver, 18_000)
        (0.001, 1.0, 0.1)
    """
    factor = solver.gamma ** bisect.bisect_right(solver.steps, step)
    if step < solver.warmup_steps:
        alpha = step / solver.warmup_steps
        factor *= solver.warmup_factor * (1 - alpha) + alpha
    return factor


def _is_norm(module: nn.Module) -> bool:
    return isinstance(module, (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm))


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Two SGD groups: normalisation layers' scales and shifts without weight decay, every other parameter with it."""
    norms = {id(p) for module in model.modules() if _is_norm(module) for p in module.parameters(recurse=False)}
    trained = [p for p in model.parameters() if p.requires_grad]
    return [
        {"params": [p for p in trained if id(p) not in norms], "weight_decay": weight_decay},
        {"params": [p for p in trained if id(p) in norms], "weight_decay": 0.0},
    ]


def build_model(config: TransferConfig, num_classes: int) -> tuple[nn.Module, int]:
    """The detector on the checkpoint's backbone, and how many backbone tensors came from the checkpoint.

    ``model.init: random`` builds the same backbone from the checkpoint's config without its weights (0 loaded).
    Images are normalised with the pre-training's mean and std (``hallucinator.data.presets``).
    """
    m, d = config.model, config.data
    pretrained, pretrain_config = load_pretrained(m.checkpoint)
    recipe = presets.recipe(pretrain_config.data.dataset)
    try:
        detector = build_detector(
            build_backbone(pretrain_config),
            num_classes=num_classes,
            task=m.task,  # type: ignore[arg-type]  # checked by validate
            arch=m.arch,  # type: ignore[arg-type]
            min_size=tuple(d.train_sizes),
            max_size=d.max_size,
            image_mean=recipe.mean,
            image_std=recipe.std,
            anchor_sizes=m.anchor_sizes,
            **m.detector,
        )
    except TypeError as error:  # an argument torchvision's FasterRCNN does not take
        raise ConfigError(f"model.detector: {error}") from None
    if m.init == "random":
        return detector, 0
    return detector, load_backbone_weights(detector, pretrained.state_dict(), m.checkpoint)


class TransferModule(pl.LightningModule):
    """Fine-tuning of a detector: batches of ``(uint8 images, targets)`` lists in, torchvision's losses summed out.

    The flip, the shorter side torchvision's transform draws and the RoI sampling are random draws seeded from
    ``(seed, step, rank)``, so a resumed run draws what the uninterrupted one would have drawn.

    Example:
        >>> detector, _ = build_model(config, num_classes=20)
        >>> trainer.fit(TransferModule(config, detector, train_set))
    """

    def __init__(self, config: TransferConfig, detector: nn.Module, train_set: DetectionDataset) -> None:
        super().__init__()
        self.save_hyperparameters({"transfer_config": to_dict(config)})  # type: ignore[arg-type]
        self.config = config
        self.detector = detector
        self.train_set = train_set
        self.diverged: str | None = None  # read by the engine's Checkpointing: nothing is saved after a NaN
        self.train_seconds = 0.0  # summed over the segments of a resumed run
        self._last: float | None = None

    def configure_model(self) -> None:
        if self.trainer.world_size > 1:  # before DDP wraps the model and the optimizer takes the parameters
            convert_sync_batchnorm(self.detector)

    def train_dataloader(self) -> Any:
        return batch_loader(
            DetectionBatches(self.train_set, train=True),
            self.config.solver.batch_size,
            shuffle=True,
            drop_last=True,
            seed=self.config.seed,
            num_workers=self.config.data.num_workers,
            position=lambda: self.trainer.global_step,  # a resumed run continues mid-epoch
        )

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        if self.trainer is None or not self.trainer.training:
            return batch
        seed = step_seed(self.config.seed, self.global_step, self.global_rank)
        torch.manual_seed(seed)  # torchvision draws the image sizes and the sampled anchors and RoIs from it
        images, targets = batch
        flips = torch.rand(len(images), generator=torch.Generator().manual_seed(seed)) < 0.5
        out_images, out_targets = [], []
        for image, target, flip in zip(images, targets, flips.tolist()):
            if flip and self.config.data.flip:
                image, target = hflip(image, target)
            out_images.append(image.float() / 255)
            out_targets.append(target)
        return out_images, out_targets

    def training_step(self, batch: tuple[list[Tensor], list[Target]], batch_idx: int) -> Tensor | None:
        images, targets = batch
        losses = self.detector(images, targets)
        loss = sum(losses.values())
        assert isinstance(loss, Tensor)
        finite = bool(torch.isfinite(loss.detach()).all())
        if not self.trainer.strategy.reduce_boolean_decision(finite, all=True):
            self.diverged = (
                f"the loss became {loss.item()} at step {self.global_step} "
                f"({', '.join(f'{name} {value.item():.4g}' for name, value in losses.items())}); training stopped without "
                "taking this step. Lower solver.base_lr or raise solver.warmup_steps; the last good checkpoint is kept"
            )
            self.trainer.should_stop = True
            return None
        log: dict[str, Any] = dict(on_step=True, on_epoch=False, sync_dist=self.trainer.world_size > 1)
        log["batch_size"] = len(images)
        self.log("train/loss", loss.detach(), prog_bar=True, **log)
        for name, value in losses.items():
            self.log(f"train/{name}", value.detach(), **log)
        self.log("train/lr", self.trainer.optimizers[0].param_groups[0]["lr"], prog_bar=True, **log)
        return loss

    def on_train_start(self) -> None:
        # here, not before fit: a resume that is refused leaves the run's config.yaml as it was
        if self.trainer.is_global_zero:
            Path(self.config.output_dir).mkdir(parents=True, exist_ok=True)
            (Path(self.config.output_dir) / "config.yaml").write_text(dump_config(self.config))  # type: ignore[arg-type]

    def on_train_epoch_start(self) -> None:
        self._last = time.perf_counter()

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        now = time.perf_counter()
        self.train_seconds += now - (self._last or now)
        self._last = now

    def configure_optimizers(self) -> Any:
        s = self.config.solver
        optimizer = torch.optim.SGD(parameter_groups(self.detector, s.weight_decay), lr=s.lr(), momentum=s.momentum)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(s, step))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["train_seconds"] = self.train_seconds

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.train_seconds = float(checkpoint.get("train_seconds", 0.0))


# ---------------------------------------------------------------------------------------
# evaluation

Progress = Callable[[Iterable[Any]], Iterable[Any]]


@torch.inference_mode()
def predict(
    detector: nn.Module,
    dataset: DetectionDataset,
    *,
    test_size: int,
    batch_size: int = 1,
    num_workers: int = 0,
    device: torch.device | str = "cpu",
    progress: Progress | None = None,
) -> Iterator[dict[str, Any]]:
    """The detector's output for each image of ``dataset`` in order, on the CPU, with its ``image_id``.

    A generator: an image's masks (``(K, 1, H, W)`` probabilities) are gone once the caller moved on.
    """
    detector.eval().to(device)
    transform: Any = detector.transform  # torchvision's GeneralizedRCNNTransform
    train_sizes = transform.min_size
    transform.min_size = (test_size,)  # torchvision's transform tests at its last size
    loader = batch_loader(
        DetectionBatches(dataset),
        batch_size,
        shuffle=False,
        drop_last=False,
        rank=0,
        world_size=1,
        num_workers=num_workers,
    )
    try:
        for images, targets in progress(loader) if progress else loader:
            outputs = detector([image.to(device).float() / 255 for image in images])
            for output, target in zip(outputs, targets):
                yield {"image_id": target["image_id"], **{key: value.cpu() for key, value in output.items()}}
    finally:
        transform.min_size = train_sizes


def _boxes_kept(predictions: Iterable[dict[str, Any]], kept: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """``predictions`` passed on, their boxes, scores and labels appended to ``kept`` (for a second evaluation)."""
    for prediction in predictions:
        kept.append({key: prediction[key] for key in ("image_id", "boxes", "scores", "labels")})
        yield prediction


def voc_as_coco(dataset: VOCDetection) -> tuple[dict[str, Any], dict[int | str, int]]:
    """A VOC split as COCO's ground truth, and the COCO image id of each VOC id.

    ``difficult`` objects become crowd regions: COCO's evaluation then neither counts nor penalises them,
    as VOC's does not (``pycocotools`` reads its ``ignore`` flag from ``iscrowd``).
    """
    ids = {record.image_id: i + 1 for i, record in enumerate(dataset.records)}
    images = [{"id": ids[r.image_id], "width": r.width, "height": r.height} for r in dataset.records]
    annotations: list[dict[str, Any]] = []
    for record in dataset.records:
        for box, label, difficult in zip(record.boxes, record.labels, record.difficult):
            x1, y1, x2, y2 = box
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": ids[record.image_id],
                    "category_id": label,
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "area": (x2 - x1) * (y2 - y1),
                    "iscrowd": int(difficult),
                }
            )
    categories = [{"id": i + 1, "name": name} for i, name in enumerate(dataset.classes)]
    return {"images": images, "annotations": annotations, "categories": categories}, ids


def evaluate(
    detector: nn.Module,
    test_set: DetectionDataset,
    task: str,
    *,
    test_size: int,
    batch_size: int = 1,
    num_workers: int = 0,
    device: torch.device | str = "cpu",
    progress: Progress | None = None,
) -> dict[str, float]:
    """The detector's AP on ``test_set`` in percent.

    ``bbox_AP``, ``bbox_AP50``, ``bbox_AP75`` (COCO's, IoU 0.50:0.95, by :func:`coco_metrics`); for
    ``instance-segmentation`` also ``segm_AP``, ``segm_AP50``, ``segm_AP75``; for a VOC split also
    ``voc_AP``, ``voc_AP50``, ``voc_AP75`` (detectron2's VOC evaluation: VOC AP averaged over IoU 0.50:0.95,
    with the VOC07 11-point metric at every IoU, as detectron2 evaluates VOC2007 test) and ``voc07_AP50``
    (the paper's VOC number, which is ``voc_AP50``).
    """
    predictions: Iterable[dict[str, Any]] = predict(
        detector,
        test_set,
        test_size=test_size,
        batch_size=batch_size,
        num_workers=num_workers,
        device=device,
        progress=progress,
    )
    figures: dict[str, float] = {}
    if isinstance(test_set, VOCDetection):
        boxes = list(predictions)
        ground_truth, ids = voc_as_coco(test_set)
        coco = coco_metrics([{**p, "image_id": ids[p["image_id"]]} for p in boxes], ground_truth, "bbox")
        voc = voc_metrics(boxes, test_set.targets(), use_07_metric=True)
        figures.update({f"voc_{name}": value for name, value in voc.items()}, voc07_AP50=voc["AP50"])
    else:
        assert isinstance(test_set, CocoDetection)
        kept: list[dict[str, Any]] = []
        if task == "instance-segmentation":
            # the masks are encoded image by image as the predictions stream in: COCO's val2017 at full size
            # would not fit in memory; the boxes are kept for the box AP that follows
            segm = coco_metrics(_boxes_kept(predictions, kept), test_set, "segm")
            figures.update({f"segm_{name}": segm[name] for name in ("AP", "AP50", "AP75")})
        else:
            kept = list(predictions)
        coco = coco_metrics(kept, test_set, "bbox")
    figures.update({f"bbox_{name}": coco[name] for name in ("AP", "AP50", "AP75")})
    return figures


# ---------------------------------------------------------------------------------------
# the run


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
    ckpt_path = _checkpoint_to_resume(checkpoints.last) if resume else None
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
