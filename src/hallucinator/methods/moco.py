"""MoCo v1 / v2 (He et al. 2020; Chen et al. 2020) with the Hallucinator."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from hallucinator import distributed
from hallucinator.losses import info_nce
from hallucinator.methods.base import HallucinatorChoice, SSLMethod, check_loss_form, mlp
from hallucinator.methods.memory import MomentumTarget, check_queue_batch, enqueue, momentum_copy
from hallucinator.methods.registry import register_method


@register_method("mocov2", augmentation="mocov2", version=2)
@register_method("mocov1", augmentation="mocov1", version=1)
class MoCo(SSLMethod, MomentumTarget):
    """Momentum Contrast: a query encoder, a momentum key encoder and a queue of negative keys.

    The query ``q`` (un-normalised projection of ``view1``) and the normalised momentum key
    ``k`` of ``view2`` are the positive pair. The Hallucinator makes ``q_hat = H(q, k)``,
    which is normalised and scored against ``k`` and the queue exactly like ``q``; the two
    InfoNCE losses are averaged (``loss_form="average"``, the paper's text) and each key is enqueued once.
    ``loss_form="concat"`` is the authors' code: one InfoNCE over the ``2N`` rows ``[q; q_hat]`` against
    ``[k; k]``, and ``[k; k]`` enqueued, every key twice (the queue must then hold a multiple of ``2N``).

    In training mode ``forward`` also enqueues the keys; the training loop updates the momentum encoder with
    :meth:`update_target` before each ``forward`` (a :class:`~hallucinator.methods.memory.MomentumTarget` of
    constant momentum ``m``).
    Shuffle-BN: under DDP the keys' batch is shuffled across processes; on a single process
    the shuffled key batch is encoded in ``shuffle_bn_splits`` groups, each with its own
    BatchNorm statistics, which is what ``shuffle_bn_splits`` GPUs would compute.

    Args:
        backbone: online encoder with a ``num_features`` attribute.
        version: 1 (linear head, T 0.07) or 2 (MLP head, T 0.2).
        hallucinator: ``True`` (the paper's), ``False``/``None`` (off), a configured :class:`Hallucinator` or a factory ``dim -> Hallucinator``.
        dim: projection dimension.
        queue_size: number of queued negative keys ``K``; a multiple of the global batch size.
        momentum: momentum ``m`` of the key encoder.
        temperature: softmax temperature; ``None`` = 0.07 for v1, 0.2 for v2.
        mlp: MLP projection head; ``None`` = False for v1, True for v2.
        shuffle_bn_splits: BatchNorm groups of the key batch on a single process (1 = none).
        hallucination_weight: ``w`` in ``(1 - w) * loss_original + w * loss_hallucinated``.
        loss_form: ``average`` (the paper's) or ``concat`` (the authors' code; ``hallucination_weight`` unused).

    Example:
        >>> from hallucinator import backbones
        >>> moco = MoCo(backbones.build("resnet18", cifar_stem=True), version=2)
        >>> moco.update_target(moco.momentum)  # each training step, before the forward
        >>> out = moco(view1, view2)  # view1 is the hallucinated branch
        >>> out["loss"].backward()
    """

    queue: torch.Tensor  # registered buffers
    queue_ptr: torch.Tensor
    loss_forms = ("average", "concat")

    def __init__(
        self,
        backbone: nn.Module,
        version: int = 2,
        hallucinator: HallucinatorChoice = True,
        dim: int = 128,
        queue_size: int = 65536,
        momentum: float = 0.999,
        temperature: float | None = None,
        mlp: bool | None = None,
        shuffle_bn_splits: int = 8,
        hallucination_weight: float = 0.5,
        loss_form: str = "average",
    ) -> None:
        super().__init__(backbone, hallucination_weight)
        if version not in (1, 2):
            raise ValueError(f"version must be 1 (MoCo v1) or 2 (MoCo v2), got {version}")
        if queue_size <= 0:
            raise ValueError(f"queue_size must be positive, got {queue_size}")
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"momentum must be in [0, 1] (paper: 0.999), got {momentum}")
        if shuffle_bn_splits < 1:
            raise ValueError(
                f"shuffle_bn_splits must be >= 1 (1 = no single-process shuffle-BN), got {shuffle_bn_splits}"
            )
        self.version = version
        self.temperature = (0.07 if version == 1 else 0.2) if temperature is None else temperature
        self.momentum = self.final_momentum = momentum  # MoCo's m is constant
        self.shuffle_bn_splits = shuffle_bn_splits
        self.mlp = (version == 2) if mlp is None else mlp
        # MoCo v2's head is fc-ReLU-fc with the hidden width of the backbone's features, no BatchNorm
        self.projector = _head(self.num_features, dim, self.mlp)
        self.momentum_backbone = momentum_copy(backbone)
        self.momentum_projector = momentum_copy(self.projector)
        self.register_buffer("queue", F.normalize(torch.randn(queue_size, dim), dim=1))
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))
        self._set_hallucinator(hallucinator, dim)
        check_loss_form(type(self), loss_form, self.hallucinator)
        self.loss_form = loss_form

    def momentum_pairs(self) -> tuple[list[nn.Module], list[nn.Module]]:
        return [self.backbone, self.projector], [self.momentum_backbone, self.momentum_projector]

    def _key_encoder(self, images: torch.Tensor) -> torch.Tensor:
        return self.momentum_projector(self._features(self.momentum_backbone, images))

    @torch.no_grad()
    def _keys(self, view2: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return F.normalize(self._key_encoder(view2), dim=1)
        images, unshuffle = distributed.batch_shuffle(view2)
        splits = self.shuffle_bn_splits if distributed.world_size() == 1 else 1
        if splits == 1:
            k = self._key_encoder(images)
        else:
            permutation = torch.randperm(images.shape[0], device=images.device)
            k = torch.cat([self._key_encoder(chunk) for chunk in images[permutation].chunk(splits)])
            k = k[torch.argsort(permutation)]
        return F.normalize(distributed.batch_unshuffle(k, unshuffle), dim=1)

    def _enqueue(self, k: torch.Tensor) -> None:
        enqueue(self.queue, self.queue_ptr, k)

    @property
    def _concat(self) -> bool:
        return self.loss_form == "concat" and self.hallucinator is not None

    def _check_training_batch(self, batch: int) -> None:
        check_queue_batch(self.queue.shape[0], 2 * batch if self._concat else batch)
        splits = self.shuffle_bn_splits if distributed.world_size() == 1 else 1
        if batch < 2 * splits:
            raise ValueError(
                f"a batch of {batch} cannot be split into shuffle_bn_splits={splits} BatchNorm groups of at least 2 "
                f"keys; use a batch size of at least {2 * splits} or a smaller shuffle_bn_splits"
            )

    def forward(self, view1: torch.Tensor, view2: torch.Tensor) -> dict[str, torch.Tensor]:
        self._check_views(view1, view2)
        if self.training:
            self._check_training_batch(view1.shape[0])
        features = self._features(self.backbone, view1)
        q = self.projector(features)
        k = self._keys(view2)
        # a copy: the enqueue below must not modify the negatives autograd saved for backward
        queue = self.queue.clone()
        loss_hallucinated = hallucinated = joint = None
        if self.hallucinator is not None:
            hallucinated = self.hallucinator.pair(q, k)
        if self._concat:
            assert hallucinated is not None
            q_hat, partner = hallucinated.q_hat, hallucinated.partner
            joint = info_nce(torch.cat([q, q_hat]), torch.cat([k, partner]), queue, self.temperature)
            with torch.no_grad():  # the two pairs' own losses, as monitors
                loss_original = info_nce(q, k, queue, self.temperature)
                loss_hallucinated = info_nce(q_hat, partner, queue, self.temperature)
        else:
            loss_original = info_nce(q, k, queue, self.temperature)
            if hallucinated is not None:
                loss_hallucinated = info_nce(hallucinated.q_hat, hallucinated.partner, queue, self.temperature)
        if self.training:
            self._enqueue(torch.cat([k, k]) if self._concat else k)
        return self._output(loss_original, loss_hallucinated, q, k, hallucinated, features=features, joint_loss=joint)


def _head(in_dim: int, dim: int, use_mlp: bool) -> nn.Sequential:
    if use_mlp:
        return mlp(in_dim, in_dim, dim, num_layers=2, batch_norm=False)
    return mlp(in_dim, in_dim, dim, num_layers=1)
