"""The frameworks' losses and the representation metrics of Wang & Isola (2020).

Plain tensors in, scalar tensor out. The contrastive and cosine losses L2-normalise the features
inside, so callers may pass raw projections; Barlow Twins and VICReg work on the raw embeddings, as
their papers do. Under DDP, every batch statistic is the global batch's.

Every loss computes in float32, also inside bf16 / fp16 autocast (:func:`in_float32`): a cosine over a
temperature of 0.07 reaches logits of 14, where bf16 steps by 0.0625, i.e. by 0.004 in cosine, about the gap
between a positive and its hardest negatives early in training. In bf16 MoCo v1's loss stalled for the first
100 steps of its learning test (an AVX-512 BF16 CPU, seed 0); these matmuls are small, so float32 costs little.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import torch
import torch.nn.functional as F

from hallucinator import distributed

LossFunction = TypeVar("LossFunction", bound=Callable[..., torch.Tensor])


def _to_float32(value: Any) -> Any:
    if isinstance(value, torch.Tensor) and value.is_floating_point() and value.element_size() < 4:
        return value.float()  # bf16 / fp16 up; float32 and float64 stay as they are
    if isinstance(value, (list, tuple)):
        return type(value)(_to_float32(item) for item in value)
    return value


def in_float32(loss: LossFunction) -> LossFunction:
    """Runs ``loss`` in at least float32: bf16 / fp16 tensor arguments (also inside lists) upcast, autocast off.

    Gradients flow back through the casts to the callers' bf16 activations.

    Example:
        >>> with torch.autocast("cpu", dtype=torch.bfloat16):
        ...     logits = torch.randn(4, 8) @ torch.randn(8, 8)  # bf16
        ...     nt_xent(logits, logits).dtype  # computed in float32
        torch.float32
    """

    @functools.wraps(loss)
    def wrapper(*args: Any, **kwargs: Any) -> torch.Tensor:
        tensors = [value for value in (*args, *kwargs.values()) if isinstance(value, torch.Tensor)]
        device_type = tensors[0].device.type if tensors else "cpu"
        with torch.autocast(device_type=device_type, enabled=False):
            return loss(*_to_float32(args), **{key: _to_float32(value) for key, value in kwargs.items()})

    return wrapper  # type: ignore[return-value]


@in_float32
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
        raise ValueError(
            f"nt_xent needs z1 and z2 of the same shape (N, D), got {tuple(z1.shape)} and {tuple(z2.shape)}"
        )
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


@in_float32
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


@in_float32
def in_batch_info_nce(anchors: torch.Tensor, positives: torch.Tensor, temperature: float = 0.2) -> torch.Tensor:
    """InfoNCE with the (global) batch as negatives: ``anchors[i]`` against every row of ``positives``.

    MoCo v3's ``ctr(q, k)`` (anchors = online predictions, positives = momentum keys) and
    NNCLR's loss (anchors = support-set neighbours, positives = predictions). ``positives``
    are gathered from all processes with gradient and the loss is the mean over this
    process's anchors (positive of anchor ``i`` = global row ``rank * N + i``), so DDP's
    gradient averaging gives the single-process gradient of the global batch.

    Example:
        >>> loss = in_batch_info_nce(torch.randn(8, 256), torch.randn(8, 256), temperature=0.2)
    """
    if anchors.shape != positives.shape or anchors.ndim != 2:
        raise ValueError(
            f"in_batch_info_nce needs anchors and positives of the same shape (N, D), got "
            f"{tuple(anchors.shape)} and {tuple(positives.shape)}"
        )
    anchors = F.normalize(anchors, dim=1)
    everything = distributed.gather_with_grad(F.normalize(positives, dim=1))
    n = anchors.shape[0]
    targets = torch.arange(n, device=anchors.device) + distributed.rank() * n
    return F.cross_entropy(anchors @ everything.T / temperature, targets)


def _standardize(z: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Each feature to zero mean and unit (biased) variance over the batch: BatchNorm1d(affine=False) in training mode."""
    return (z - z.mean(dim=0)) / torch.sqrt(z.var(dim=0, unbiased=False) + eps)


def _off_diagonal(matrix: torch.Tensor) -> torch.Tensor:
    return matrix - torch.diag_embed(torch.diagonal(matrix))


def _global_pair(z1: torch.Tensor, z2: torch.Tensor, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``z1``, ``z2`` of the global batch, gathered with gradient.

    Every process then computes the same loss over the global batch; the gathered gradient is
    summed over processes and DDP averages it, which is again the single-process gradient.
    """
    if z1.shape != z2.shape or z1.ndim != 2:
        raise ValueError(
            f"{name} needs z1 and z2 of the same shape (N, D), got {tuple(z1.shape)} and {tuple(z2.shape)}"
        )
    z1, z2 = distributed.gather_with_grad(z1), distributed.gather_with_grad(z2)
    if z1.shape[0] < 2:
        raise ValueError(
            f"{name} needs batch statistics of at least 2 samples, got {z1.shape[0]}; use a batch size of at least 2"
        )
    return z1, z2


@in_float32
def barlow_twins(z1: torch.Tensor, z2: torch.Tensor, lambd: float = 0.0051) -> torch.Tensor:
    """Barlow Twins' redundancy reduction (Zbontar et al. 2021) over the global batch.

    ``C = standardize(z1).T @ standardize(z2) / N``; loss ``sum_i (1 - C_ii)^2 + lambd * sum_{i != j} C_ij^2``.

    Example:
        >>> loss = barlow_twins(torch.randn(64, 2048), torch.randn(64, 2048), lambd=0.0051)
    """
    z1, z2 = _global_pair(z1, z2, "barlow_twins")
    c = _standardize(z1).T @ _standardize(z2) / z1.shape[0]
    return (1 - torch.diagonal(c)).pow(2).sum() + lambd * _off_diagonal(c).pow(2).sum()


@in_float32
def vicreg(
    z1: torch.Tensor, z2: torch.Tensor, sim_coeff: float = 25.0, std_coeff: float = 25.0, cov_coeff: float = 1.0
) -> torch.Tensor:
    """VICReg (Bardes et al. 2022) over the global batch: invariance, variance and covariance terms.

    Invariance: mean squared error of ``z1`` and ``z2``. Variance: mean over features of
    ``relu(1 - sqrt(var + 1e-4))`` (unbiased variance), averaged over the two branches.
    Covariance: sum of the squared off-diagonal covariances divided by the dimension, summed
    over the two branches.

    Example:
        >>> loss = vicreg(torch.randn(64, 2048), torch.randn(64, 2048))
    """
    z1, z2 = _global_pair(z1, z2, "vicreg")
    n, dim = z1.shape
    invariance = F.mse_loss(z1, z2)
    variance = torch.zeros((), dtype=z1.dtype, device=z1.device)
    covariance = torch.zeros((), dtype=z1.dtype, device=z1.device)
    for z in (z1, z2):
        z = z - z.mean(dim=0)
        variance = variance + F.relu(1 - torch.sqrt(z.var(dim=0) + 1e-4)).mean() / 2
        covariance = covariance + _off_diagonal(z.T @ z / (n - 1)).pow(2).sum() / dim
    return sim_coeff * invariance + std_coeff * variance + cov_coeff * covariance


@in_float32
def soft_cross_entropy(logits: torch.Tensor, target_probs: torch.Tensor, temperature: float) -> torch.Tensor:
    """``mean_i sum_c -target_probs[i, c] * log softmax(logits[i] / temperature)[c]``: DINO's student-teacher term.

    Example:
        >>> loss = soft_cross_entropy(student_logits, teacher_probs.detach(), temperature=0.1)
    """
    return -(target_probs * F.log_softmax(logits / temperature, dim=-1)).sum(dim=-1).mean()


@in_float32
def dino(
    student_logits: Sequence[torch.Tensor], teacher_probs: Sequence[torch.Tensor], temperature: float
) -> torch.Tensor:
    """DINO's multi-crop loss: :func:`soft_cross_entropy` averaged over every (teacher view ``i``, student view ``v``)
    pair with ``v != i``.

    The teacher sees the global views only, which are the first ``len(teacher_probs)`` student views.

    Example:
        >>> loss = dino([s_global1, s_global2, s_local1], [t_global1, t_global2], temperature=0.1)  # 4 pairs
    """
    if not 1 <= len(teacher_probs) <= len(student_logits):
        raise ValueError(f"need 1 to {len(student_logits)} teacher views, got {len(teacher_probs)}")
    terms = [
        soft_cross_entropy(logits, probs, temperature)
        for i, probs in enumerate(teacher_probs)
        for v, logits in enumerate(student_logits)
        if v != i
    ]
    if not terms:
        raise ValueError("DINO's loss needs at least two views (a teacher view and another student view)")
    return torch.stack(terms).mean()


@in_float32
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
