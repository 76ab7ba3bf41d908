"""SimCLR (Chen et al. 2020) with the Hallucinator."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from hallucinator.losses import nt_xent
from hallucinator.methods.base import HallucinatorChoice, SSLMethod, check_loss_form, mlp
from hallucinator.methods.registry import register_method


@register_method("simclr")
class SimCLR(SSLMethod):
    """SimCLR: NT-Xent between the projections of two views, negatives from the whole (global) batch.

    ``q`` and ``k`` are the raw projections of ``view1`` and ``view2``. The Hallucinator makes
    ``q_hat = H(q, k)``; the loss is the average of NT-Xent on ``(q, k)`` and NT-Xent on
    ``(q_hat, k)`` (the paper's statement, ``loss_form="average"``); the authors' code instead feeds
    ``[q; q_hat]`` against ``[k; k]`` to one NT-Xent, where each positive's duplicate also counts as a
    negative (``loss_form="concat"``). Under DDP the negatives are gathered from all processes with gradient.

    Args:
        backbone: encoder with a ``num_features`` attribute.
        hallucinator: ``True`` (the paper's), ``False``/``None`` (off), a configured :class:`Hallucinator` or a factory ``dim -> Hallucinator``.
        dim: projection dimension.
        hidden_dim: hidden width of the Linear-BN-ReLU-Linear head; ``None`` = the backbone's ``num_features``.
        temperature: NT-Xent temperature (0.5, SimCLR's CIFAR setting).
        head_batchnorm: BatchNorm in the head (SimCLR's); ``False`` = Linear-ReLU-Linear, the authors' code.
        loss_scale: factor on both NT-Xent losses; the authors' code (after SupContrast) multiplies by
            ``temperature / 0.07``, which scales the gradient against the weight decay at the same lr.
        hallucination_weight: ``w`` in ``(1 - w) * loss_original + w * loss_hallucinated``.
        loss_form: ``average`` (the paper's) or ``concat`` (the authors' code; ``hallucination_weight`` unused).

    Example:
        >>> from hallucinator import backbones
        >>> simclr = SimCLR(backbones.build("resnet18", cifar_stem=True))
        >>> simclr(view1, view2)["loss"].backward()
    """

    loss_forms = ("average", "concat")

    def __init__(
        self,
        backbone: nn.Module,
        hallucinator: HallucinatorChoice = True,
        dim: int = 128,
        hidden_dim: int | None = None,
        temperature: float = 0.5,
        head_batchnorm: bool = True,
        loss_scale: float = 1.0,
        hallucination_weight: float = 0.5,
        loss_form: str = "average",
    ) -> None:
        super().__init__(backbone, hallucination_weight)
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        if loss_scale <= 0:
            raise ValueError(f"loss_scale must be positive (1 = plain NT-Xent), got {loss_scale}")
        self.temperature = temperature
        self.loss_scale = float(loss_scale)
        self.projector = mlp(
            self.num_features, hidden_dim or self.num_features, dim, num_layers=2, batch_norm=head_batchnorm
        )
        self._set_hallucinator(hallucinator, dim)
        check_loss_form(type(self), loss_form, self.hallucinator)
        self.loss_form = loss_form

    def forward(self, view1: Tensor, view2: Tensor) -> dict[str, Tensor]:
        self._check_views(view1, view2)
        features = self._features(self.backbone, view1)
        q = self.projector(features)
        k = self.projector(self._features(self.backbone, view2))
        loss_hallucinated = hallucinated = joint = None
        if self.hallucinator is not None:
            hallucinated = self.hallucinator.pair(q, k)
            if self.loss_form == "concat":
                q_hat, partner = hallucinated.q_hat, hallucinated.partner
                joint = self.loss_scale * nt_xent(torch.cat([q, q_hat]), torch.cat([k, partner]), self.temperature)
                with torch.no_grad():  # the two pairs' own losses, as monitors
                    loss_original = self.loss_scale * nt_xent(q, k, self.temperature)
                    loss_hallucinated = self.loss_scale * nt_xent(q_hat, partner, self.temperature)
            else:
                loss_original = self.loss_scale * nt_xent(q, k, self.temperature)
                loss_hallucinated = self.loss_scale * nt_xent(
                    hallucinated.q_hat, hallucinated.partner, self.temperature
                )
        else:
            loss_original = self.loss_scale * nt_xent(q, k, self.temperature)
        return self._output(loss_original, loss_hallucinated, q, k, hallucinated, features=features, joint_loss=joint)
