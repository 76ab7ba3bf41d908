"""The registry of methods: each method class registers itself by name (timm's ``register_model`` style).

A method's default hyper-parameters are its constructor's defaults (the method's own recipe); the recipes of
the paper's tables and the quickstarts override them in ``configs/methods/*.yaml`` and ``configs/*.yaml``.

Example:
    >>> @register_method("mymethod", augmentation="simclr")
    ... class MyMethod(SSLMethod): ...
    >>> METHODS["mymethod"].hparams  # {"dim": 128, ...}: read from MyMethod's signature
    >>> build("mymethod", backbone, hallucinator=True, dim=64)
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from torch import nn

from hallucinator.methods.base import HallucinatorChoice, SSLMethod, check_loss_form

# what build() passes itself: not hyper-parameters of ``model.hparams``
_BUILD_ARGUMENTS = ("self", "backbone", "hallucinator", "loss_form")


@dataclass(frozen=True)
class MethodSpec:
    """A registered method: its class, the constructor arguments its name fixes (MoCo's ``version``), the
    augmentation style of ``hallucinator.data.presets`` its recipe uses (``<dataset>-<augmentation>``) and
    whether it takes local crops after its two global views (``forward(view1, view2, *local_views)``)."""

    cls: type[SSLMethod]
    fixed: dict[str, Any] = field(default_factory=dict)
    augmentation: str = "simclr"
    multi_crop: bool = False

    @property
    def hparams(self) -> dict[str, Any]:
        """The hyper-parameters ``build`` takes and their defaults: the constructor's, less what the name fixes."""
        return {
            name: parameter.default
            for name, parameter in inspect.signature(self.cls.__init__).parameters.items()
            if name not in _BUILD_ARGUMENTS
            and name not in self.fixed
            and parameter.kind is parameter.POSITIONAL_OR_KEYWORD
        }


METHODS: dict[str, MethodSpec] = {}
"""Every method by name, filled by :func:`register_method` when ``hallucinator.methods`` is imported."""

Method = TypeVar("Method", bound=type[SSLMethod])


def register_method(
    name: str, *, augmentation: str = "simclr", multi_crop: bool = False, **fixed: Any
) -> Callable[[Method], Method]:
    """Class decorator: registers the class under ``name``; ``fixed`` are constructor arguments the name sets.

    Example:
        >>> @register_method("mocov1", augmentation="mocov1", version=1)
        ... class MoCo(SSLMethod): ...
    """

    def register(cls: Method) -> Method:
        if name in METHODS:
            raise ValueError(f"a method named {name!r} is already registered ({METHODS[name].cls.__name__})")
        METHODS[name] = MethodSpec(cls, dict(fixed), augmentation, multi_crop)
        return cls

    return register


def build(
    name: str,
    backbone: nn.Module,
    hallucinator: HallucinatorChoice = True,
    loss_form: str = "average",
    **hparams: Any,
) -> SSLMethod:
    """Build a method by name with its defaults (the constructor's), overridden by ``hparams``.

    Args:
        name: a key of :data:`METHODS` (``mocov1``, ``mocov2``, ``simclr``, ``simsiam``, ``byol``,
            ``barlowtwins``, ``vicreg``, ``mocov3``, ``nnclr``, ``dino``).
        backbone: any module with a ``num_features`` attribute (e.g. from ``hallucinator.backbones.build``).
        hallucinator: ``True`` for the paper's Hallucinator, ``False`` for the plain method, a configured one,
            or a factory the method calls with the feature size it hallucinates
            (``functools.partial(Hallucinator, num_layers=2)``: the Hallucinator is then built once).
        loss_form: ``average`` (the paper's) or ``concat`` (the authors' code; SimCLR and MoCo v1/v2 only).
        **hparams: overrides of ``METHODS[name].hparams``.

    Example:
        >>> method = build("mocov2", backbones.build("resnet18", cifar_stem=True), queue_size=4096)
    """
    check_hparams(name, hparams)
    spec = METHODS[name]
    forms = {}
    if loss_form != "average":  # the methods with one loss form do not take the argument
        check_loss_form(spec.cls, loss_form, None)
        forms["loss_form"] = loss_form
    constructor: Callable[..., SSLMethod] = spec.cls  # each class takes its own keywords
    return constructor(backbone, hallucinator=hallucinator, **forms, **spec.fixed, **hparams)


def check_hparams(name: str, hparams: Iterable[str]) -> None:
    """Raises ``ValueError`` naming what is wrong when ``name`` is no method or ``hparams`` are not all its own."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; choose one of {sorted(METHODS)}")
    spec = METHODS[name]
    unknown = sorted(set(hparams) - set(spec.hparams))
    if unknown:
        raise ValueError(f"unknown hyper-parameter(s) {unknown} for {name!r}; valid ones are {sorted(spec.hparams)}")
