"""Hand computations shared by the method tests.

Every case uses an extrapolation-only Hallucinator with a fixed ``lam = 0.3`` (``q_hat = 1.3 q - 0.3 k``)
so that the expected hallucinated loss can be written out; eval mode keeps the momentum
encoders and queues still, so the targets can be recomputed after the call.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from hallucinator import Hallucinator

LAM = 0.3


def _fixed(dim: int) -> Hallucinator:
    return Hallucinator(dim, num_layers=0, extrapolation=(LAM, LAM))


def _hat(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    return (1 + LAM) * q - LAM * k


def _cross_entropy_by_hand(anchors: torch.Tensor, positives: torch.Tensor, t: float) -> torch.Tensor:
    a, p = F.normalize(anchors, dim=1), F.normalize(positives, dim=1)
    logits = a @ p.T / t
    return (logits.exp().sum(dim=1).log() - logits.diagonal()).mean()
