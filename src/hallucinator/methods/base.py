"""What the methods share: input checks, projection heads and the two-loss average."""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from hallucinator.hallucinator import EXTRAPOLATION_MODES, HallucinatedPair, Hallucinator
from hallucinator.hallucinator_variants import GuardedHallucinator

HallucinatorChoice = Hallucinator | bool | None | Callable[[int], Hallucinator]
"""What a method takes as ``hallucinator``: ``True`` (the paper's), ``False`` / ``None`` (none), a built
:class:`Hallucinator`, or a factory the method calls with the feature size it hallucinates, e.g.
``functools.partial(Hallucinator, num_layers=2)`` (how the engine builds the configured one, once)."""


def mlp(
    in_dim: int, hidden_dim: int, out_dim: int, num_layers: int = 2, batch_norm: bool = True, last_bn: bool = False
) -> nn.Sequential:
    """``num_layers`` Linear layers ``in -> hidden -> ... -> out`` with (BatchNorm +) ReLU between them.

    ``num_layers=1`` is a single Linear layer (MoCo v1's head). ``last_bn`` adds an affine-free
    BatchNorm after the last layer (SimSiam's projector).
    """
    widths = [in_dim] + [hidden_dim] * (num_layers - 1) + [out_dim]
    layers: list[nn.Module] = []
    for i in range(num_layers):
        last = i == num_layers - 1
        followed_by_bn = last_bn if last else batch_norm
        layers.append(nn.Linear(widths[i], widths[i + 1], bias=not followed_by_bn))  # BatchNorm cancels a bias
        if not last:
            if batch_norm:
                layers.append(nn.BatchNorm1d(widths[i + 1]))
            layers.append(nn.ReLU(inplace=True))
        elif last_bn:
            layers.append(nn.BatchNorm1d(out_dim, affine=False))
    return nn.Sequential(*layers)


class SSLMethod(nn.Module):
    """Base of the self-supervised methods: ``forward(view1, view2) -> dict`` of losses and monitors.

    ``view1`` is the hallucinated branch. With a Hallucinator, the framework's loss is
    computed on the original pair and on the hallucinated pair and the two are averaged:
    ``loss = (1 - w) * loss_original + w * loss_hallucinated``, ``w = hallucination_weight``
    (0.5 = the paper's plain average; a training loop may change it, e.g. for a warm-up).
    Without one, ``loss = loss_original``.

    Subclasses call :meth:`_set_hallucinator` with the feature size the Hallucinator works on,
    and :meth:`_check_views`, :meth:`_features` and :meth:`_output` in ``forward``.

    ``extrapolation_modes``: the Hallucinator's extrapolation modes the method can train with, read by the
    constructor and by the config's validation (``hallucinator.engine.config.validate``), so an unsupported
    one is refused before training, not at step 0.
    """

    extrapolation_modes: ClassVar[tuple[str, ...]] = EXTRAPOLATION_MODES
    loss_forms: ClassVar[tuple[str, ...]] = ("average",)
    """How the original and the hallucinated pair make the loss: ``average`` (the paper's text) and, where
    the authors' code concatenates the two pairs into one loss and that is meaningful, ``concat``."""

    def __init__(self, backbone: nn.Module, hallucination_weight: float = 0.5) -> None:
        super().__init__()
        num_features = getattr(backbone, "num_features", None)
        if not isinstance(num_features, int) or num_features <= 0:
            raise ValueError(
                f"the backbone needs an integer `num_features` attribute (its output feature size), got {num_features!r}; "
                "build it with hallucinator.backbones.build or set backbone.num_features"
            )
        if not 0.0 <= hallucination_weight <= 1.0:
            raise ValueError(
                f"hallucination_weight must be in [0, 1] (0.5 = the paper's average), got {hallucination_weight}"
            )
        self.backbone = backbone
        self.num_features = num_features
        self.hallucination_weight = float(hallucination_weight)
        self.hallucinator: Hallucinator | None = None

    def _set_hallucinator(self, hallucinator: HallucinatorChoice, dim: int) -> None:
        """``True`` builds the paper's Hallucinator for ``dim`` features, a factory is called with ``dim``;
        a given one must match ``dim``."""
        if hallucinator is True:
            hallucinator = Hallucinator(dim)
        elif hallucinator is False:
            hallucinator = None
        elif callable(hallucinator) and not isinstance(hallucinator, Hallucinator):  # a module is callable too
            hallucinator = hallucinator(dim)
        if isinstance(hallucinator, Hallucinator) and hallucinator.dim != dim:
            raise ValueError(
                f"this {type(self).__name__} hallucinates {dim}-d features but the Hallucinator was built with "
                f"dim={hallucinator.dim}; build it with Hallucinator(dim={dim}, ...)"
            )
        elif hallucinator is not None and not isinstance(hallucinator, Hallucinator):
            raise ValueError(
                "hallucinator must be True, False, None, a Hallucinator or a factory of one, "
                f"got {type(hallucinator).__name__}"
            )
        if hallucinator is not None and hallucinator.extrapolation_mode not in self.extrapolation_modes:
            raise ValueError(unsupported_extrapolation(type(self).__name__, hallucinator.extrapolation_mode))
        self.hallucinator = hallucinator

    @staticmethod
    def _check_views(view1: torch.Tensor, view2: torch.Tensor) -> None:
        if view1.shape != view2.shape:
            raise ValueError(
                f"the two views must have the same shape, got {tuple(view1.shape)} and {tuple(view2.shape)}; "
                "crop both views to the same image size"
            )
        if view1.shape[0] < 2:
            raise ValueError(
                f"a batch of {view1.shape[0]} image is too small: BatchNorm needs at least 2 samples and the "
                "contrastive losses need other samples as negatives; use a batch size of at least 2 "
                "(drop_last=True avoids a short last batch)"
            )

    def _features(self, encoder: nn.Module, images: torch.Tensor) -> torch.Tensor:
        features = encoder(images)
        if features.ndim != 2 or features.shape[1] != self.num_features:
            raise ValueError(
                f"the backbone returned features of shape {tuple(features.shape)} but its num_features is "
                f"{self.num_features}, which the heads were built for; make the backbone return (N, num_features)"
            )
        return features

    def _output(
        self,
        loss_original: torch.Tensor,
        loss_hallucinated: torch.Tensor | None,
        q: torch.Tensor,
        k: torch.Tensor,
        hallucinated: HallucinatedPair | None = None,
        *,
        features: torch.Tensor | None = None,
        joint_loss: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """The loss dict; ``pos_similarity`` is the mean cosine of the original positive pair ``(q, k)``,
        ``hal_similarity`` that of the ``hallucinated`` pair the hallucinated loss scores (Fig. 4) and
        ``extrap_similarity`` that of its extrapolated ``q'`` with the same partner: ``hal < extrap``
        means ``H`` made the positive harder than the extrapolation did, ``hal > pos`` easier than the
        original. With a :class:`~hallucinator.hallucinator_variants.GuardedHallucinator`, its weighted
        penalty (``guard_penalty``) joins the hallucinated loss.

        ``features``: the backbone's features of ``view1``, returned detached as ``features`` (what an
        online linear probe trains on, at no extra forward pass).

        ``joint_loss``: ``loss_form="concat"``'s one loss over both pairs, trained on instead of the average;
        ``loss_original`` and ``loss_hallucinated`` are then monitors.
        """
        out = {"loss_original": loss_original, "pos_similarity": _mean_cosine(q, k)}
        guard = None
        if hallucinated is not None:
            out["hal_similarity"] = _mean_cosine(hallucinated.q_hat, hallucinated.partner)
            out["extrap_similarity"] = _mean_cosine(hallucinated.q_prime, hallucinated.partner)
            if isinstance(self.hallucinator, GuardedHallucinator):
                out["guard_penalty"] = self.hallucinator.guard_penalty(hallucinated, q)
                guard = self.hallucinator.guard_weight * out["guard_penalty"]
        if features is not None:
            out["features"] = features.detach()
        if joint_loss is not None:
            assert loss_hallucinated is not None and guard is None  # validated: no guard with concat
            out["loss"], out["loss_hallucinated"] = joint_loss, loss_hallucinated
        elif loss_hallucinated is None:
            out["loss"] = loss_original
        else:
            w = self.hallucination_weight
            # the guard is part of the hallucinated objective: a weight warm-up ramps it in with it
            hallucinated_objective = loss_hallucinated if guard is None else loss_hallucinated + guard
            out["loss"] = (1.0 - w) * loss_original + w * hallucinated_objective
            out["loss_hallucinated"] = loss_hallucinated
        return out


STOP_GRADIENT_TARGETS = ("asymmetric",)
"""``extrapolation_modes`` of the methods that score predictions against stop-gradient targets: a symmetric
extrapolation would also move the target, which the loss never sees move."""


LOSS_FORMS = ("average", "concat")


def check_loss_form(method: type[SSLMethod], loss_form: str, hallucinator: Hallucinator | None) -> None:
    """Raises ``ValueError`` naming what is wrong when ``method`` cannot combine its losses by ``loss_form``."""
    if loss_form not in LOSS_FORMS:
        raise ValueError(f"loss_form must be one of {list(LOSS_FORMS)}, got {loss_form!r}")
    if loss_form not in method.loss_forms:
        raise ValueError(
            f"{method.__name__} has no concatenated loss form (the authors' code has one for SimCLR and MoCo "
            "v1/v2 only); use loss_form='average'"
        )
    if loss_form == "concat" and isinstance(hallucinator, GuardedHallucinator):
        raise ValueError("the hardness guard weights the hallucinated loss, which concat does not have apart")


def unsupported_extrapolation(method: str, mode: str) -> str:
    """Why ``method`` cannot train with extrapolation ``mode`` (its ``extrapolation_modes`` lack it)."""
    return (
        f"{method} scores its predictions against stop-gradient targets, so a {mode} extrapolation would move "
        "nothing the loss sees; use extrapolation_mode='asymmetric'"
    )


def _mean_cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return F.cosine_similarity(a.detach(), b.detach(), dim=1).mean()
