"""The LightningModule around an ``SSLMethod``: on-device augmentation, schedules, logging, NaN guard."""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities import rank_zero_warn

from hallucinator import backbones, methods
from hallucinator.engine.checkpoint import build_backbone
from hallucinator.engine.config import Config, ConfigError, LocalCropsConfig, from_dict, to_dict
from hallucinator.engine.online_linear import OnlineLinear
from hallucinator.engine.optim import build_optimizer, lr_lambdas, set_weight_decay, warmup_weight, weight_decay_at
from hallucinator.hallucinator import Hallucinator
from hallucinator.methods.base import SSLMethod

if TYPE_CHECKING:
    from hallucinator.data.augment import TwoViews
    from hallucinator.data.multicrop import MultiCrop

# Odd 64-bit constants to spread (seed, step, rank) over the seed space.
_STEP_MIX, _RANK_MIX = 0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9


def step_seed(seed: int, step: int, rank: int | None = None) -> int:
    """A seed that is a pure function of (seed, step[, rank]): a resumed run draws what it would have drawn."""
    value = seed * _STEP_MIX + (step + 1)
    if rank is not None:
        value = value * _RANK_MIX + rank + 1
    return value % (2**63 - 1)


def seed_model_randomness(seed: int, step: int, rank: int, shared: torch.Generator) -> None:
    """Seeds the model's random draws of one step, a pure function of ``(seed, step, rank)``.

    ``shared`` (the Hallucinator's ``batch_generator``) is seeded alike on every process: one ``lam`` per
    global batch. Torch's global generators get a stream of the process's own, for what must differ across
    processes: per-sample ``lam``, dropout and drop-path masks. Rank 0's stream is the single-process one,
    so a 1-process run draws what it drew before ranks had streams of their own.
    """
    shared.manual_seed(step_seed(seed, step))
    torch.manual_seed(step_seed(seed, step, rank) if rank else step_seed(seed, step))


def build_method(config: Config) -> SSLMethod:
    """The backbone, method and Hallucinator described by ``config``."""
    model = config.model
    if "hallucination_weight" in model.hparams:
        raise ConfigError("model.hparams.hallucination_weight: set hallucinator.weight instead")
    backbone = build_backbone(config)
    h = config.hallucinator
    # the method calls it with the feature size it hallucinates: the configured Hallucinator is the only one built
    configured = (
        partial(
            Hallucinator,
            num_layers=h.num_layers,
            extrapolation=h.extrapolation,
            per_sample=h.per_sample,
            extrapolation_mode=h.extrapolation_mode,
            train_mode=h.train_mode,
            adversarial_strength=h.adversarial_strength,
            guard_weight=h.guard_weight,
            guard_margin=h.guard_margin,
        )
        if h.enabled
        else False
    )
    try:
        return methods.build(
            model.method,
            backbone,
            hallucinator=configured,
            loss_form=h.loss_form if h.enabled else "average",
            hallucination_weight=h.weight,
            **model.hparams,
        )
    except (TypeError, ValueError) as error:
        raise ConfigError(f"model.hparams: {error}") from error


def preset_name(config: Config) -> str:
    """``data.preset``, else ``<dataset>-<the method's augmentation style>`` (e.g. ``cifar10-simclr`` for BYOL)."""
    return config.data.preset or f"{config.data.dataset}-{methods.METHODS[config.model.method].augmentation}"


def build_augmentation(
    config: Config, plain_crops: bool = False, global_only: bool = False
) -> TwoViews | MultiCrop | None:
    """The views of ``config.data``: the preset's two, or ``data.global_crops`` + ``data.local_crops``
    (a :class:`~hallucinator.data.multicrop.MultiCrop`); ``None`` for preset ``none`` (both views = the image).

    Without the Hallucinator, no view uses the center-suppressed crop unless
    ``data.augment.center_crop_views`` says so: the plain method is the paper's baseline.
    ``plain_crops``: no view uses it (``data.center_crop_warmup_epochs``). ``global_only``: without the local
    crops (the two views that ``hallucinator metrics`` compares).
    """
    data = config.data
    if data.preset == "none":
        return None
    from hallucinator.data import multicrop, presets

    name = preset_name(config)
    overrides = dict(data.augment)
    if plain_crops:
        overrides["center_crop_views"] = ()
    elif not config.hallucinator.enabled:
        overrides.setdefault("center_crop_views", ())
    try:
        if not data.multi_crop:
            return presets.build(name, data.training_crop_size, **overrides)
        g, local = data.global_crops, data.local_crops
        centre = tuple(overrides.pop("center_crop_views", (1,)))
        if global_only:
            local, centre = LocalCropsConfig(), tuple(v for v in centre if v <= g.number)
        return multicrop.build(
            name,
            multicrop.CropSpec(g.number, g.size or data.training_crop_size, g.scale),
            multicrop.CropSpec(local.number, local.size, local.scale),
            centre,
            **overrides,
        )
    except (TypeError, ValueError) as error:
        raise ConfigError(f"data.preset / data.augment ({name}): {error}") from error


class PretrainModule(pl.LightningModule):
    """Self-supervised pre-training of one method: batches of uint8 images (and labels) in, the method's loss out.

    With ``num_classes`` >= 2 (a labelled dataset) and ``trainer.online_linear``, an
    :class:`OnlineLinear` probe is trained on the detached view-1 features the method returns.

    The two views are made on the device after the batch is transferred, with a generator
    seeded from ``(seed, step, rank)``; the model's own randomness by :func:`seed_model_randomness`
    (the one ``lam`` per batch shared by all processes; per-sample ``lam``, MoCo's shuffle, dropout and
    drop-path per process). A resumed run therefore draws exactly what the uninterrupted run would have drawn.

    Example:
        >>> module = PretrainModule(load_config("configs/quickstart.yaml"), steps_per_epoch=97, num_classes=10)
        >>> trainer = pl.Trainer(max_epochs=1)
        >>> trainer.fit(module, datamodule)
    """

    online_linear: OnlineLinear | None  # set with object.__setattr__ (see __init__)

    def __init__(self, config: Config | dict[str, Any], steps_per_epoch: int, num_classes: int = 0) -> None:
        super().__init__()
        config = from_dict(config) if isinstance(config, dict) else config
        self.save_hyperparameters(
            {"config": to_dict(config), "steps_per_epoch": steps_per_epoch, "num_classes": num_classes}
        )
        self.config = config
        self.steps_per_epoch = steps_per_epoch
        self.method = build_method(config)
        self.augment = build_augmentation(config)
        warmup = config.data.center_crop_warmup_epochs
        self.warmup_augment = build_augmentation(config, plain_crops=True) if warmup else None
        if self.augment is None:
            from hallucinator.data import eval_transform

            self._plain = eval_transform(config.data.dataset, config.data.training_crop_size)
        self.channels_last = config.trainer.channels_last and backbones.channels_last_safe(self.method)
        if config.trainer.channels_last and not self.channels_last:
            rank_zero_warn(
                "trainer.channels_last: this network has a strided 1x1 conv with fewer than 16 input channels, "
                "whose channels-last weight gradient oneDNN computes wrongly; training in the contiguous format "
                "(set model.width >= 16 to use channels_last)"
            )
        if self.channels_last:
            self.method.to(memory_format=torch.channels_last)
        self.diverged: str | None = None
        self._generator: torch.Generator | None = None
        self._shared_generator = torch.Generator()
        for module in self.method.modules():
            if isinstance(module, Hallucinator):
                module.batch_generator = self._shared_generator
        probe = None
        if config.trainer.online_linear and num_classes >= 2:
            probe = OnlineLinear(self.method.num_features, num_classes, lr=config.trainer.online_linear_lr)
        # outside the module tree on purpose: DDP must not manage it, and the state dict stays the method's
        object.__setattr__(self, "online_linear", probe)

    @property
    def total_steps(self) -> int:
        t = self.config.trainer
        return t.max_steps if t.max_steps > 0 else t.max_epochs * self.steps_per_epoch

    def configure_model(self) -> None:
        if self.config.trainer.compile:
            # in place: the module tree and the checkpoint keys stay those of the plain backbone, so a
            # run can be resumed (and its backbone loaded) with or without compilation
            self.method.backbone.compile()

    # ---- data on the device

    def _views(self, images: torch.Tensor) -> list[torch.Tensor]:
        """The views of the batch (two, or the global then the local crops of a multi-crop)."""
        step = self.global_step
        if self._generator is None or self._generator.device != images.device:
            self._generator = torch.Generator(device=images.device)
        self._generator.manual_seed(step_seed(self.config.seed, step, self.global_rank))
        with torch.no_grad():
            if self.augment is None:
                view = self._plain(images)
                views = [view, view.clone()]
            else:
                warmup = self.current_epoch < self.config.data.center_crop_warmup_epochs
                augment = self.warmup_augment if warmup and self.warmup_augment is not None else self.augment
                views = list(augment(images, generator=self._generator))
        if self.channels_last:
            views = [view.contiguous(memory_format=torch.channels_last) for view in views]
        return views

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        if self.trainer is None or not self.trainer.training:
            return batch
        seed_model_randomness(self.config.seed, self.global_step, self.global_rank, self._shared_generator)
        images, labels = batch
        return (*self._views(images), labels)

    # ---- optimisation

    def training_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> torch.Tensor | None:
        step = self.global_step
        weight = warmup_weight(self.config, step, self.steps_per_epoch, self.total_steps)
        self.method.hallucination_weight = weight
        self.method.progress = step / max(1, self.total_steps)  # BYOL's / MoCo v3's momentum schedule
        *views, labels = batch  # view 1, view 2[, local crops]
        out = self.method(*views)
        loss = out["loss"]
        finite = bool(torch.isfinite(loss.detach()).all())
        if not self.trainer.strategy.reduce_boolean_decision(finite, all=True):
            self.diverged = (
                f"the loss became {loss.item()} at step {step} (epoch {self.current_epoch}); training stopped "
                "without taking this step. Lower optimizer.base_lr, add optimizer.warmup_epochs, or use "
                "trainer.precision=32-true; the last good checkpoint is kept"
            )
            self.trainer.should_stop = True
            return None
        sync = self.trainer.world_size > 1
        log: dict[str, Any] = dict(on_step=True, on_epoch=False, sync_dist=sync, batch_size=views[0].shape[0])
        self.log("train/loss", loss.detach(), prog_bar=True, **log)
        self.log("train/pos_similarity", out["pos_similarity"], prog_bar=True, **log)
        self.log("train/loss_original", out["loss_original"].detach(), **log)
        if "loss_hallucinated" in out:
            self.log("train/loss_hallucinated", out["loss_hallucinated"].detach(), **log)
            self.log("train/hallucination_weight", weight, **log)
            self.log("train/hal_similarity", out["hal_similarity"], **log)
            self.log("train/extrap_similarity", out["extrap_similarity"], **log)
            if "guard_penalty" in out:
                self.log("train/guard_penalty", out["guard_penalty"].detach(), **log)
        for key in ("teacher_entropy", "teacher_student_kl"):  # DINO's collapse monitors
            if key in out:
                self.log(f"train/{key}", out[key].detach(), **log)
        self.log("train/lr", self.trainer.optimizers[0].param_groups[0]["lr"], prog_bar=True, **log)
        if self.config.optimizer.final_weight_decay is not None:  # DINO's schedule, for the step about to be taken
            weight_decay = weight_decay_at(self.config, step, self.total_steps)
            set_weight_decay(self.trainer.optimizers[0], weight_decay)
            self.log("train/weight_decay", weight_decay, **log)
        if self.online_linear is not None and "features" in out:
            probe_loss, top1 = self.online_linear.step(out["features"], labels)
            self.log("train/online_linear_top1", top1, **log)
            self.log("train/online_linear_loss", probe_loss, **log)
        return loss

    def on_train_epoch_start(self) -> None:
        if self.online_linear is not None:
            self.online_linear.reset_epoch()

    def configure_optimizers(self) -> Any:
        optimizer = build_optimizer(self.config, self.method)
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lr_lambdas(self.config, optimizer, self.steps_per_epoch, self.total_steps)
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def configure_gradient_clipping(
        self, optimizer: torch.optim.Optimizer, gradient_clip_val: Any = None, gradient_clip_algorithm: Any = None
    ) -> None:
        """``optimizer.grad_clip``: the gradients' total norm clipped (after AMP unscaling) before the step."""
        if self.config.optimizer.grad_clip > 0:
            self.clip_gradients(
                optimizer, gradient_clip_val=self.config.optimizer.grad_clip, gradient_clip_algorithm="norm"
            )

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["method"] = self.config.model.method
        if self.online_linear is not None:
            checkpoint["online_linear"] = self.online_linear.state()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if checkpoint.get("method", self.config.model.method) != self.config.model.method:
            raise ConfigError(
                f"model.method: the checkpoint was trained with {checkpoint['method']!r}, "
                f"this config says {self.config.model.method!r}"
            )
        if self.online_linear is not None and "online_linear" in checkpoint:  # absent in runs from before the probe
            self.online_linear.load_state(checkpoint["online_linear"])
