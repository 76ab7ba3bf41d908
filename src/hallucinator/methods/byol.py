"""BYOL (Grill et al. 2020), "Bootstrap your own latent", with the Hallucinator."""

from __future__ import annotations

from torch import Tensor, nn

from hallucinator.losses import negative_cosine
from hallucinator.methods.base import HallucinatorChoice
from hallucinator.methods.families import MomentumPredictor
from hallucinator.methods.registry import register_method


@register_method("byol")
class BYOL(MomentumPredictor):
    """BYOL: an online network predicts the target network's projection of the other view.

    Online: backbone -> projector (Linear-BN-ReLU-Linear, ``hidden_dim`` -> ``dim``) ->
    predictor (same shape). Target: an EMA of the online backbone and projector whose
    momentum rises from ``momentum`` to ``final_momentum`` on a cosine schedule. Loss: the
    normalised MSE ``2 - 2 cos(p, t)`` of each prediction and the other view's target,
    summed over the two directions (the paper's symmetrised loss).

    Hallucinator: ``q`` = the online prediction ``p``, ``k`` = its target ``t``; both
    directions are hallucinated (``p1_hat = H(p1, t2)``, ``p2_hat = H(p2, t1)``) and scored by the
    same loss.

    Defaults are the public CIFAR recipe (solo-learn): 4096-wide heads, 256-d output,
    momentum 0.99 -> 1.0.

    Example:
        >>> from hallucinator import backbones
        >>> byol = BYOL(backbones.build("resnet18", cifar_stem=True))
        >>> byol(view1, view2)["loss"].backward()
    """

    def __init__(
        self,
        backbone: nn.Module,
        hallucinator: HallucinatorChoice = True,
        dim: int = 256,
        hidden_dim: int = 4096,
        pred_hidden_dim: int = 4096,
        momentum: float = 0.99,
        final_momentum: float = 1.0,
        hallucination_weight: float = 0.5,
    ) -> None:
        super().__init__(
            backbone,
            hallucinator,
            dim,
            hidden_dim,
            pred_hidden_dim,
            projector_last_bn=False,
            momentum=momentum,
            final_momentum=final_momentum,
            hallucination_weight=hallucination_weight,
        )

    def pair_loss(self, p: Tensor, t: Tensor) -> Tensor:
        # ||p/|p| - t/|t|||^2 = 2 - 2 cos(p, t); the target takes no gradient
        return 2 + 2 * negative_cosine(p, t)
