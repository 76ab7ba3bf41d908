"""The fine-tuning step: the detector on the checkpoint's backbone, its optimizer and schedule, in a LightningModule.

MoCo's detectron2 protocol (the paper's Table 7) on torchvision's detectors (:mod:`hallucinator.transfer.models`):
SGD with momentum 0.9 and weight decay 1e-4 (none on normalisation layers, detectron2's ``WEIGHT_DECAY_NORM: 0``),
the lr ``base_lr * batch_size / 16`` (MoCo's recipes are written for 16 images), a linear warm-up then steps
at given iterations (detectron2's ``WarmupMultiStepLR``), every layer trained, BatchNorm included, and
synchronised over processes under DDP (:mod:`hallucinator.transfer.sync_batchnorm`).

Example:
    >>> detector, loaded = build_model(config, num_classes=20)
    >>> trainer.fit(TransferModule(config, detector, train_set))
"""

from __future__ import annotations

import bisect
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from torch import Tensor, nn

from hallucinator.data import batch_loader, presets
from hallucinator.engine.checkpoint import build_backbone, load_pretrained
from hallucinator.engine.config import ConfigError, dump_config, to_dict
from hallucinator.engine.module import step_seed
from hallucinator.transfer.config import SolverConfig, TransferConfig
from hallucinator.transfer.data import DetectionBatches, hflip
from hallucinator.transfer.datasets import DetectionDataset, Target
from hallucinator.transfer.models import build_detector, load_backbone_weights
from hallucinator.transfer.sync_batchnorm import convert_sync_batchnorm

__all__ = ["TransferModule", "build_model", "lr_factor", "parameter_groups"]


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
