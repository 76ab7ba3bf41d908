"""The pre-training config: dataclasses, YAML files with ``base:`` inheritance, dotted overrides.

A config file is YAML whose top-level keys are the sections below. ``base: other.yaml``
(relative to the file) loads another file first and deep-merges this one over it, so a
paper cell is a few lines over a shared recipe. A path that is not a file names one of the configs
shipped with the package (the repository's ``configs/``, :data:`SHIPPED_CONFIGS`): ``quickstart.yaml``
or ``configs/quickstart.yaml`` works without a checkout. Command-line overrides are dotted keys:
``--trainer.max_epochs=10`` or ``--hallucinator.enabled false``; values are parsed as YAML.

Every value is checked against the dataclass field's type and, for strings naming a
choice, against the allowed values; an error names the dotted key and what is allowed.

Example:
    >>> config = load_config("configs/quickstart.yaml", ["--trainer.max_epochs=1"])
    >>> config.trainer.max_epochs
    1
    >>> print(dump_config(config))  # the resolved config, as saved in the run directory
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from hallucinator.hallucinator import OptionError
from hallucinator.hallucinator_variants import HallucinatorOptions
from hallucinator.methods import METHOD_NAMES, METHODS, check_hparams
from hallucinator.methods.base import LOSS_FORMS, check_loss_form, unsupported_extrapolation

OPTIMIZERS = ("sgd", "lars", "adamw")
# how SGD / AdamW update the parameters: "auto" is PyTorch's default (foreach on CUDA, a for-loop on the CPU)
OPTIMIZER_IMPLEMENTATIONS = ("auto", "for-loop", "foreach", "fused")
COMPILE_MODES = (False, True, "max-autotune")
COMPILE_SCOPES = ("backbone", "method")
SCHEDULES = ("cosine", "step", "constant")
ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps")
# "auto": bf16 autocast on a GPU that supports it and on a CPU with native bf16 (AVX-512 BF16 / AMX),
# fp32 elsewhere (engine.train.resolve_precision; measurements in docs/training.md).
PRECISIONS = ("auto", "32-true", "bf16-mixed", "16-mixed")
PRECISION_ALIASES = {"32": "32-true", "fp32": "32-true", "bf16": "bf16-mixed", "16": "16-mixed", "fp16": "16-mixed"}
REFERENCE_BATCH_SIZE = 256
LOGGERS = ("csv", "tensorboard", "wandb", "mlflow")
SHIPPED_CONFIGS = (Path(__file__).parents[1] / "configs").resolve()
"""The configs shipped in the wheel (``hallucinator/configs``); in a checkout, a link to the repository's ``configs/``."""


class ConfigError(ValueError):
    """A config value is missing, unknown or invalid; the message names the dotted key."""


@dataclass
class ModelConfig:
    method: str = "simclr"
    """A name of ``hallucinator.methods.METHODS`` (e.g. ``simclr``, ``mocov2``, ``byol``, ``vicreg``)."""
    backbone: str = "resnet18"
    width: int = 64
    """Channels of the first ResNet stage (64 = the standard ResNet; 16 = a narrow one for CPUs)."""
    cifar_stem: bool = True
    """3x3 stride-1 stem without max-pool, for 32-96 px images (the paper's small-data recipe)."""
    hparams: dict[str, Any] = field(default_factory=dict)
    """Method hyper-parameters (e.g. ``temperature``, ``queue_size``) over the method's defaults."""


@dataclass
class HallucinatorConfig(HallucinatorOptions):
    """The module's options (:class:`~hallucinator.hallucinator_variants.HallucinatorOptions`, the one list of
    them: the engine builds the module with its ``build``) and how training uses it."""

    enabled: bool = True
    weight: float = 0.5
    """Weight ``w`` of the hallucinated loss: ``(1 - w) * original + w * hallucinated`` (paper: 0.5)."""
    loss_form: str = "average"
    """``average`` (the paper's text: the weighted average above) or ``concat`` (the authors' code, SimCLR
    and MoCo v1/v2: one loss over ``[q; q_hat]`` against ``[k; k]``; no weight, no warm-up)."""
    warmup_epochs: float = 0.0
    """Ramp ``w`` linearly from 0 over this many epochs (0 = off, the paper's recipe)."""
    warmup_fraction: float = 0.0
    """Or ramp it over this fraction of the run; at most one of the two warm-ups may be set."""


@dataclass
class CropsConfig:
    """``data.global_crops`` / ``data.local_crops``: how many crops, their side and their area range."""

    number: int = 2
    size: int | None = None
    """Side in px (global crops: ``None`` = ``data.crop_size``; local crops need one, e.g. 16 for 32 px images)."""
    scale: tuple[float, float] | None = None
    """Area fraction of the image, ``[min, max]`` (``None``: the preset's; DINO: global [0.4, 1], local [0.05, 0.4])."""


@dataclass
class LocalCropsConfig(CropsConfig):
    number: int = 0


@dataclass
class DataConfig:
    dataset: str = "cifar10"
    data_dir: str = "data"
    download: bool = False
    cache_dir: str | None = None
    """Where the decoded uint8 cache goes (``None``: the data layer's default)."""
    class_list: str | None = None
    """ImageNet-200's classes: ``None`` = the authors' 200 (shipped with the package), a file with one
    wnid per line, or ``random`` (200 classes drawn with seed 0)."""
    image_size: int | None = None
    """Image resolution for training and evaluation; ``None`` = the dataset's native size (a folder of
    one's own mixed-size images: the median shorter side, at most 224, printed with the reason)."""
    crop_size: int | None = None
    """Side of the training crops (``None``: ``image_size``). A crop smaller than the test resolution
    is cheaper (24 px costs about half of 32 px) and, with RandomResizedCrop's zoom, shows objects at
    about the size they have in the uncropped test images (Touvron et al., "Fixing the train-test
    resolution discrepancy", 2019). Evaluation always uses ``image_size``."""
    preset: str | None = None
    """Augmentation preset of ``hallucinator.data.presets`` (``None``: ``<dataset>-<method>``), or
    ``none``: no augmentation, both views are the plain image (a debugging aid)."""
    augment: dict[str, Any] = field(default_factory=dict)
    """Overrides passed to the preset (e.g. ``center_fraction: 0.6``, ``alpha: 0.1``; see ``hallucinator.data.presets.Recipe``)."""
    global_crops: CropsConfig = field(default_factory=CropsConfig)
    """The global views every method takes (2); ``size`` / ``scale`` override the crop size and the preset's scale."""
    local_crops: LocalCropsConfig = field(default_factory=LocalCropsConfig)
    """Multi-crop: this many extra small views per image for methods that take them (``dino``); 0 = two views."""
    center_crop_warmup_epochs: int = 0
    """Plain crops on both views for this many first epochs, then the center-suppressed crop (the
    authors' ImageNet-1K recipe: 20)."""
    batch_size: int = 512
    """Global batch (all processes together); the lr is scaled by it (see ``optimizer``)."""
    limit: int | None = None
    """Use a seeded (``seed``), class-stratified random subset of ``limit`` pre-training images (quick runs, tests)."""
    num_workers: int = 0
    """Worker processes gathering batches (0 for in-memory datasets; use 8+ for streamed ImageNet; 0 on a
    streamed dataset means up to 4, one per core)."""
    labels: str = "auto"
    """``imagefolder`` directories: ``folders`` (first-level folders are classes), ``none`` (unlabeled; sub-folders
    are plain directories) or ``auto`` (``folders`` when every image is in one of 2+ first-level folders)."""
    holdout_fraction: float = 0.0
    """``imagefolder``, labeled and without ``test/``: hold out this seeded, class-stratified fraction for kNN."""
    skip_unreadable: bool = False
    """``imagefolder``: train without the images that cannot be decoded (listed in ``RUN/unreadable.txt``)
    instead of stopping before training with all of them named."""
    memory_budget_gb: float = 4.0
    """``imagefolder``: a split whose decoded pixels (N x 3 x S x S bytes) exceed this streams from its files
    through DataLoader workers instead of the decode-once cache."""

    @property
    def multi_crop(self) -> bool:
        """Whether the views differ from the preset's two (local crops, or global crops of their own size / scale)."""
        return self.local_crops.number > 0 or self.global_crops != CropsConfig()

    @property
    def training_crop_size(self) -> int | None:
        """Side of the training crops: ``crop_size``, else ``image_size`` (``None``: the dataset's native size)."""
        return self.crop_size or self.image_size


@dataclass
class OptimizerConfig:
    name: str = "sgd"
    base_lr: float = 0.25
    """Learning rate for a batch of 256: ``lr = base_lr * batch_size / 256`` when ``scale_lr``."""
    scale_lr: bool = True
    momentum: float = 0.9
    """SGD's and LARS's momentum (AdamW: ``betas``)."""
    betas: tuple[float, float] = (0.9, 0.999)
    """AdamW's ``(beta1, beta2)`` (torch's defaults, which MoCo v3's and DINO's code keep)."""
    weight_decay: float = 1e-4
    final_weight_decay: float | None = None
    """The weight decay follows a cosine from ``weight_decay`` to this over the run (DINO: 0.04 -> 0.4);
    ``None`` keeps it constant. Parameters without decay (``decay: false`` groups) stay at 0."""
    grad_clip: float = 0.0
    """Clip the gradients' total L2 norm (over all parameters) to this before each step (DINO: 3.0); 0 = off."""
    schedule: str = "cosine"
    warmup_epochs: float = 0.0
    """Linear warm-up from 0 to ``lr`` over this many epochs."""
    milestones: list[float] = field(default_factory=list)
    """Epochs at which the ``step`` schedule multiplies the lr by ``gamma``."""
    gamma: float = 0.1
    min_lr_ratio: float = 0.0
    """The cosine schedule ends at ``min_lr_ratio * lr`` (the authors' small-dataset recipe: 0.1)."""
    fix_predictor_lr: bool = False
    """SimSiam's ``fix_pred_lr``: the predictor keeps the peak lr throughout (no warm-up, no schedule)."""
    lars_eta: float = 0.001
    """LARS trust coefficient."""
    implementation: str = "auto"
    """How SGD and AdamW update the parameters: ``auto`` (PyTorch's default: ``foreach`` on CUDA, ``for-loop`` on
    the CPU), ``for-loop`` (one parameter at a time), ``foreach`` (grouped tensor kernels) or ``fused`` (one kernel;
    CPU and CUDA). The same update up to float rounding; LARS has only ``for-loop`` (``auto``)."""


@dataclass
class TrainerConfig:
    max_epochs: int = 500
    max_steps: int = -1
    """When > 0 the run stops after this many optimisation steps (and the schedule spans them)."""
    accelerator: str = "auto"
    devices: Any = "auto"
    """An int (processes per node), a list of GPU ids, or ``auto``."""
    strategy: str = "auto"
    num_nodes: int = 1
    precision: str = "auto"
    sync_batchnorm: bool = False
    compile: bool | str = False
    """``torch.compile`` (inductor) of ``compile_scope``: ``true`` (the default mode), ``max-autotune`` (inductor
    times kernel choices while compiling; slower to compile) or ``false``."""
    compile_scope: str = "backbone"
    """What ``compile`` compiles, in place: ``backbone``, or ``method`` (the method's whole forward: backbone, heads,
    Hallucinator and loss; random draws as in eager mode)."""
    channels_last: bool = True
    checkpoint_every_n_epochs: int = 0
    """Keep ``checkpoints/epoch=NNNN.ckpt`` every N epochs (0: only ``last.ckpt``)."""
    last_every_n_steps: int = 0
    """Also refresh ``last.ckpt`` every N steps (0: at the end of each epoch only)."""
    knn_every_n_epochs: int = 0
    """Run the kNN monitor (when one is passed to ``pretrain``) every N epochs; 0 = off."""
    online_linear: bool = True
    """Train a linear classifier on the detached backbone features of view 1 during pre-training, when the
    dataset has labels (``train/online_linear_top1``; its test top-1 goes to ``evaluation.json``). It changes
    neither the backbone's gradients nor any random stream; ``false`` (or ``--no-online-linear``) turns it off."""
    online_linear_lr: float = 0.1
    """The online classifier's own SGD learning rate (momentum 0.9, constant, outside the lr schedule)."""
    log_every_n_steps: int = 10
    progress_bar: bool = True
    cpu_threads: int | None = None
    """``torch.set_num_threads`` for CPU runs (``None``: PyTorch's default, one per core)."""
    loggers: list[str] = field(default_factory=lambda: ["csv", "tensorboard"])
    """Where the metrics, the resolved config and the final evaluation go: any of :data:`LOGGERS`
    (``wandb`` and ``mlflow`` need ``pip install 'hallucinator[wandb]'`` / ``'hallucinator[mlflow]'``)."""
    experiment: str = "hallucinator"
    """The W&B project and the MLflow experiment the run is logged under."""
    mlflow_tracking_uri: str | None = None
    """MLflow's store; ``None``: ``$MLFLOW_TRACKING_URI`` when set, else ``sqlite:///RUN/mlflow.db``."""


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    hallucinator: HallucinatorConfig = field(default_factory=HallucinatorConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    output_dir: str = "runs/default"
    seed: int = 0

    def lr(self) -> float:
        """The learning rate actually used (after linear scaling with the global batch)."""
        scale = self.data.batch_size / REFERENCE_BATCH_SIZE if self.optimizer.scale_lr else 1.0
        return self.optimizer.base_lr * scale


# ---------------------------------------------------------------------------------------
# dict <-> dataclass with type checks


def _is_dataclass_type(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """``value`` converted to the annotated type ``tp``, or a ConfigError naming ``key``."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(tp)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(value, option, key)
            except ConfigError as error:
                errors.append(str(error))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{key}: {value!r} does not match {tp}")
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML reads 1e-4 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise ConfigError(f"{key}: expected a list of {len(args)} values, got {value!r}")
        return tuple(_coerce(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if origin is list:
        (arg,) = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        return [_coerce(v, arg, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return dict(value)
    if _is_dataclass_type(tp):
        return dataclass_from_dict(tp, value, key)
    raise TypeError(f"unsupported config type {tp} for {key}")


def dataclass_from_dict(cls: type, data: Any, prefix: str = "") -> Any:
    """An instance of the config dataclass ``cls`` from a (possibly partial) nested dict, each value type-checked.

    Missing keys keep the field's default; an unknown key or a value of the wrong type is a :class:`ConfigError`
    naming the dotted key (``prefix``: the dotted key of ``data`` itself). The values are not validated beyond
    their types: :func:`from_dict` does that for :class:`Config`, and other config trees built with this
    (``hallucinator.transfer.config``) check their own.

    Example:
        >>> dataclass_from_dict(TrainerConfig, {"max_steps": 10}).max_steps
        10
    """
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix or 'config'}: expected a mapping of keys, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(data) - set(names))
    if unknown:
        key = f"{prefix}.{unknown[0]}" if prefix else unknown[0]
        raise ConfigError(f"{key}: unknown key; allowed keys here: {names}")
    kwargs = {}
    for name in names:
        if name in data:
            key = f"{prefix}.{name}" if prefix else name
            kwargs[name] = _coerce(data[name], hints[name], key)
    return cls(**kwargs)


def to_dict(config: Config) -> dict[str, Any]:
    """Plain YAML-able dict (tuples become lists)."""

    def plain(value: Any) -> Any:
        if dataclasses.is_dataclass(value):
            return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value

    return plain(config)


def from_dict(data: dict[str, Any]) -> Config:
    """A validated Config from a (possibly partial) nested dict, with its spellings normalised."""
    config = normalised(dataclass_from_dict(Config, data))
    validate(config)
    return config


def normalised(config: Config) -> Config:
    """A copy of ``config`` with the short spellings replaced by the canonical ones (``bf16`` -> ``bf16-mixed``)."""
    precision = PRECISION_ALIASES.get(config.trainer.precision, config.trainer.precision)
    return dataclasses.replace(config, trainer=dataclasses.replace(config.trainer, precision=precision))


def dump_config(config: Config) -> str:
    return yaml.safe_dump(to_dict(config), sort_keys=False)


# ---------------------------------------------------------------------------------------
# validation of values


def _choice(key: str, value: str, allowed: Sequence[str]) -> None:
    if value not in allowed:
        raise ConfigError(f"{key}: {value!r} is not one of {list(allowed)}")


def _positive(key: str, value: float, allow_zero: bool = False) -> None:
    if value < 0 or (value == 0 and not allow_zero):
        raise ConfigError(f"{key}: must be {'>= 0' if allow_zero else '> 0'}, got {value!r}")


def _validate_crops(config: Config) -> None:
    d = config.data
    if d.global_crops.number != 2:
        raise ConfigError(
            f"data.global_crops.number: every method takes 2 global crops (view 1 and view 2), got {d.global_crops.number}"
        )
    _positive("data.local_crops.number", d.local_crops.number, allow_zero=True)
    method = config.model.method
    if d.local_crops.number and not METHODS[method].multi_crop:
        multi = sorted(name for name, spec in METHODS.items() if spec.multi_crop)
        raise ConfigError(
            f"data.local_crops.number: {method} takes two views; local crops are for {', '.join(multi)}; "
            "set data.local_crops.number=0"
        )
    if d.local_crops.number and d.local_crops.size is None:
        raise ConfigError("data.local_crops.size: set the side of the local crops (e.g. 16 for 32 px images, DINO: 96)")
    if d.multi_crop and d.preset == "none":
        raise ConfigError(
            "data.preset: 'none' makes no crops; remove data.global_crops / data.local_crops or the preset"
        )
    for kind, crops in (("global_crops", d.global_crops), ("local_crops", d.local_crops)):
        if crops.size is not None:
            _positive(f"data.{kind}.size", crops.size)
        if crops.scale is not None and not 0.0 < crops.scale[0] <= crops.scale[1] <= 1.0:
            raise ConfigError(f"data.{kind}.scale: need 0 < min <= max <= 1, got {list(crops.scale)}")


def validate(config: Config) -> None:
    """Checks the values (types were checked when parsing); raises ConfigError naming the key.

    Changes nothing: the canonical spellings it expects are :func:`normalised`'s (``from_dict`` applies it).
    """
    _choice("model.method", config.model.method, METHOD_NAMES)
    try:  # here, not only when the model is built, so that `hallucinator sweep` checks all runs up front
        check_hparams(config.model.method, config.model.hparams)
    except ValueError as error:
        raise ConfigError(f"model.hparams: {error}") from error
    _positive("model.width", config.model.width)
    h = config.hallucinator
    try:
        h.check()
    except OptionError as error:
        raise ConfigError(f"hallucinator.{error}") from error
    spec = METHODS[config.model.method]
    # the method's own declarations, so that `--print-config` and `hallucinator sweep` refuse what step 0 would
    if h.enabled and h.extrapolation_mode not in spec.cls.extrapolation_modes:
        message = unsupported_extrapolation(spec.cls.__name__, h.extrapolation_mode)
        raise ConfigError(f"hallucinator.extrapolation_mode: {message}")
    if not 0.0 <= h.weight <= 1.0:
        raise ConfigError(f"hallucinator.weight: must be in [0, 1], got {h.weight}")
    _choice("hallucinator.loss_form", h.loss_form, LOSS_FORMS)
    if h.enabled and h.loss_form == "concat":
        try:
            check_loss_form(spec.cls, h.loss_form, None)
        except ValueError as error:
            raise ConfigError(f"hallucinator.loss_form: {error}") from error
        for key, value, default in (
            ("weight", h.weight, 0.5),
            ("warmup_epochs", h.warmup_epochs, 0.0),
            ("warmup_fraction", h.warmup_fraction, 0.0),
            ("guard_weight", h.guard_weight, 0.0),
        ):
            if value != default:
                raise ConfigError(
                    f"hallucinator.{key}: loss_form concat is one loss over both pairs, which {key} cannot weigh; "
                    f"set hallucinator.{key}={default} or hallucinator.loss_form=average"
                )
    _positive("hallucinator.warmup_epochs", h.warmup_epochs, allow_zero=True)
    if not 0.0 <= h.warmup_fraction <= 1.0:
        raise ConfigError(f"hallucinator.warmup_fraction: must be in [0, 1], got {h.warmup_fraction}")
    if h.warmup_epochs > 0 and h.warmup_fraction > 0:
        raise ConfigError("hallucinator.warmup_epochs and hallucinator.warmup_fraction: set at most one of them")
    d = config.data
    if d.class_list is not None and d.dataset != "imagenet200":
        raise ConfigError(f"data.class_list: only imagenet200 takes a class list, this config trains {d.dataset}")
    _validate_crops(config)
    _positive("data.center_crop_warmup_epochs", d.center_crop_warmup_epochs, allow_zero=True)
    _positive("data.batch_size", d.batch_size)
    queue_size = {**spec.hparams, **config.model.hparams}.get("queue_size")
    # every enqueue writes one block (methods.memory): the global batch, twice over with MoCo's concat form
    enqueued = d.batch_size * (2 if h.enabled and h.loss_form == "concat" else 1)
    if isinstance(queue_size, int) and queue_size % enqueued:
        raise ConfigError(
            f"model.hparams.queue_size: {queue_size} is not a multiple of the {enqueued} keys enqueued per step "
            f"(data.batch_size={d.batch_size}{' x 2, loss_form concat' if enqueued > d.batch_size else ''}); set "
            "model.hparams.queue_size to a multiple of it or use a batch size that divides it"
        )
    _positive("data.num_workers", d.num_workers, allow_zero=True)
    if d.image_size is not None:
        _positive("data.image_size", d.image_size)
    if d.crop_size is not None:
        _positive("data.crop_size", d.crop_size)
    _choice("data.labels", d.labels, ("auto", "folders", "none"))
    if not 0.0 <= d.holdout_fraction < 1.0:
        raise ConfigError(f"data.holdout_fraction: must be in [0, 1), got {d.holdout_fraction}")
    _positive("data.memory_budget_gb", d.memory_budget_gb)
    if d.limit is not None:
        _positive("data.limit", d.limit)
        if d.limit < d.batch_size:
            raise ConfigError(f"data.limit: {d.limit} images is less than one batch (data.batch_size={d.batch_size})")
    o = config.optimizer
    _choice("optimizer.name", o.name, OPTIMIZERS)
    _choice("optimizer.schedule", o.schedule, SCHEDULES)
    _positive("optimizer.base_lr", o.base_lr, allow_zero=True)
    _positive("optimizer.momentum", o.momentum, allow_zero=True)
    _positive("optimizer.weight_decay", o.weight_decay, allow_zero=True)
    if o.final_weight_decay is not None:
        _positive("optimizer.final_weight_decay", o.final_weight_decay, allow_zero=True)
    _positive("optimizer.grad_clip", o.grad_clip, allow_zero=True)
    if not all(0.0 <= beta < 1.0 for beta in o.betas):
        raise ConfigError(
            f"optimizer.betas: each must be in [0, 1) (AdamW's default: [0.9, 0.999]), got {list(o.betas)}"
        )
    _positive("optimizer.warmup_epochs", o.warmup_epochs, allow_zero=True)
    _choice("optimizer.implementation", o.implementation, OPTIMIZER_IMPLEMENTATIONS)
    if o.name == "lars" and o.implementation not in ("auto", "for-loop"):
        raise ConfigError(
            f"optimizer.implementation: lars has only the for-loop update, got {o.implementation!r}; set it to auto"
        )
    if o.schedule == "step" and not o.milestones:
        raise ConfigError("optimizer.milestones: the step schedule needs at least one milestone epoch")
    if not 0.0 <= o.min_lr_ratio <= 1.0:
        raise ConfigError(f"optimizer.min_lr_ratio: must be in [0, 1], got {o.min_lr_ratio}")
    t = config.trainer
    _choice("trainer.precision", t.precision, PRECISIONS)
    _choice("trainer.accelerator", t.accelerator, ACCELERATORS)
    if t.compile not in COMPILE_MODES:
        raise ConfigError(f"trainer.compile: {t.compile!r} is not one of [false, true, 'max-autotune']")
    _choice("trainer.compile_scope", t.compile_scope, COMPILE_SCOPES)
    if t.max_epochs <= 0 and t.max_steps <= 0:
        raise ConfigError("trainer.max_epochs: set trainer.max_epochs or trainer.max_steps to a positive number")
    _positive("trainer.num_nodes", t.num_nodes)
    if not (t.devices == "auto" or isinstance(t.devices, (int, list)) and not isinstance(t.devices, bool)):
        raise ConfigError(f"trainer.devices: expected an integer, a list of device ids or 'auto', got {t.devices!r}")
    for key in ("checkpoint_every_n_epochs", "last_every_n_steps", "knn_every_n_epochs"):
        _positive(f"trainer.{key}", getattr(t, key), allow_zero=True)
    _positive("trainer.log_every_n_steps", t.log_every_n_steps)
    _positive("trainer.online_linear_lr", t.online_linear_lr)
    if t.cpu_threads is not None:
        _positive("trainer.cpu_threads", t.cpu_threads)
    for name in t.loggers:
        _choice("trainer.loggers", name, LOGGERS)
    if len(set(t.loggers)) < len(t.loggers):
        raise ConfigError(f"trainer.loggers: each logger at most once, got {t.loggers}")


# ---------------------------------------------------------------------------------------
# files and overrides


def deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``update`` over it, nested mappings merged key by key (a base file, the file, the overrides).

    Neither argument is changed.

    Example:
        >>> deep_merge({"solver": {"base_lr": 0.02, "steps": [5]}}, {"solver": {"base_lr": 0.01}})
        {'solver': {'base_lr': 0.01, 'steps': [5]}}
    """
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def read_yaml(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A config file as a dict, with its ``base:`` chain merged in (bases first)."""
    path = Path(path).resolve()
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    if path in _seen:
        raise ConfigError(f"base: circular inheritance through {path}")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config file must be a YAML mapping")
    base = data.pop("base", None)
    if base is None:
        return data
    bases = [base] if isinstance(base, str) else base
    merged: dict[str, Any] = {}
    for item in bases:
        merged = deep_merge(merged, read_yaml(path.parent / item, _seen + (path,)))
    return deep_merge(merged, data)


def parse_overrides(overrides: Sequence[str]) -> dict[str, Any]:
    """``["--a.b=1", "--c.d", "x", "e.f=[1, 2]"]`` -> nested dict (values parsed as YAML)."""
    nested: dict[str, Any] = {}
    items = list(overrides)
    i = 0
    while i < len(items):
        item = items[i]
        i += 1
        body = item[2:] if item.startswith("--") else item
        if "=" in body:
            key, text = body.split("=", 1)
        elif i < len(items) and not items[i].startswith("--"):
            key, text = body, items[i]
            i += 1
        else:
            raise ConfigError(f"override {item!r}: expected --key=value or --key value (e.g. --trainer.max_epochs=10)")
        key = key.replace("-", "_")
        value = yaml.safe_load(text) if text != "" else None
        node = nested
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {part} is set twice")
        node[parts[-1]] = value
    return nested


def config_path(path: str | Path) -> Path:
    """``path`` when it is a file, else the shipped config it names, with or without ``configs/`` in front.

    Example:
        >>> config_path("quickstart.yaml")  # in an installed wheel: .../site-packages/hallucinator/configs/quickstart.yaml
    """
    given = Path(path).expanduser()
    if given.is_file():
        return given
    parts = given.parts[1:] if given.parts[:1] == ("configs",) else given.parts
    if parts and not given.is_absolute() and SHIPPED_CONFIGS.joinpath(*parts).is_file():
        return SHIPPED_CONFIGS.joinpath(*parts)
    shipped = sorted(file.relative_to(SHIPPED_CONFIGS).as_posix() for file in SHIPPED_CONFIGS.rglob("*.yaml"))
    near = difflib.get_close_matches("/".join(parts), shipped, n=3, cutoff=0.6)
    if near:
        raise ConfigError(f"config file not found: {path} (shipped configs near that name: {', '.join(near)})")
    raise ConfigError(
        f"config file not found: {path}, nor among the {len(shipped)} shipped configs "
        "(e.g. quickstart.yaml, table1/cifar10_mocov2_hal.yaml)"
    )


def load_config(path: str | Path | None, overrides: Sequence[str] = ()) -> Config:
    """The resolved config: defaults, then the file (and its bases), then the overrides.

    ``path`` is a file, or a shipped config's name (:func:`config_path`).
    """
    data = read_yaml(config_path(path)) if path is not None else {}
    return from_dict(deep_merge(data, parse_overrides(overrides)))
