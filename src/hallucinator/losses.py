"""The frameworks' losses and the representation metrics of Wang & Isola (2020).

Plain tensors in, scalar tensor out. Features are L2-normalised inside every function,
so callers may pass raw projections.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from hallucinator import distributed


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.5) -> torch.Tensor:
    """SimCLR's NT-Xent loss for the positive pairs ``(z1[i], z2[i])``.

    Each of the ``2N`` anchors (every row of ``z1`` and ``z2``) is scored against its
    positive and against all other ``2N - 2`` samples as negatives. Under DDP, the
    negatives are the samples of the GLOBAL batch, gathered with gradient, and the loss is
    the mean over this process's anchors, so DDP's gradient averaging reproduces the
    single-process gradient of the global batch.

    Example:
        >>> loss = nt_xent(torch.randn(8, 128), torch.randn(8, 128), temperature=0.5)
    """
    if z1.shape != z2.shape or z1.ndim != 2:
        raise ValueError(f"nt_xent needs z1 and z2 of the same shape (N, D), got {tuple(z1.shape)} and {tuple(z2.shape)}")
    n = z1.shape[0]
    local = F.normalize(torch.cat([z1, z2]), dim=1)  # (2n, D): anchors, view-1 rows then view-2 rows
    world = distributed.world_size()
    if world == 1:
        everything = local
        offset = 0
    else:
        # global order [z1 of rank 0, z2 of rank 0, z1 of rank 1, ...]; this rank's rows start at offset
        everything = distributed.gather_with_grad(local)
        offset = distributed.rank() * 2 * n
    if everything.shape[0] < 4:
        raise ValueError(
            f"nt_xent needs at least 2 positive pairs in the (global) batch to have negatives, got {everything.shape[0] // 2}; "
            "use a batch size of at least 2"
        )
    logits = local @ everything.T / temperature  # (2n, 2N_global)
    rows = torch.arange(2 * n, device=z1.device)
    logits[rows, rows + offset] = float("-inf")  # an anchor is not its own negative
    positives = torch.cat([rows[n:], rows[:n]]) + offset
    return F.cross_entropy(logits, positives)


def info_nce(q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, temperature: float = 0.2) -> torch.Tensor:
    """MoCo's InfoNCE: each query ``q[i]`` against its key ``k[i]`` and the ``K`` queued negatives.

    ``queue`` is ``(K, D)`` and must hold L2-normalised keys (MoCo's queue does); ``q`` and
    ``k`` are normalised here.

    Example:
        >>> queue = torch.nn.functional.normalize(torch.randn(4096, 128), dim=1)
        >>> loss = info_nce(torch.randn(8, 128), torch.randn(8, 128), queue, temperature=0.2)
    """
    if q.shape != k.shape or q.ndim != 2 or queue.ndim != 2 or queue.shape[1] != q.shape[1]:
        raise ValueError(
            f"info_nce needs q and k of shape (N, D) and a queue of shape (K, D), got {tuple(q.shape)}, {tuple(k.shape)} "
            f"and {tuple(queue.shape)}"
        )
    q = F.normalize(q, dim=1)
    k = F.normalize(k, dim=1)
    positive = (q * k).sum(dim=1, keepdim=True)
    negatives = q @ queue.T
    logits = torch.cat([positive, negatives], dim=1) / temperature
    return F.cross_entropy(logits, torch.zeros(q.shape[0], dtype=torch.long, device=q.device))


def negative_cosine(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """SimSiam's ``D(p, z) = -cos(p, stopgrad(z))``, averaged over the batch."""
    return -F.cosine_similarity(p, z.detach(), dim=1).mean()


def alignment(x: torch.Tensor, y: torch.Tensor, alpha: float = 2) -> torch.Tensor:
    """Wang & Isola's alignment: mean ``||x_i - y_i||^alpha`` over positive pairs of normalised features."""
    return (F.normalize(x, dim=1) - F.normalize(y, dim=1)).norm(dim=1).pow(alpha).mean()


def uniformity(x: torch.Tensor, t: float = 2) -> torch.Tensor:
    """Wang & Isola's uniformity: ``log mean_{i<j} exp(-t ||x_i - x_j||^2)`` over normalised features.

    The paper's Fig. 5 reports the mean Gaussian potential itself, i.e. ``uniformity(x).exp()``.
    """
    if x.shape[0] < 2:
        raise ValueError(f"uniformity needs at least 2 samples, got {x.shape[0]}")
    return torch.pdist(F.normalize(x, dim=1)).pow(2).mul(-t).exp().mean().log()
