"""The study's variants of the Hallucinator beyond the paper, and the one list of every Hallucinator option.

Jointly trained (the paper's Sec. 3.3), ``H`` can learn to pull ``q_hat`` back towards ``k`` (an *easier*
positive; docs/RESULTS.md). The study (docs/study.md) tried three ways to stop it, each a subclass of the
paper's :class:`~hallucinator.hallucinator.Hallucinator`:

- :class:`AdversarialHallucinator` (``train_mode: adversarial``): the gradient reaching ``H``'s parameters is
  multiplied by ``-adversarial_strength``, so ``H`` ascends the loss it is scored by while the encoder, whose
  gradient passes through ``H`` unchanged, descends it (a gradient-reversal layer on the parameters only);
- :class:`FrozenHallucinator` (``train_mode: frozen``): ``H`` keeps its random initialisation (a fixed
  non-linear smoothing; no shortcut to learn); its parameters do not require gradients;
- :class:`GuardedHallucinator` (``guard_weight > 0``): a hardness guard, the mean of
  ``relu(cos(q_hat, k) - bound)`` with ``bound = cos(q', k)`` (``guard_margin=None``) or
  ``cos(q, k) - guard_margin``, so ``H`` may smooth but not undo the extrapolation. The methods add
  ``guard_weight * penalty`` to the hallucinated loss.

:class:`HallucinatorOptions` lists every option, the paper's module's and the variants'; the config's
``hallucinator`` section is it (plus the training-side keys), and :meth:`HallucinatorOptions.build` makes the
module it describes, so a new option is declared here once.

Example:
    >>> adversary = AdversarialHallucinator(dim=128, adversarial_strength=0.1)
    >>> guarded = GuardedHallucinator(dim=128, guard_weight=1.0)  # cos(q_hat, k) <= cos(q', k)
    >>> HallucinatorOptions(train_mode="frozen", num_layers=2).build(128)  # a FrozenHallucinator
"""

from __future__ import annotations

import dataclasses
import inspect
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from hallucinator.hallucinator import HallucinatedPair, Hallucinator, OptionError

TRAIN_MODES = ("joint", "adversarial", "frozen")


class _ReverseGradient(torch.autograd.Function):
    """Identity forward; the backward pass multiplies the gradient by ``-strength``."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor, strength: float) -> torch.Tensor:
        ctx.strength = strength
        return tensor.view_as(tensor)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return -ctx.strength * grad, None


class AdversarialHallucinator(Hallucinator):
    """``H`` ascends the hallucinated loss: the gradient on its parameters is multiplied by ``-adversarial_strength``.

    Args:
        dim: feature dimension, as for :class:`Hallucinator`.
        adversarial_strength: factor in ``(0, 1]`` of the reversed gradient on ``H``'s parameters.
        **options: the paper's options (:class:`Hallucinator`'s arguments).

    Example:
        >>> adversary = AdversarialHallucinator(128, adversarial_strength=0.03, num_layers=2)
    """

    def __init__(self, dim: int, adversarial_strength: float = 0.1, **options: Any) -> None:
        if not 0.0 < adversarial_strength <= 1.0:
            raise OptionError("adversarial_strength", f"must be in (0, 1] (try 0.01-0.3), got {adversarial_strength}")
        super().__init__(dim, **options)
        self.adversarial_strength = float(adversarial_strength)

    def hallucinate(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.is_grad_enabled():
            return self.net(x)
        for layer in self.net:
            if isinstance(layer, nn.Linear):
                # same forward; only the gradient reaching the parameters is reversed, not the input's
                weight = _ReverseGradient.apply(layer.weight, self.adversarial_strength)
                bias = _ReverseGradient.apply(layer.bias, self.adversarial_strength)
                x = F.linear(x, weight, bias)
            else:
                x = layer(x)
        return x

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, adversarial_strength={self.adversarial_strength}"


class FrozenHallucinator(Hallucinator):
    """``H`` keeps its random initialisation: its parameters do not require gradients (they are still saved).

    Example:
        >>> frozen = FrozenHallucinator(128)
        >>> any(p.requires_grad for p in frozen.parameters())
        False
    """

    def __init__(self, dim: int, **options: Any) -> None:
        super().__init__(dim, **options)
        self.net.requires_grad_(False)


class GuardedHallucinator(Hallucinator):
    """A jointly trained ``H`` with the hardness guard :meth:`guard_penalty`, weighted by ``guard_weight``.

    Args:
        dim: feature dimension, as for :class:`Hallucinator`.
        guard_weight: weight of the penalty in the hallucinated loss (the methods add it).
        guard_margin: ``None`` bounds ``cos(q_hat, k)`` by ``cos(q', k)``; a number ``m`` by ``cos(q, k) - m``.
        **options: the paper's options (:class:`Hallucinator`'s arguments).

    Example:
        >>> guarded = GuardedHallucinator(128, guard_weight=1.0)
        >>> pair = guarded.pair(q, k)
        >>> penalty = guarded.guard_penalty(pair, q)  # 0 when every q_hat is at least as hard as q'
    """

    def __init__(self, dim: int, guard_weight: float = 1.0, guard_margin: float | None = None, **options: Any) -> None:
        if guard_weight < 0:
            raise OptionError("guard_weight", f"must be >= 0 (0 = no hardness guard), got {guard_weight}")
        super().__init__(dim, **options)
        self.guard_weight = float(guard_weight)
        self.guard_margin = None if guard_margin is None else float(guard_margin)

    def guard_penalty(self, pair: HallucinatedPair, q: torch.Tensor) -> torch.Tensor:
        """Mean ``relu(cos(q_hat, k) - bound)`` over the ``pair`` (``k`` its partner): 0 when every hallucinated
        positive is at least as hard as the bound, ``cos(q', k)`` or ``cos(q, k) - guard_margin``.

        The bound and the ``k`` compared with are constants, but ``q_hat = H(concat[q, q'])`` is not cut from
        its inputs: the penalty's gradient reaches ``H``'s parameters and, through ``q`` and
        ``q' = q + lam (q - k)``, the encoder (``k`` too where it carries a gradient, as SimCLR's does; a
        momentum or stop-gradient target does not). That is the guard the study measured (docs/study.md);
        one on ``H`` alone would evaluate ``H`` on detached inputs.
        """
        k = pair.partner.detach()
        with torch.no_grad():
            if self.guard_margin is None:
                bound = F.cosine_similarity(pair.q_prime, k, dim=1)
            else:
                bound = F.cosine_similarity(q, k, dim=1) - self.guard_margin
        return F.relu(F.cosine_similarity(pair.q_hat, k, dim=1) - bound).mean()

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, guard_weight={self.guard_weight}, guard_margin={self.guard_margin}"


@dataclass
class HallucinatorOptions:
    """Every option of the Hallucinator: the paper's module's arguments and the study's variants'.

    The defaults are the paper's (the plain :class:`Hallucinator`, jointly trained, no guard); the config's
    ``hallucinator`` section extends this class, so each field is a config key of the same name.

    Example:
        >>> HallucinatorOptions(num_layers=2, train_mode="adversarial", adversarial_strength=0.03).build(dim=128)
    """

    num_layers: int = 3
    """Linear layers of ``H`` (the paper's ``n``); 0 = extrapolation only, ``q_hat = q'``."""
    hidden_dim: int | None = None
    """Width of ``H``'s hidden layers; ``None`` = twice the feature size (the authors' code)."""
    extrapolation: tuple[float, float] = (0.0, 0.1)
    """``(beta1, beta2)``, the range of ``lam`` (the paper's text: ``(0, 0.1)``; its Table 5 prefers ``(0, 1)``)."""
    per_sample: bool = False
    """One ``lam`` per sample instead of one per batch (the authors' code)."""
    extrapolation_mode: str = "asymmetric"
    """``asymmetric`` (the paper's) or ``symmetric`` (Fig. 4's comparison point: both features extrapolated)."""
    train_mode: str = "joint"
    """``joint`` (the paper's: H descends the hallucinated loss), ``adversarial`` (H ascends it, at
    ``adversarial_strength``) or ``frozen`` (H stays at its random initialisation)."""
    adversarial_strength: float = 0.1
    """Factor in (0, 1] of the reversed gradient on H's parameters (``train_mode: adversarial``)."""
    guard_weight: float = 0.0
    """Weight of the hardness guard, a penalty on ``cos(q_hat, k)`` above its bound (0 = off, the paper's)."""
    guard_margin: float | None = None
    """The guard's bound: ``None`` = ``cos(q', k)``; a number ``m`` = ``cos(q, k) - m``."""

    def module_class(self) -> type[Hallucinator]:
        """The class these options build: the paper's :class:`Hallucinator` or one of the study's variants."""
        if self.train_mode not in TRAIN_MODES:
            raise OptionError("train_mode", f"{self.train_mode!r} is not one of {list(TRAIN_MODES)}")
        if self.guard_weight and self.train_mode != "joint":
            # a frozen H has nothing to guard (the penalty would move the encoder instead), and the
            # reversed gradient of an adversarial H would turn the guard into its opposite
            raise OptionError(
                "guard_weight",
                f"the hardness guard needs train_mode joint, got {self.train_mode!r}; set guard_weight=0 or train_mode=joint",
            )
        if self.train_mode == "adversarial":
            return AdversarialHallucinator
        if self.train_mode == "frozen":
            return FrozenHallucinator
        return GuardedHallucinator if self.guard_weight else Hallucinator

    def build(self, dim: int) -> Hallucinator:
        """The Hallucinator for ``dim``-dimensional features; an impossible option raises :class:`OptionError`.

        Each class takes the paper's arguments and its own: the values of the options of those names.
        """
        cls = self.module_class()
        values = dataclasses.asdict(self)
        return cls(dim, **{name: values[name] for name in constructor_options(cls)})

    def check(self) -> None:
        """Raises :class:`OptionError` for an impossible option, with the constructors' own checks (nothing is built:
        the module is made on the ``meta`` device, which allocates no memory and draws no random numbers)."""
        with torch.device("meta"):
            self.build(dim=1)


def constructor_options(cls: type[Hallucinator]) -> list[str]:
    """The options ``cls`` takes: its own named arguments and, through ``**options``, the paper's."""
    names = []
    for klass in (cls, Hallucinator):
        parameters = inspect.signature(klass.__init__).parameters.values()
        names += [p.name for p in parameters if p.name not in ("self", "dim") and p.kind is p.POSITIONAL_OR_KEYWORD]
    return list(dict.fromkeys(names))
