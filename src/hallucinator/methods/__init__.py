"""The self-supervised methods and their registry (the one list of method names the library has).

Example:
    >>> from hallucinator import backbones, methods
    >>> method = methods.build("mocov2", backbones.build("resnet18", cifar_stem=True), hallucinator=True)
    >>> out = method(view1, view2)  # {"loss", "loss_original", "loss_hallucinated", "pos_similarity"}
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from hallucinator.methods.barlowtwins import BarlowTwins
from hallucinator.methods.base import HallucinatorChoice, SSLMethod, check_loss_form
from hallucinator.methods.byol import BYOL
from hallucinator.methods.dino import DINO, DINOHead
from hallucinator.methods.moco import MoCo
from hallucinator.methods.mocov3 import MoCoV3
from hallucinator.methods.nnclr import NNCLR
from hallucinator.methods.simclr import SimCLR
from hallucinator.methods.simsiam import SimSiam
from hallucinator.methods.vicreg import VICReg


@dataclass(frozen=True)
class MethodSpec:
    """A registered method: its class, default (CIFAR) hyper-parameters, fixed constructor arguments,
    the augmentation style of ``hallucinator.data.presets`` its recipe uses (``<dataset>-<augmentation>``)
    and whether it takes local crops after its two global views (``forward(view1, view2, *local_views)``)."""

    cls: Callable[..., SSLMethod]  # a subclass of SSLMethod; each takes its own keywords
    hparams: dict[str, Any]
    fixed: dict[str, Any] = field(default_factory=dict)
    augmentation: str = "simclr"
    multi_crop: bool = False


_MOCO_COMMON = {"dim": 128, "queue_size": 65536, "momentum": 0.999, "shuffle_bn_splits": 8, "hallucination_weight": 0.5}

# METHOD.md section 4 (paper + public CIFAR configs); SimCLR's temperature and the SimSiam heads
# are the original papers' CIFAR settings, which the Hallucinator paper keeps.
# The five methods beyond the paper take the public CIFAR recipes (solo-learn) of their own papers'
# heads and losses (docs/methods.md); their augmentations start from SimCLR's, as BYOL's did.
_MOMENTUM = {"momentum": 0.99, "final_momentum": 1.0}
_W = {"hallucination_weight": 0.5}
METHODS: dict[str, MethodSpec] = {
    "mocov1": MethodSpec(MoCo, {**_MOCO_COMMON, "temperature": 0.07, "mlp": False}, {"version": 1}, "mocov1"),
    "mocov2": MethodSpec(MoCo, {**_MOCO_COMMON, "temperature": 0.2, "mlp": True}, {"version": 2}, "mocov2"),
    "simclr": MethodSpec(
        SimCLR,
        {"dim": 128, "hidden_dim": None, "temperature": 0.5, "head_batchnorm": True, "loss_scale": 1.0, **_W},
        augmentation="simclr",
    ),
    "simsiam": MethodSpec(
        SimSiam, {"dim": 2048, "pred_hidden_dim": 512, "proj_layers": 2, **_W}, augmentation="simsiam"
    ),
    "byol": MethodSpec(BYOL, {"dim": 256, "hidden_dim": 4096, "pred_hidden_dim": 4096, **_MOMENTUM, **_W}),
    "barlowtwins": MethodSpec(
        BarlowTwins, {"dim": 2048, "hidden_dim": 2048, "proj_layers": 3, "lambd": 0.0051, "scale_loss": 0.1, **_W}
    ),
    "vicreg": MethodSpec(
        VICReg,
        {
            "dim": 2048,
            "hidden_dim": 2048,
            "proj_layers": 3,
            "sim_coeff": 25.0,
            "std_coeff": 25.0,
            "cov_coeff": 1.0,
            **_W,
        },
    ),
    "mocov3": MethodSpec(
        MoCoV3,
        {
            "dim": 256,
            "hidden_dim": 4096,
            "pred_hidden_dim": 4096,
            "temperature": 0.2,
            "proj_layers": 2,
            **_MOMENTUM,
            **_W,
        },
    ),
    "nnclr": MethodSpec(
        NNCLR,
        {"dim": 256, "hidden_dim": 2048, "pred_hidden_dim": 4096, "temperature": 0.2, "queue_size": 65536, **_W},
    ),
    # DINO's own head, temperatures and schedules; out_dim 4096 prototypes as in solo-learn's CIFAR recipe
    "dino": MethodSpec(
        DINO,
        {
            "out_dim": 4096,
            "hidden_dim": 2048,
            "bottleneck_dim": 256,
            "norm_last_layer": True,
            "student_temperature": 0.1,
            "teacher_temperature": 0.07,
            "warmup_teacher_temperature": 0.04,
            "teacher_temp_warmup": 0.1,
            "center_momentum": 0.9,
            "momentum": 0.996,
            "final_momentum": 1.0,
            **_W,
        },
        multi_crop=True,
    ),
}
METHOD_NAMES: tuple[str, ...] = tuple(METHODS)


def build(
    name: str,
    backbone: nn.Module,
    hallucinator: HallucinatorChoice = True,
    loss_form: str = "average",
    **hparams: Any,
) -> SSLMethod:
    """Build a method by name with the paper's CIFAR hyper-parameters, overridden by ``hparams``.

    Args:
        name: a key of :data:`METHODS` (``mocov1``, ``mocov2``, ``simclr``, ``simsiam``, ``byol``,
            ``barlowtwins``, ``vicreg``, ``mocov3``, ``nnclr``, ``dino``).
        backbone: any module with a ``num_features`` attribute (e.g. from ``hallucinator.backbones.build``).
        hallucinator: ``True`` for the paper's Hallucinator, ``False`` for the plain method, a configured one,
            or a factory the method calls with the feature size it hallucinates
            (``functools.partial(Hallucinator, num_layers=2)``: the Hallucinator is then built once).
        loss_form: ``average`` (the paper's) or ``concat`` (the authors' code; SimCLR and MoCo v1/v2 only).
        **hparams: overrides of ``METHODS[name].hparams``.
    """
    check_hparams(name, hparams)
    spec = METHODS[name]
    forms = {}
    if loss_form != "average":  # the methods with one loss form do not take the argument
        check_loss_form(spec.cls, loss_form, None)  # type: ignore[arg-type]
        forms["loss_form"] = loss_form
    return spec.cls(backbone, hallucinator=hallucinator, **forms, **spec.fixed, **{**spec.hparams, **hparams})


def check_hparams(name: str, hparams: Iterable[str]) -> None:
    """Raises ``ValueError`` naming what is wrong when ``name`` is no method or ``hparams`` are not all its own."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; choose one of {sorted(METHODS)}")
    spec = METHODS[name]
    unknown = sorted(set(hparams) - set(spec.hparams))
    if unknown:
        raise ValueError(f"unknown hyper-parameter(s) {unknown} for {name!r}; valid ones are {sorted(spec.hparams)}")


__all__ = [
    "BYOL",
    "METHODS",
    "METHOD_NAMES",
    "NNCLR",
    "DINO",
    "BarlowTwins",
    "DINOHead",
    "MethodSpec",
    "MoCo",
    "MoCoV3",
    "SSLMethod",
    "SimCLR",
    "SimSiam",
    "VICReg",
    "build",
    "check_hparams",
]
