"""The self-supervised methods and their registry.

Example:
    >>> from hallucinator import backbones, methods
    >>> method = methods.build("mocov2", backbones.build("resnet18", cifar_stem=True), hallucinator=True)
    >>> out = method(view1, view2)  # {"loss", "loss_original", "loss_hallucinated", "pos_similarity"}
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import nn

from hallucinator.hallucinator import Hallucinator
from hallucinator.methods.base import SSLMethod
from hallucinator.methods.moco import MoCo
from hallucinator.methods.simclr import SimCLR
from hallucinator.methods.simsiam import SimSiam


@dataclass(frozen=True)
class MethodSpec:
    """A registered method: its class, fixed constructor arguments and default (paper CIFAR) hyper-parameters."""

    cls: type[SSLMethod]
    hparams: dict[str, Any]
    fixed: dict[str, Any] = field(default_factory=dict)


_MOCO_COMMON = {"dim": 128, "queue_size": 65536, "momentum": 0.999, "shuffle_bn_splits": 8, "hallucination_weight": 0.5}

# METHOD.md section 4 (paper + public CIFAR configs); SimCLR's temperature and the SimSiam heads
# are the original papers' CIFAR settings, which the Hallucinator paper keeps.
METHODS: dict[str, MethodSpec] = {
    "mocov1": MethodSpec(MoCo, {**_MOCO_COMMON, "temperature": 0.07, "mlp": False}, {"version": 1}),
    "mocov2": MethodSpec(MoCo, {**_MOCO_COMMON, "temperature": 0.2, "mlp": True}, {"version": 2}),
    "simclr": MethodSpec(
        SimCLR,
        {"dim": 128, "hidden_dim": None, "temperature": 0.5, "head_batchnorm": True, "loss_scale": 1.0,
         "hallucination_weight": 0.5},
    ),
    "simsiam": MethodSpec(SimSiam, {"dim": 2048, "pred_hidden_dim": 512, "proj_layers": 2, "hallucination_weight": 0.5}),
}


def build(name: str, backbone: nn.Module, hallucinator: Hallucinator | bool | None = True, **hparams: Any) -> SSLMethod:
    """Build a method by name with the paper's CIFAR hyper-parameters, overridden by ``hparams``.

    Args:
        name: one of ``mocov1``, ``mocov2``, ``simclr``, ``simsiam``.
        backbone: any module with a ``num_features`` attribute (e.g. from ``hallucinator.backbones.build``).
        hallucinator: ``True`` for the paper's Hallucinator, ``False`` for the plain method, or a configured one.
        **hparams: overrides of ``METHODS[name].hparams``.
    """
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; choose one of {sorted(METHODS)}")
    spec = METHODS[name]
    unknown = sorted(set(hparams) - set(spec.hparams))
    if unknown:
        raise ValueError(f"unknown hyper-parameter(s) {unknown} for {name!r}; valid ones are {sorted(spec.hparams)}")
    return spec.cls(backbone, hallucinator=hallucinator, **spec.fixed, **{**spec.hparams, **hparams})


__all__ = ["METHODS", "MethodSpec", "MoCo", "SSLMethod", "SimCLR", "SimSiam", "build"]
