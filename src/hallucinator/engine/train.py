"""``pretrain(config)``: one run of self-supervised pre-training into a run directory.

Run directory (``config.output_dir``)::

    config.yaml                 the resolved config
    csv/version_N/metrics.csv   per-step metrics (loss, lr, images/s, pos_similarity, ...); N counts (re)starts
    tensorboard/                the same metrics for TensorBoard
    wandb/, mlflow.db           the same for W&B and MLflow, when ``trainer.loggers`` names them (engine.loggers)
    checkpoints/last.ckpt       refreshed every epoch, on SIGINT/SIGTERM and at the end
    checkpoints/epoch=NNNN.ckpt every ``trainer.checkpoint_every_n_epochs`` epochs
"""

from __future__ import annotations

import logging
import os
import re
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import lightning.pytorch as pl
import torch
from lightning.pytorch.loggers import Logger
from lightning.pytorch.utilities import rank_zero_info
from torch import nn

from hallucinator.engine.callbacks import Checkpointing, Throughput
from hallucinator.engine.config import Config, ConfigError, dump_config
from hallucinator.engine.datamodule import PretrainDataModule
from hallucinator.engine.loggers import build_loggers, check_logger_packages
from hallucinator.engine.module import PretrainModule, preset_name
from hallucinator.engine.online_linear import OnlineLinear


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the message says at which step and what to try."""


@dataclass
class PretrainResult:
    """What a run produced. ``interrupted`` names the signal that stopped it early (else ``None``)."""

    config: Config
    output_dir: Path
    checkpoint: Path
    global_step: int
    epoch: int
    steps_per_epoch: int
    interrupted: str | None
    train_seconds: float
    images_per_second: float
    backbone: nn.Module
    global_rank: int = 0
    metrics: dict[str, float] = field(default_factory=dict)
    online_linear: OnlineLinear | None = None
    """The online linear probe (``None`` when off or the dataset has no labels)."""
    loggers: list[Logger] = field(default_factory=list)
    """The run's loggers, left open: ``engine.loggers.log_final`` adds the final evaluation and closes them."""


class _SaveConfig(pl.Callback):
    """Writes the resolved config to ``RUN/config.yaml`` when training starts.

    Not before: a resume first restores the checkpoint, and one refused (another method or
    network shape) must leave the run's own config.yaml as it was.
    """

    def __init__(self, config: Config, output_dir: Path) -> None:
        self.config, self.output_dir = config, output_dir

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.is_global_zero:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            (self.output_dir / "config.yaml").write_text(dump_config(self.config))


def _state_dict_mismatch(message: str, shown: int = 3) -> str:
    """PyTorch's load_state_dict error cut to counts and the first ``shown`` keys of each kind."""
    parts, size_mismatches = [], []
    for line in message.splitlines()[1:]:  # the first line names the module
        kind, _, rest = line.strip().partition(": ")
        names = re.findall(r'"([^"]+)"', rest)
        if names:
            more = f", ... ({len(names) - shown} more)" if len(names) > shown else ""
            parts.append(f"{kind} ({len(names)}): {', '.join(names[:shown])}{more}")
        elif kind.startswith("size mismatch"):
            size_mismatches.append(line.strip())
    if size_mismatches:
        parts.append(f"{len(size_mismatches)} size mismatches, the first: {size_mismatches[0]}")
    return "; ".join(parts)


def check_accelerator(config: Config) -> None:
    """A GPU that was asked for must be visible (Lightning would fail with a bare traceback)."""
    accelerator = config.trainer.accelerator
    gpu_visible = torch.cuda.is_available() or (accelerator == "gpu" and torch.backends.mps.is_available())
    if accelerator in ("gpu", "cuda") and not gpu_visible:
        built = f"built with CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
        raise ConfigError(
            f"trainer.accelerator: {accelerator}, but torch sees no GPU (torch {torch.__version__}, {built}); "
            "use --device cpu (or auto), or install a CUDA build of torch and check CUDA_VISIBLE_DEVICES"
        )
    if accelerator == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("trainer.accelerator: mps, but this machine has no Apple GPU; use --device cpu (or auto)")


ONEDNN_ISAS_WITHOUT_BF16 = ("SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE", "AVX512_CORE_VNNI")
"""Values of ``$ONEDNN_MAX_CPU_ISA`` that keep oneDNN's convolutions and matmuls off the bf16 instructions."""


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX-512 BF16 or AMX), where bf16 autocast pays off.

    On AVX2 CPUs bf16 is emulated and a training step is ~15x slower (docs/training.md). The same holds on a
    bf16 CPU whose oneDNN is capped below its bf16 instructions (``ONEDNN_MAX_CPU_ISA=AVX2``, how one times
    an AVX2 machine on a newer one): the CPU flags alone would pick bf16 there, and a step 20x slower.
    """
    capped = (os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA") or "").upper()
    if capped in ONEDNN_ISAS_WITHOUT_BF16:
        return False
    return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


FORCE_PRECISION_VARIABLE = "HALLUCINATOR_FORCE_PRECISION"
"""``32-true`` or ``bf16-mixed``: what ``precision: auto`` resolves to, whatever the machine (tests/conftest.py)."""


def resolve_precision(config: Config) -> tuple[str, str]:
    """The precision to train in and why: ``auto`` is bf16 autocast on a bf16 GPU or a CPU with native bf16
    (or what ``$HALLUCINATOR_FORCE_PRECISION`` says, a test mode).

    Returns ``(precision, reason)``; the reason is a short sentence for the run's log.
    """
    precision = config.trainer.precision
    accelerator = config.trainer.accelerator
    gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
    on_cpu = accelerator == "cpu" or (accelerator == "auto" and not gpu and not torch.backends.mps.is_available())
    if precision == "16-mixed" and on_cpu:
        # Lightning would quietly train in bf16 instead, and the run's config would say fp16
        raise ConfigError(
            "trainer.precision: 16-mixed (fp16 autocast) needs a GPU; on the CPU use bf16-mixed or 32-true"
        )
    if precision != "auto":
        return precision, f"trainer.precision: {precision} (set in the config)"
    forced = os.environ.get(FORCE_PRECISION_VARIABLE)
    if forced:
        # a test mode: an AVX2 machine runs what `auto` picks on an AMX one (and the other way round)
        if forced not in ("32-true", "bf16-mixed"):
            raise ConfigError(f"${FORCE_PRECISION_VARIABLE}: {forced!r} is not one of ['32-true', 'bf16-mixed']")
        return forced, f"trainer.precision auto: {forced}, forced by ${FORCE_PRECISION_VARIABLE}"
    if gpu and torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return "bf16-mixed", f"trainer.precision auto: bf16-mixed, the GPU ({torch.cuda.get_device_name()}) has bf16"
    if on_cpu:
        capability = torch.backends.cpu.get_cpu_capability()
        if cpu_has_native_bf16():
            return (
                "bf16-mixed",
                f"trainer.precision auto: bf16-mixed, this CPU ({capability}) has native bf16 (AVX-512 BF16 / AMX)",
            )
        return "32-true", (
            f"trainer.precision auto: 32-true, this CPU ({capability}) has no native bf16 (AVX-512 BF16 / AMX) "
            "or oneDNN is capped below it ($ONEDNN_MAX_CPU_ISA), where bf16 is ~15x slower"
        )
    return "32-true", "trainer.precision auto: 32-true, this device has no bf16 support"


def default_image_size(config: Config, dataset: object) -> int:
    """In-memory datasets train at their stored size, a streamed folder of one's own images at the size
    chosen for it; other streamed ones (ImageNet) at the preset's (224)."""
    from hallucinator.data import FileImageDataset, presets

    images = getattr(dataset, "images", None)
    if isinstance(images, torch.Tensor):
        return int(images.shape[-1])
    if isinstance(dataset, FileImageDataset) and dataset.report is not None:  # streamed by hallucinator.data.folder
        return dataset.image_size[0]

    return presets.recipe(preset_name(config)).image_size


def resolved(config: Config, precision: str, dataset: object) -> Config:
    """A copy of ``config`` with what this run settles: the precision to train in and ``data.image_size``."""
    image_size = config.data.image_size or default_image_size(config, dataset)
    return replace(
        config,
        trainer=replace(config.trainer, precision=precision),
        data=replace(config.data, image_size=image_size),
    )


def label_classes(dataset: object) -> int:
    """Number of classes of a dataset with at least one label (>= 0), else 0: when the online probe can train."""
    labels, classes = getattr(dataset, "labels", None), getattr(dataset, "classes", None) or []
    if not isinstance(labels, torch.Tensor) or len(classes) < 2 or not bool((labels >= 0).any()):
        return 0
    return len(classes)


def build_trainer(config: Config, callbacks: Sequence[pl.Callback], output_dir: Path) -> pl.Trainer:
    t = config.trainer
    return pl.Trainer(
        accelerator="gpu" if t.accelerator == "cuda" else t.accelerator,
        devices=t.devices,
        strategy=t.strategy,
        num_nodes=t.num_nodes,
        precision=t.precision,  # type: ignore[arg-type]  # a str checked against config.PRECISIONS
        sync_batchnorm=t.sync_batchnorm,
        max_epochs=t.max_epochs if t.max_steps <= 0 else -1,
        max_steps=t.max_steps,
        logger=build_loggers(config, output_dir),
        callbacks=list(callbacks),
        log_every_n_steps=t.log_every_n_steps,
        enable_progress_bar=t.progress_bar,
        enable_checkpointing=True,  # with our Checkpointing in the list, Lightning adds no ModelCheckpoint
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        use_distributed_sampler=False,  # StepBatches slices the global batch per process
        default_root_dir=output_dir,
    )


# Lightning's rank-zero messages go through these loggers (fabric's and pytorch's rank_zero modules).
_LIGHTNING_INFO_LOGGERS = ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero")


def _not_a_tip(record: logging.LogRecord) -> bool:
    """Drops Lightning's advertising ("💡 Tip: ... try installing litlogger"); keeps every other message."""
    return not record.getMessage().startswith("💡 Tip")


@contextmanager
def quiet_lightning() -> Iterator[None]:
    """Silences Lightning's noise around building the trainer and fitting; what a user needs stays.

    Kept: the device summary, our own warnings and every error. Dropped: the advertising tips and
    warnings that are about Lightning's internals or our deliberate choices, each said below.
    """
    loggers = [logging.getLogger(name) for name in _LIGHTNING_INFO_LOGGERS]
    for logger in loggers:
        logger.addFilter(_not_a_tip)
    try:
        with warnings.catch_warnings():
            # our logging directories are fixed so that a resumed run appends to the same files
            warnings.filterwarnings("ignore", message=".*exists and is not empty.*")
            warnings.filterwarnings("ignore", message=".*does not have many workers.*")
            # the augmentation lives in the module on purpose (it runs on the device after transfer)
            warnings.filterwarnings("ignore", message=".*overridden `on_after_batch_transfer`.*")
            # StepBatches resumes mid-epoch by itself, at trainer.global_step (tests/engine/test_train.py)
            warnings.filterwarnings("ignore", message=".*your dataloader is not resumable.*")
            # Lightning's own use of a torch API that torch deprecated: nothing a user can act on
            warnings.filterwarnings("ignore", message=".*isinstance\\(treespec, LeafSpec\\)` is deprecated.*")
            yield
    finally:
        for logger in loggers:
            logger.removeFilter(_not_a_tip)


def checkpoint_to_resume(last: Path) -> str:
    """``last`` as Lightning's ``ckpt_path`` for ``--resume``; a missing file is a one-line error saying what to do.

    Example:
        >>> trainer.fit(module, ckpt_path=checkpoint_to_resume(output_dir / "checkpoints" / "last.ckpt"))
    """
    if not last.is_file():
        raise FileNotFoundError(
            f"--resume: no checkpoint at {last}; start the run without --resume or point --output-dir at the run "
            "to continue"
        )
    return str(last)


def fit(
    module: PretrainModule, datamodule: PretrainDataModule, callbacks: Sequence[pl.Callback], ckpt_path: str | None
) -> pl.Trainer:
    """Builds the trainer and fits, without Lightning's noise; resuming into another model is a ``ConfigError``."""
    config = module.config
    with quiet_lightning():
        trainer = build_trainer(config, callbacks, Path(config.output_dir))
        try:
            trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
        except RuntimeError as error:
            if ckpt_path and "state_dict" in str(error):
                raise ConfigError(
                    f"--resume: {ckpt_path} holds a different model than this config "
                    f"({config.model.method}, {config.model.backbone} width {config.model.width}); resume with the "
                    f"run's own config ({Path(config.output_dir) / 'config.yaml'}). {_state_dict_mismatch(str(error))}"
                ) from error
            raise
    return trainer


def pretrain(
    config: Config, callbacks: Sequence[pl.Callback] = (), *, resume: bool = False, dataset: object | None = None
) -> PretrainResult:
    """Pre-train ``config.model`` on ``config.data`` into ``config.output_dir``.

    Args:
        config: a validated config (``load_config``), left unchanged: the run's copy with
            ``data.image_size`` and ``trainer.precision`` resolved is ``result.config`` and ``config.yaml``.
        callbacks: extra Lightning callbacks (e.g. the kNN monitor of ``hallucinator.evaluation``).
        resume: continue from ``output_dir/checkpoints/last.ckpt`` with the same step, lr,
            MoCo queue and random streams.
        dataset: an ``ImageDataset`` to use instead of building ``config.data.dataset``.

    The run's loggers (``trainer.loggers``) are left open in ``result.loggers`` for the caller's final
    figures: ``engine.loggers.log_final(result.loggers, figures, result.global_step)`` logs them and closes
    the loggers (``hallucinator pretrain`` does so with its final kNN and online-linear figures).

    Raises:
        TrainingDiverged: the loss became NaN or inf (the last good checkpoint is kept).

    Example:
        >>> result = pretrain(load_config("configs/quickstart.yaml"))
        >>> result.checkpoint, result.images_per_second
    """
    output_dir = Path(config.output_dir)
    checkpoints = Checkpointing(
        output_dir / "checkpoints",
        every_n_epochs=config.trainer.checkpoint_every_n_epochs,
        last_every_n_steps=config.trainer.last_every_n_steps,
    )
    ckpt_path = checkpoint_to_resume(checkpoints.last) if resume else None
    if config.trainer.cpu_threads:
        torch.set_num_threads(config.trainer.cpu_threads)
    # before the data: a missing device, a refused precision or a logger not installed fails at once
    check_accelerator(config)
    check_logger_packages(config)
    precision, reason = resolve_precision(config)
    rank_zero_info(reason)
    pl.seed_everything(config.seed, workers=True, verbose=False)
    datamodule = PretrainDataModule(config, dataset)
    data = datamodule.load()
    config = resolved(config, precision, data)
    steps_per_epoch = datamodule.steps_per_epoch()
    if steps_per_epoch < 1:
        raise ConfigError(f"data.batch_size: {config.data.batch_size} is larger than the dataset")
    module = PretrainModule(config, steps_per_epoch, num_classes=label_classes(data))
    throughput = Throughput()
    trainer = fit(module, datamodule, [checkpoints, throughput, _SaveConfig(config, output_dir), *callbacks], ckpt_path)
    if module.diverged:
        raise TrainingDiverged(f"{module.diverged} ({checkpoints.last}).")
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
    return PretrainResult(
        config=config,
        output_dir=output_dir,
        checkpoint=checkpoints.last,
        global_step=trainer.global_step,
        epoch=trainer.current_epoch,
        steps_per_epoch=steps_per_epoch,
        interrupted=checkpoints.interrupted,
        train_seconds=throughput.seconds,
        images_per_second=throughput.images_per_second,
        backbone=module.method.backbone,
        global_rank=trainer.global_rank,
        metrics=metrics,
        online_linear=module.online_linear,
        loggers=trainer.loggers,
    )
