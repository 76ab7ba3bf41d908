"""NNCLR (Dwibedi et al. 2021), "With a little help from my friends: nearest-neighbor contrastive learning", with the Hallucinator."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hallucinator.losses import in_batch_info_nce
from hallucinator.methods.base import STOP_GRADIENT_TARGETS, HallucinatorChoice, SSLMethod, mlp
from hallucinator.methods.memory import check_queue_batch, enqueue
from hallucinator.methods.registry import register_method


@register_method("nnclr")
class NNCLR(SSLMethod):
    """NNCLR: the nearest neighbour of one view's embedding, from a support queue, is the positive of the other's prediction.

    ``z = projector(backbone(x))`` (3 layers, BatchNorm on the output), ``p = predictor(z)``.
    ``NN(z)`` is the most cosine-similar entry of the support set, a queue of the normalised
    ``z1`` of past batches (all processes' batches under DDP). Loss:
    ``(L(NN(z1), p2) + L(NN(z2), p1)) / 2`` with ``L`` the InfoNCE of each neighbour against
    the predictions of the (global) batch, temperature ``temperature``.

    Hallucinator: ``q`` = the query (the prediction ``p``), ``k`` = its positive, the
    neighbour ``NN(z)`` of the other view; both directions are hallucinated
    (``p2_hat = H(p2, NN(z1))``, ``p1_hat = H(p1, NN(z2))``) and scored by the same loss.

    In training mode ``forward`` also enqueues this batch's ``z1`` (after the loss). Defaults
    are the public CIFAR recipe (solo-learn): projector 2048 wide to 256-d, predictor 4096
    wide, temperature 0.2, a support set of 65,536.

    Example:
        >>> from hallucinator import backbones
        >>> nnclr = NNCLR(backbones.build("resnet18", cifar_stem=True))
        >>> nnclr(view1, view2)["loss"].backward()
    """

    extrapolation_modes = STOP_GRADIENT_TARGETS

    queue: Tensor  # registered buffers
    queue_ptr: Tensor

    def __init__(
        self,
        backbone: nn.Module,
        hallucinator: HallucinatorChoice = True,
        dim: int = 256,
        hidden_dim: int = 2048,
        pred_hidden_dim: int = 4096,
        temperature: float = 0.2,
        queue_size: int = 65536,
        hallucination_weight: float = 0.5,
    ) -> None:
        super().__init__(backbone, hallucination_weight)
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        if queue_size <= 0:
            raise ValueError(f"queue_size must be positive, got {queue_size}")
        self.temperature = temperature
        self.projector = mlp(self.num_features, hidden_dim, dim, num_layers=3, last_bn=True)
        self.predictor = mlp(dim, pred_hidden_dim, dim, num_layers=2)
        # the support set: normalised embeddings, random until the first batches replace them
        self.register_buffer("queue", F.normalize(torch.randn(queue_size, dim), dim=1))
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))
        self._set_hallucinator(hallucinator, dim)

    @torch.no_grad()
    def nearest_neighbour(self, z: Tensor) -> Tensor:
        """The support-set entry most cosine-similar to each row of ``z`` (``z`` normalised)."""
        return self.queue[(z @ self.queue.T).argmax(dim=1)]

    def forward(self, view1: Tensor, view2: Tensor) -> dict[str, Tensor]:
        self._check_views(view1, view2)
        if self.training:
            check_queue_batch(self.queue.shape[0], view1.shape[0])
        features = self._features(self.backbone, view1)
        z1, z2 = self.projector(features), self.projector(self._features(self.backbone, view2))
        p1, p2 = self.predictor(z1), self.predictor(z2)
        z1, z2 = F.normalize(z1.detach(), dim=1), F.normalize(z2.detach(), dim=1)
        nn1, nn2 = self.nearest_neighbour(z1), self.nearest_neighbour(z2)
        loss_original = (
            in_batch_info_nce(nn1, p2, self.temperature) + in_batch_info_nce(nn2, p1, self.temperature)
        ) / 2
        loss_hallucinated = hallucinated = None
        neighbours = torch.cat([nn1, nn2])
        if self.hallucinator is not None:
            hallucinated = self.hallucinator.pair(torch.cat([p2, p1]), neighbours)
            p2_hat, p1_hat = hallucinated.q_hat.chunk(2)
            loss_hallucinated = (
                in_batch_info_nce(nn1, p2_hat, self.temperature) + in_batch_info_nce(nn2, p1_hat, self.temperature)
            ) / 2
        if self.training:
            enqueue(self.queue, self.queue_ptr, z1)
        return self._output(
            loss_original, loss_hallucinated, torch.cat([p2, p1]), neighbours, hallucinated, features=features
        )
