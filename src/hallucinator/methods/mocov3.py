"""MoCo v3 (Chen, Xie & He 2021), "An empirical study of training self-supervised vision transformers", with the Hallucinator."""

from __future__ import annotations

from torch import Tensor, nn

from hallucinator.losses import in_batch_info_nce
from hallucinator.methods.base import HallucinatorChoice
from hallucinator.methods.families import MomentumPredictor
from hallucinator.methods.registry import register_method


@register_method("mocov3")
class MoCoV3(MomentumPredictor):
    """MoCo v3: the query (online prediction) of one view against the momentum keys of the other, in-batch negatives.

    Online: backbone -> projector (Linear-BN-ReLU-Linear-BN, ``hidden_dim`` -> ``dim``; ``proj_layers=3``
    adds a hidden Linear-BN-ReLU, the paper's ViT head) ->
    predictor (Linear-BN-ReLU-Linear). Keys: the momentum backbone and projector, momentum
    rising from ``momentum`` to ``final_momentum`` on a cosine schedule. No queue: the keys of
    the (global) batch are the negatives. Loss ``ctr(q1, k2) + ctr(q2, k1)``, ``ctr`` the
    InfoNCE scaled by ``2 * temperature`` as in the paper's pseudo-code.

    Hallucinator: ``q`` = the online prediction, ``k`` = its positive momentum key; both
    directions are hallucinated (``q1_hat = H(q1, k2)``, ``q2_hat = H(q2, k1)``).

    Defaults are the public CIFAR recipe (solo-learn): 4096-wide heads, 256-d output,
    temperature 0.2, momentum 0.99 -> 1.0.

    Example:
        >>> from hallucinator import backbones
        >>> mocov3 = MoCoV3(backbones.build("resnet18", cifar_stem=True))
        >>> mocov3(view1, view2)["loss"].backward()
    """

    def __init__(
        self,
        backbone: nn.Module,
        hallucinator: HallucinatorChoice = True,
        dim: int = 256,
        hidden_dim: int = 4096,
        pred_hidden_dim: int = 4096,
        temperature: float = 0.2,
        momentum: float = 0.99,
        final_momentum: float = 1.0,
        hallucination_weight: float = 0.5,
        proj_layers: int = 2,
    ) -> None:
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        super().__init__(
            backbone,
            hallucinator,
            dim,
            hidden_dim,
            pred_hidden_dim,
            projector_last_bn=True,
            momentum=momentum,
            final_momentum=final_momentum,
            hallucination_weight=hallucination_weight,
            proj_layers=proj_layers,
        )
        self.temperature = temperature

    def pair_loss(self, p: Tensor, t: Tensor) -> Tensor:
        return in_batch_info_nce(p, t, self.temperature) * (2 * self.temperature)
