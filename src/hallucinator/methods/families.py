"""Two skeletons the newer methods share, so that each method file holds only its heads and its loss.

- :class:`EmbeddingPair` (Barlow Twins, VICReg): one projector, a loss on the two views'
  embeddings ``(z1, z2)``; the Hallucinator replaces ``z1`` by ``H(z1, z2)``.
- :class:`MomentumPredictor` (BYOL, MoCo v3): online projector + predictor against a momentum
  target encoder, symmetrised over the two views; the Hallucinator replaces each prediction
  ``p`` by ``H(p, t)``, ``t`` being its target (both directions in one call).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from hallucinator.methods.base import STOP_GRADIENT_TARGETS, HallucinatorChoice, SSLMethod, mlp
from hallucinator.methods.memory import MomentumTarget, check_momentum_schedule, momentum_copy


class EmbeddingPair(SSLMethod):
    """A projector ``num_features -> hidden_dim -> ... -> dim`` and :meth:`pair_loss` on ``(z1, z2)``.

    Subclasses define ``pair_loss(z1, z2)``; ``loss_hallucinated = pair_loss(H(z1, z2), z2)``.
    """

    def __init__(
        self,
        backbone: nn.Module,
        hallucinator: HallucinatorChoice,
        dim: int,
        hidden_dim: int,
        proj_layers: int,
        hallucination_weight: float,
    ) -> None:
        super().__init__(backbone, hallucination_weight)
        if proj_layers < 1:
            raise ValueError(f"proj_layers must be >= 1, got {proj_layers}")
        self.projector = mlp(self.num_features, hidden_dim, dim, num_layers=proj_layers)
        self._set_hallucinator(hallucinator, dim)

    def pair_loss(self, z1: Tensor, z2: Tensor) -> Tensor:
        raise NotImplementedError

    def forward(self, view1: Tensor, view2: Tensor) -> dict[str, Tensor]:
        self._check_views(view1, view2)
        features = self._features(self.backbone, view1)
        z1, z2 = self.projector(features), self.projector(self._features(self.backbone, view2))
        loss_original = self.pair_loss(z1, z2)
        loss_hallucinated = hallucinated = None
        if self.hallucinator is not None:
            hallucinated = self.hallucinator.pair(z1, z2)
            loss_hallucinated = self.pair_loss(hallucinated.q_hat, hallucinated.partner)
        return self._output(loss_original, loss_hallucinated, z1, z2, hallucinated, features=features)


class MomentumPredictor(SSLMethod, MomentumTarget):
    """Online ``predictor(projector(backbone(x)))`` against the momentum target ``projector'(backbone'(x'))``.

    Projector ``num_features -> hidden_dim -> dim`` and predictor ``dim -> pred_hidden_dim -> dim``,
    each Linear-BN-ReLU-Linear (``projector_last_bn``: an affine-free BatchNorm on the projection,
    MoCo v3's head; ``proj_layers=3``: one more hidden Linear-BN-ReLU, MoCo v3's ViT head).

    The target is an exponential moving average of the online backbone and projector (a
    :class:`~hallucinator.methods.memory.MomentumTarget`): the training loop calls :meth:`update_target`
    before each ``forward`` with BYOL's momentum schedule from ``momentum`` to ``final_momentum`` over
    training (``final_momentum = momentum`` keeps it constant). Subclasses define ``pair_loss(p, t)`` for
    one direction; the loss is ``pair_loss(p1, t2) + pair_loss(p2, t1)``.
    """

    extrapolation_modes = STOP_GRADIENT_TARGETS

    def __init__(
        self,
        backbone: nn.Module,
        hallucinator: HallucinatorChoice,
        dim: int,
        hidden_dim: int,
        pred_hidden_dim: int,
        projector_last_bn: bool,
        momentum: float,
        final_momentum: float,
        hallucination_weight: float,
        proj_layers: int = 2,
    ) -> None:
        super().__init__(backbone, hallucination_weight)
        if proj_layers < 1:
            raise ValueError(f"proj_layers must be >= 1, got {proj_layers}")
        check_momentum_schedule(momentum, final_momentum)
        self.momentum, self.final_momentum = momentum, final_momentum
        self.projector = mlp(self.num_features, hidden_dim, dim, num_layers=proj_layers, last_bn=projector_last_bn)
        self.predictor = mlp(dim, pred_hidden_dim, dim, num_layers=2)
        self.momentum_backbone = momentum_copy(backbone)
        self.momentum_projector = momentum_copy(self.projector)
        self._set_hallucinator(hallucinator, dim)

    def momentum_pairs(self) -> tuple[list[nn.Module], list[nn.Module]]:
        return [self.backbone, self.projector], [self.momentum_backbone, self.momentum_projector]

    def pair_loss(self, p: Tensor, t: Tensor) -> Tensor:
        raise NotImplementedError

    @torch.no_grad()
    def _targets(self, images: Tensor) -> Tensor:
        return self.momentum_projector(self._features(self.momentum_backbone, images))

    def forward(self, view1: Tensor, view2: Tensor) -> dict[str, Tensor]:
        self._check_views(view1, view2)
        features = self._features(self.backbone, view1)
        p1 = self.predictor(self.projector(features))
        p2 = self.predictor(self.projector(self._features(self.backbone, view2)))
        t1, t2 = self._targets(view1), self._targets(view2)
        loss_original = self.pair_loss(p1, t2) + self.pair_loss(p2, t1)
        loss_hallucinated = hallucinated = None
        targets = torch.cat([t2, t1])
        if self.hallucinator is not None:
            hallucinated = self.hallucinator.pair(torch.cat([p1, p2]), targets)
            p1_hat, p2_hat = hallucinated.q_hat.chunk(2)
            loss_hallucinated = self.pair_loss(p1_hat, t2) + self.pair_loss(p2_hat, t1)
        return self._output(
            loss_original, loss_hallucinated, torch.cat([p1, p2]), targets, hallucinated, features=features
        )
