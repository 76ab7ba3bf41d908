"""The LightningModule around an ``SSLMethod``: on-device augmentation, schedules, logging, NaN guard."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities import rank_zero_warn

from hallucinator import backbones, methods
from hallucinator.engine.checkpoint import build_backbone
from hallucinator.engine.config import Config, ConfigError, LocalCropsConfig, from_dict, to_dict
from hallucinator.engine.online_linear import OnlineLinear
from hallucinator.engine.optim import build_optimizer, set_lr, set_weight_decay
from hallucinator.engine.schedules import Schedules, StepValues
from hallucinator.hallucinator import Hallucinator
from hallucinator.methods import DINO
from hallucinator.methods.base import SSLMethod
from hallucinator.methods.memory import MomentumTarget

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
    try:
        return methods.build(
            model.method,
            backbone,
            # the method calls it with the feature size it hallucinates: the configured Hallucinator is the only one built
            hallucinator=h.build if h.enabled else False,
            loss_form=h.loss_form if h.enabled else "average",
            hallucination_weight=h.weight,
            **model.hparams,
        )
    except (TypeError, ValueError) as error:
        raise ConfigError(f"model.hparams: {error}") from error


def compile_in_place(config: Config, method: SSLMethod) -> None:
    """``trainer.compile``: ``torch.compile`` (inductor) of ``trainer.compile_scope``, the backbone or the whole method.

    In place (``nn.Module.compile``): the module tree and the checkpoint keys stay the plain ones, so a run can be
    resumed (and its backbone loaded) with or without compilation. ``max-autotune`` is inductor's mode of that
    name (it times kernel choices while compiling). Compiling the method puts its random draws (the
    Hallucinator's, MoCo's shuffle) on eager's generators (``fallback_random``), so it draws what an eager run does.

    Example:
        >>> compile_in_place(load_config(None, ["--trainer.compile=max-autotune"]), method)  # compiles method.backbone
    """
    t = config.trainer
    if not t.compile:
        return
    import torch._inductor

    options = dict(torch._inductor.list_mode_options("max-autotune" if t.compile == "max-autotune" else "default"))
    if t.compile_scope == "method":
        options["fallback_random"] = True
    (method if t.compile_scope == "method" else method.backbone).compile(options=options or None)


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
        # every per-step value (lr, weight decay, loss weight, EMA momentum, DINO's teacher temperature)
        self.schedules = Schedules(config, self.method, steps_per_epoch, self.total_steps)
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
        compile_in_place(self.config, self.method)

    # ---- one training step

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor | None:
        """One optimisation step, top to bottom, up to the loss; Lightning then back-propagates it, clips the
        gradients (:meth:`configure_gradient_clipping`) and takes the optimiser step."""
        step = self.global_step
        images, labels = batch  # uint8, on the device
        # 1. the model's random draws of this step (lam, MoCo's shuffle, dropout): a pure function of the step
        seed_model_randomness(self.config.seed, step, self.global_rank, self._shared_generator)
        # 2. the views, made on the device from their own generator
        views = self._views(images)
        # 3. this step's schedules, written where they act: the optimiser's groups and the method
        values = self.schedules.at(step)
        optimizer = self.trainer.optimizers[0]
        set_lr(optimizer, self.config.lr(), values.lr_factor)
        if values.weight_decay is not None:  # DINO's cosine; otherwise the optimiser keeps its constant decay
            set_weight_decay(optimizer, values.weight_decay)
        self.method.hallucination_weight = values.hallucination_weight
        if isinstance(self.method, DINO) and values.teacher_temperature is not None:
            self.method.teacher_temp = values.teacher_temperature
        # 4. the momentum target follows the online weights the previous optimiser step left (before the
        #    forward, as MoCo's code does: the last step's weights never reach the target, as in all our runs)
        if isinstance(self.method, MomentumTarget) and values.momentum is not None:
            self.method.update_target(values.momentum)
        # 5. forward: the method's losses and monitors
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
        log: dict[str, Any] = dict(
            on_step=True, on_epoch=False, sync_dist=self.trainer.world_size > 1, batch_size=views[0].shape[0]
        )
        self._log_step(out, values, log)
        # 6. the online probe: detached features and an optimiser of its own, so it may step before the
        #    method's optimiser does (it changes neither the method's gradients nor any random stream)
        if self.online_linear is not None and "features" in out:
            probe_loss, top1 = self.online_linear.step(out["features"], labels)
            self.log("train/online_linear_top1", top1, **log)
            self.log("train/online_linear_loss", probe_loss, **log)
        return loss

    def _views(self, images: torch.Tensor) -> list[torch.Tensor]:
        """The views of the batch (two, or the global then the local crops of a multi-crop)."""
        step = self.global_step
        if self._generator is None or self._generator.device != images.device:
            self._generator = torch.Generator(device=images.device)
        self._generator.manual_seed(step_seed(self.config.seed, step, self.global_rank))
        # in full precision: the training step runs under the precision's autocast, the augmentation must not
        with torch.no_grad(), torch.autocast(images.device.type, enabled=False):
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

    def _log_step(self, out: dict[str, torch.Tensor], values: StepValues, log: dict[str, Any]) -> None:
        self.log("train/loss", out["loss"].detach(), prog_bar=True, **log)
        self.log("train/pos_similarity", out["pos_similarity"], prog_bar=True, **log)
        self.log("train/loss_original", out["loss_original"].detach(), **log)
        if "loss_hallucinated" in out:
            self.log("train/loss_hallucinated", out["loss_hallucinated"].detach(), **log)
            self.log("train/hallucination_weight", values.hallucination_weight, **log)
            self.log("train/hal_similarity", out["hal_similarity"], **log)
            self.log("train/extrap_similarity", out["extrap_similarity"], **log)
            if "guard_penalty" in out:
                self.log("train/guard_penalty", out["guard_penalty"].detach(), **log)
        for key in ("teacher_entropy", "teacher_student_kl"):  # DINO's collapse monitors
            if key in out:
                self.log(f"train/{key}", out[key].detach(), **log)
        self.log("train/lr", self.trainer.optimizers[0].param_groups[0]["lr"], prog_bar=True, **log)
        if values.weight_decay is not None:
            self.log("train/weight_decay", values.weight_decay, **log)

    def on_train_epoch_start(self) -> None:
        if self.online_linear is not None:
            self.online_linear.reset_epoch()

    def configure_optimizers(self) -> Any:
        # no lr scheduler: the training step sets each step's lr from ``schedules``
        return build_optimizer(self.config, self.method)

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
        if self.online_linear is not None and "online_linear" in checkpoint:  # absent when the run began without it
            self.online_linear.load_state(checkpoint["online_linear"])
