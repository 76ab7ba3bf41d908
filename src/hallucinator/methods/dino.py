"""DINO (Caron et al. 2021), "Emerging properties in self-supervised vision transformers", with the Hallucinator."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import weight_norm

from hallucinator import distributed
from hallucinator.losses import dino, soft_cross_entropy
from hallucinator.methods.base import STOP_GRADIENT_TARGETS, HallucinatorChoice, SSLMethod
from hallucinator.methods.memory import MomentumTarget, check_momentum_schedule, momentum_copy
from hallucinator.methods.registry import register_method


class DINOHead(nn.Module):
    """DINO's projection head: an MLP (Linear-GELU, no BatchNorm) to a ``bottleneck_dim`` embedding, L2-normalised,
    then a weight-normalised Linear layer to ``out_dim`` logits (the prototypes, no bias).

    ``norm_last_layer``: the weight norm's magnitude ``g`` stays fixed at 1, so the logits are cosines to
    the prototypes (DINO's choice for ViTs; more stable). ``forward`` returns ``(embedding, logits)``:
    the normalised bottleneck embedding is what the Hallucinator works on.

    Example:
        >>> head = DINOHead(192, out_dim=4096)
        >>> z, logits = head(torch.randn(8, 192))  # (8, 256) unit vectors, (8, 4096)
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int = 65536,
        hidden_dim: int = 2048,
        bottleneck_dim: int = 256,
        num_layers: int = 3,
        norm_last_layer: bool = True,
    ) -> None:
        super().__init__()
        if num_layers < 1 or out_dim < 1:
            raise ValueError(f"need num_layers >= 1 and out_dim >= 1, got {num_layers} and {out_dim}")
        widths = [in_dim] + [hidden_dim] * (num_layers - 1) + [bottleneck_dim]
        layers: list[nn.Module] = []
        for i in range(num_layers):
            layers.append(nn.Linear(widths[i], widths[i + 1]))
            if i < num_layers - 1:
                layers.append(nn.GELU())
        self.mlp = nn.Sequential(*layers)
        for layer in self.mlp:
            if isinstance(layer, nn.Linear):  # DINO's initialisation
                nn.init.trunc_normal_(layer.weight, std=0.02)
                nn.init.zeros_(layer.bias)
        self.last_layer = weight_norm(nn.Linear(bottleneck_dim, out_dim, bias=False))
        magnitude = self.last_layer.parametrizations.weight.original0
        with torch.no_grad():
            magnitude.fill_(1.0)
        magnitude.requires_grad_(not norm_last_layer)

    def logits(self, embedding: Tensor) -> Tensor:
        """The prototype logits of an embedding of the bottleneck space (normalised first, as the head does)."""
        return self.last_layer(F.normalize(embedding, dim=-1))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        embedding = F.normalize(self.mlp(x), dim=-1)
        return embedding, self.last_layer(embedding)


@register_method("dino", multi_crop=True)
class DINO(SSLMethod, MomentumTarget):
    """DINO: a student matches the centred, sharpened output of its momentum teacher across crops.

    Student: backbone -> :class:`DINOHead` on every crop (the two global views, then the local
    ones). Teacher: an EMA of the student's backbone and head (a
    :class:`~hallucinator.methods.memory.MomentumTarget`, momentum ``momentum`` -> ``final_momentum`` on a
    cosine over training), on the global views only. Teacher probabilities ``softmax((t - center) / T_t)``,
    with ``T_t = teacher_temp`` (:meth:`teacher_temperature_at`: rising linearly from
    ``warmup_teacher_temperature`` to ``teacher_temperature`` over the first ``teacher_temp_warmup`` of
    training; the training loop sets it each step);
    student log-probabilities ``log_softmax(s / student_temperature)``. The loss is the cross-entropy
    averaged over every (teacher global view, other student view) pair (:func:`hallucinator.losses.dino`).
    ``center`` is an EMA (``center_momentum``) of the teacher's mean logits over the global batch of
    all processes, updated after each training-mode ``forward``.

    Hallucinator: ``q`` = the student's normalised bottleneck embedding of global view 1 (view 1 is the
    hallucinated branch, with the center-suppressed crop), ``k`` = the teacher's of global view 2, its
    positive. ``q_hat = H(q, k)`` goes through the student's last layer (normalised, as the head does)
    and is scored by the same cross-entropy against the teacher's probabilities for view 2. The bottleneck
    is where the student's and teacher's embeddings are comparable features (the logits are distributions
    whose centre and temperature change over training). Only view 1 is hallucinated, as in the paper.

    Monitors (DINO's collapse study, Sec. 5.3): ``teacher_entropy``, the mean entropy of the teacher's
    distributions (0: one prototype takes everything; ``log out_dim``: uniform), and
    ``teacher_student_kl``, the mean KL divergence of the student's from the teacher's over the loss's
    pairs (``loss_original - teacher_entropy``; 0 when the student only copies a collapsed teacher).

    Example:
        >>> from hallucinator import backbones
        >>> dino_method = DINO(backbones.build("vit_tiny", image_size=32), out_dim=4096)
        >>> dino_method.teacher_temp = dino_method.teacher_temperature_at(progress)  # each training step
        >>> dino_method.update_target(cosine_momentum(0.996, progress))  # each training step, before the forward
        >>> out = dino_method(global1, global2, local1, local2)  # local crops may be smaller
        >>> out["loss"].backward()
    """

    extrapolation_modes = STOP_GRADIENT_TARGETS

    center: Tensor

    def __init__(
        self,
        backbone: nn.Module,
        hallucinator: HallucinatorChoice = True,
        out_dim: int = 65536,
        hidden_dim: int = 2048,
        bottleneck_dim: int = 256,
        norm_last_layer: bool = True,
        student_temperature: float = 0.1,
        teacher_temperature: float = 0.07,
        warmup_teacher_temperature: float = 0.04,
        teacher_temp_warmup: float = 0.1,
        center_momentum: float = 0.9,
        momentum: float = 0.996,
        final_momentum: float = 1.0,
        hallucination_weight: float = 0.5,
    ) -> None:
        super().__init__(backbone, hallucination_weight)
        if min(student_temperature, teacher_temperature, warmup_teacher_temperature) <= 0:
            raise ValueError(
                "the temperatures must be positive, got "
                f"student {student_temperature}, teacher {warmup_teacher_temperature} -> {teacher_temperature}"
            )
        if not 0.0 <= teacher_temp_warmup <= 1.0:
            raise ValueError(f"teacher_temp_warmup is a fraction of training in [0, 1], got {teacher_temp_warmup}")
        if not 0.0 <= center_momentum < 1.0:
            raise ValueError(f"center_momentum must be in [0, 1), got {center_momentum}")
        check_momentum_schedule(momentum, final_momentum)
        self.student_temperature = student_temperature
        self.teacher_temperatures = (warmup_teacher_temperature, teacher_temperature)
        self.teacher_temp_warmup = teacher_temp_warmup
        self.teacher_temp = self.teacher_temperature_at(0.0)  # the teacher's temperature in the next forward
        self.center_momentum = center_momentum
        self.momentum, self.final_momentum = momentum, final_momentum
        self.head = DINOHead(self.num_features, out_dim, hidden_dim, bottleneck_dim, norm_last_layer=norm_last_layer)
        self.teacher_backbone = momentum_copy(backbone)
        self.teacher_head = momentum_copy(self.head)
        self.register_buffer("center", torch.zeros(1, out_dim))
        self._set_hallucinator(hallucinator, bottleneck_dim)

    def teacher_temperature_at(self, progress: float) -> float:
        """``T_t`` at ``progress``, the fraction of training done: the linear warm-up, then the final temperature."""
        start, end = self.teacher_temperatures
        if progress >= self.teacher_temp_warmup:
            return end
        return start + (end - start) * progress / self.teacher_temp_warmup

    def momentum_pairs(self) -> tuple[list[nn.Module], list[nn.Module]]:
        return [self.backbone, self.head], [self.teacher_backbone, self.teacher_head]

    @torch.no_grad()
    def update_center(self, teacher_logits: Tensor) -> None:
        """``center = m * center + (1 - m) * mean(teacher_logits)``, the mean over the global batch of all processes."""
        batch_center = distributed.all_reduce_mean(teacher_logits.mean(dim=0, keepdim=True))
        self.center.mul_(self.center_momentum).add_(batch_center, alpha=1.0 - self.center_momentum)

    def _check_local_views(self, view1: Tensor, local_views: tuple[Tensor, ...]) -> None:
        for view in local_views:
            if view.shape[0] != view1.shape[0] or view.shape[1:] != local_views[0].shape[1:]:
                raise ValueError(
                    f"the local crops must hold the batch's {view1.shape[0]} images at one size, got shapes "
                    f"{[tuple(v.shape) for v in local_views]}; make them with one data.local_crops setting"
                )

    def forward(self, view1: Tensor, view2: Tensor, *local_views: Tensor) -> dict[str, Tensor]:
        self._check_views(view1, view2)
        self._check_local_views(view1, local_views)
        n = view1.shape[0]
        features = self._features(self.backbone, torch.cat([view1, view2]))
        embeddings, logits = self.head(features)
        student = list(logits.split(n))
        if local_views:  # one pass for all local crops (one size): the ViT's tokens differ from the globals'
            student += list(self.head(self._features(self.backbone, torch.cat(local_views)))[1].split(n))
        with torch.no_grad():
            teacher_embeddings, teacher_logits = self.teacher_head(
                self._features(self.teacher_backbone, torch.cat([view1, view2]))
            )
            probs = F.softmax((teacher_logits - self.center) / self.teacher_temp, dim=-1)
            teacher = probs.split(n)
            entropy = -(probs * torch.log(probs.clamp_min(1e-12))).sum(dim=-1).mean()
            if self.training:
                self.update_center(teacher_logits)
        loss_original = dino(student, teacher, self.student_temperature)
        q, k = embeddings[:n], teacher_embeddings[n:]
        loss_hallucinated = hallucinated = None
        if self.hallucinator is not None:
            hallucinated = self.hallucinator.pair(q, k)
            loss_hallucinated = soft_cross_entropy(
                self.head.logits(hallucinated.q_hat), teacher[1], self.student_temperature
            )
        out = self._output(loss_original, loss_hallucinated, q, k, hallucinated, features=features[:n])
        out["teacher_entropy"] = entropy
        out["teacher_student_kl"] = loss_original.detach() - entropy
        return out
