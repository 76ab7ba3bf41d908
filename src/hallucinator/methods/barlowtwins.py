"""Barlow Twins (Zbontar et al. 2021), "Self-supervised learning via redundancy reduction", with the Hallucinator."""

from __future__ import annotations

from torch import Tensor, nn

from hallucinator.losses import barlow_twins
from hallucinator.methods.base import HallucinatorChoice
from hallucinator.methods.families import EmbeddingPair
from hallucinator.methods.registry import register_method


@register_method("barlowtwins")
class BarlowTwins(EmbeddingPair):
    """Barlow Twins: the cross-correlation of the two views' embeddings is pushed to the identity.

    Projector: ``proj_layers`` Linear layers (BN + ReLU between them) ``hidden_dim`` wide to
    ``dim``. Loss: :func:`hallucinator.losses.barlow_twins` of ``(z1, z2)`` with ``lambd``
    weighting the off-diagonal terms, times ``scale_loss``, over the global batch.

    Hallucinator: ``q`` = ``z1`` (view 1's embedding), ``k`` = ``z2``; ``loss_hallucinated =
    scale_loss * barlow_twins(H(z1, z2), z2)``.

    Defaults are the public CIFAR recipe (solo-learn): a 3-layer 2048-2048-2048 projector,
    lambda 0.0051 (the paper's), loss scale 0.1.

    Example:
        >>> from hallucinator import backbones
        >>> model = BarlowTwins(backbones.build("resnet18", cifar_stem=True))
        >>> model(view1, view2)["loss"].backward()
    """

    def __init__(
        self,
        backbone: nn.Module,
        hallucinator: HallucinatorChoice = True,
        dim: int = 2048,
        hidden_dim: int = 2048,
        proj_layers: int = 3,
        lambd: float = 0.0051,
        scale_loss: float = 0.1,
        hallucination_weight: float = 0.5,
    ) -> None:
        super().__init__(backbone, hallucinator, dim, hidden_dim, proj_layers, hallucination_weight)
        self.lambd, self.scale_loss = lambd, scale_loss

    def pair_loss(self, z1: Tensor, z2: Tensor) -> Tensor:
        return self.scale_loss * barlow_twins(z1, z2, self.lambd)
