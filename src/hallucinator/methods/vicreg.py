"""VICReg (Bardes, Ponce & LeCun 2022), "Variance-invariance-covariance regularization", with the Hallucinator."""

from __future__ import annotations

from torch import Tensor, nn

from hallucinator.losses import vicreg
from hallucinator.methods.base import HallucinatorChoice
from hallucinator.methods.families import EmbeddingPair
from hallucinator.methods.registry import register_method


@register_method("vicreg")
class VICReg(EmbeddingPair):
    """VICReg: invariance between the two views' embeddings, variance and decorrelation within each.

    Projector: ``proj_layers`` Linear layers (BN + ReLU between them) ``hidden_dim`` wide to
    ``dim``. Loss: :func:`hallucinator.losses.vicreg` of ``(z1, z2)`` over the global batch.

    Hallucinator: ``q`` = ``z1`` (view 1's embedding), ``k`` = ``z2``; ``loss_hallucinated =
    vicreg(H(z1, z2), z2)``: the hallucinated embedding must match ``z2`` and keep its own batch
    variance and decorrelation.

    Defaults are the public CIFAR recipe (solo-learn): a 3-layer 2048-2048-2048 projector, and the
    paper's coefficients 25 / 25 / 1.

    Example:
        >>> from hallucinator import backbones
        >>> model = VICReg(backbones.build("resnet18", cifar_stem=True))
        >>> model(view1, view2)["loss"].backward()
    """

    def __init__(
        self,
        backbone: nn.Module,
        hallucinator: HallucinatorChoice = True,
        dim: int = 2048,
        hidden_dim: int = 2048,
        proj_layers: int = 3,
        sim_coeff: float = 25.0,
        std_coeff: float = 25.0,
        cov_coeff: float = 1.0,
        hallucination_weight: float = 0.5,
    ) -> None:
        super().__init__(backbone, hallucinator, dim, hidden_dim, proj_layers, hallucination_weight)
        self.sim_coeff, self.std_coeff, self.cov_coeff = sim_coeff, std_coeff, cov_coeff

    def pair_loss(self, z1: Tensor, z2: Tensor) -> Tensor:
        return vicreg(z1, z2, self.sim_coeff, self.std_coeff, self.cov_coeff)
