"""SimSiam (Chen & He 2021) with the Hallucinator."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from hallucinator.losses import negative_cosine
from hallucinator.methods.base import STOP_GRADIENT_TARGETS, HallucinatorChoice, SSLMethod, mlp
from hallucinator.methods.registry import register_method


@register_method("simsiam", augmentation="simsiam")
class SimSiam(SSLMethod):
    """SimSiam: a predictor and a stop-gradient instead of negatives; symmetric loss.

    ``L = D(p1, z2) / 2 + D(p2, z1) / 2`` with ``D(p, z) = -cos(p, stopgrad(z))``. The
    Hallucinator acts on the predictions of both directions, the other view's prediction
    being the extrapolation partner: ``p1_hat = H(p1, p2)``, ``p2_hat = H(p2, p1)``, scored
    against the same stop-gradient targets ``z2``, ``z1``. Both directions go through ``H``
    in one call (one ``lam`` per step when ``lam`` is drawn per batch).

    Defaults are SimSiam's CIFAR setting: a 2-layer projector with BatchNorm on its 2048-d
    output and a 2048 -> 512 -> 2048 predictor. The Hallucinator therefore works on 2048-d
    features (its hidden layers are 4096 wide).

    Args:
        backbone: encoder with a ``num_features`` attribute.
        hallucinator: ``True`` (the paper's), ``False``/``None`` (off), a configured :class:`Hallucinator` or a factory ``dim -> Hallucinator``.
        dim: projector output and predictor output dimension.
        pred_hidden_dim: predictor bottleneck width.
        proj_layers: projector depth (2 on CIFAR, 3 on ImageNet).
        hallucination_weight: ``w`` in ``(1 - w) * loss_original + w * loss_hallucinated``.

    Example:
        >>> from hallucinator import backbones
        >>> simsiam = SimSiam(backbones.build("resnet18", cifar_stem=True))
        >>> simsiam(view1, view2)["loss"].backward()
    """

    extrapolation_modes = STOP_GRADIENT_TARGETS

    def __init__(
        self,
        backbone: nn.Module,
        hallucinator: HallucinatorChoice = True,
        dim: int = 2048,
        pred_hidden_dim: int = 512,
        proj_layers: int = 2,
        hallucination_weight: float = 0.5,
    ) -> None:
        super().__init__(backbone, hallucination_weight)
        if proj_layers < 1:
            raise ValueError(f"proj_layers must be >= 1, got {proj_layers}")
        self.projector = mlp(self.num_features, dim, dim, num_layers=proj_layers, last_bn=True)
        self.predictor = mlp(dim, pred_hidden_dim, dim, num_layers=2)
        self._set_hallucinator(hallucinator, dim)

    def forward(self, view1: Tensor, view2: Tensor) -> dict[str, Tensor]:
        self._check_views(view1, view2)
        features = self._features(self.backbone, view1)
        z1 = self.projector(features)
        z2 = self.projector(self._features(self.backbone, view2))
        p1, p2 = self.predictor(z1), self.predictor(z2)
        loss_original = (negative_cosine(p1, z2) + negative_cosine(p2, z1)) / 2
        loss_hallucinated = hallucinated = None
        targets = torch.cat([z2, z1])
        if self.hallucinator is not None:
            # extrapolated towards the other view's prediction, but scored against the stop-gradient targets
            hallucinated = self.hallucinator.pair(torch.cat([p1, p2]), torch.cat([p2, p1]))._replace(partner=targets)
            p1_hat, p2_hat = hallucinated.q_hat.chunk(2)
            loss_hallucinated = (negative_cosine(p1_hat, z2) + negative_cosine(p2_hat, z1)) / 2
        return self._output(
            loss_original, loss_hallucinated, torch.cat([p1, p2]), targets, hallucinated, features=features
        )
