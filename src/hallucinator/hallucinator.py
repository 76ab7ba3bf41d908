"""The Hallucinator (Wu et al., ICCV 2023, Sec. 3.3): an extra, harder positive in feature space.

The variants of the study beyond the paper (an adversarial or a frozen ``H``, the hardness guard) and the
one list of every option, which the config reads, are in :mod:`hallucinator.hallucinator_variants`.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

EXTRAPOLATION_MODES = ("asymmetric", "symmetric")


class OptionError(ValueError):
    """An impossible constructor argument; ``option`` names it (the config reports it as ``hallucinator.<option>``)."""

    def __init__(self, option: str, reason: str) -> None:
        super().__init__(f"{option}: {reason}")
        self.option, self.reason = option, reason


class HallucinatedPair(NamedTuple):
    """What :meth:`Hallucinator.pair` returns: the hallucinated positive pair and the extrapolation it came from."""

    q_hat: torch.Tensor
    """``H(concat[q, q'])`` (``q'`` itself when ``H`` has no layers)."""
    partner: torch.Tensor
    """The positive ``q_hat`` is scored against: ``k``, or ``k'`` in ``symmetric`` mode."""
    q_prime: torch.Tensor
    """The extrapolated ``q' = (1 + lam) q - lam k``, ``H``'s second input (for the logged ``cos(q', k)``)."""


class Hallucinator(nn.Module):
    """Turns a positive pair ``(q, k)`` into a hallucinated sample ``q_hat`` to pair with ``k``.

    1. Asymmetric extrapolation: ``q' = (1 + lam) * q - lam * k`` with
       ``lam ~ U(beta1, beta2)``, one draw per batch (the authors' code) or one per sample.
    2. Hallucination: ``q_hat = H(concat[q, q'])``, ``H`` being ``num_layers`` Linear layers
       ``2d -> h -> ... -> h -> d`` with ReLU between them (none after the last);
       ``num_layers=0`` means no network, ``q_hat = q'``.

    ``H`` is trained by back-propagating the framework's loss on ``(q_hat, k)``.

    ``extrapolation_mode="symmetric"`` is the paper's comparison point (Fig. 4), the linear
    symmetric extrapolation of Zhu et al. (2021): both L2-normalised features move apart,
    ``q' = q + lam (q - k)``, ``k' = k + lam (k - q)``, and the pair is ``(H(q, q'), k')``
    (with ``num_layers=0``: ``(q', k')``). :meth:`pair` returns the pair in either mode.

    Args:
        dim: feature dimension ``d`` of ``q`` and ``k``.
        num_layers: number of Linear layers of ``H`` (the paper's ``n``; 3 by default).
        hidden_dim: width of the hidden layers; ``None`` means ``2 * dim`` (the authors' code).
        extrapolation: ``(beta1, beta2)``, the range of ``lam`` (paper: ``(0, 0.1)``).
        per_sample: draw one ``lam`` per sample instead of one per batch.
        extrapolation_mode: ``asymmetric`` (the paper's) or ``symmetric`` (the comparison point).

    Example:
        >>> hallucinator = Hallucinator(dim=128)
        >>> q, k = torch.randn(256, 128), torch.randn(256, 128)
        >>> q_hat = hallucinator(q, k)  # (256, 128), a harder positive for k
        >>> q_hat, partner, q_prime = hallucinator.pair(q, k)  # partner is k; q_prime is H's input q'
    """

    def __init__(
        self,
        dim: int,
        num_layers: int = 3,
        hidden_dim: int | None = None,
        extrapolation: tuple[float, float] = (0.0, 0.1),
        per_sample: bool = False,
        extrapolation_mode: str = "asymmetric",
    ) -> None:
        super().__init__()
        if dim <= 0:
            raise OptionError("dim", f"must be a positive feature dimension, got {dim}")
        if num_layers < 0:
            raise OptionError("num_layers", f"must be >= 0 (0 = extrapolation only), got {num_layers}")
        hidden_dim = 2 * dim if hidden_dim is None else hidden_dim
        if hidden_dim <= 0:
            raise OptionError("hidden_dim", f"must be positive (or None for 2 * dim), got {hidden_dim}")
        beta1, beta2 = (float(b) for b in extrapolation)
        if beta1 > beta2:
            raise OptionError("extrapolation", f"need beta1 <= beta2, got {[beta1, beta2]}")
        if extrapolation_mode not in EXTRAPOLATION_MODES:
            raise OptionError("extrapolation_mode", f"{extrapolation_mode!r} is not one of {list(EXTRAPOLATION_MODES)}")
        self.extrapolation_mode = extrapolation_mode
        # draws the one lam per batch (None: torch's global generator); under data parallelism every process
        # gets the same, identically seeded one (the engine's PretrainModule does), so lam is one per global
        # batch while per-sample draws, from each process's own global stream, differ across processes
        self.batch_generator: torch.Generator | None = None
        self.dim = dim
        self.extrapolation = (beta1, beta2)
        self.per_sample = per_sample
        widths = [2 * dim] + [hidden_dim] * (num_layers - 1) + [dim]
        layers: list[nn.Module] = []
        for i in range(num_layers):
            if i > 0:
                layers.append(nn.ReLU(inplace=True))
            layers.append(nn.Linear(widths[i], widths[i + 1]))
        self.net = nn.Sequential(*layers)

    @staticmethod
    def extrapolate(q: torch.Tensor, k: torch.Tensor, lam: float | torch.Tensor) -> torch.Tensor:
        """``(1 + lam) * q - lam * k``; a tensor ``lam`` of shape ``(N,)`` or ``(N, 1)`` is one value per sample."""
        if isinstance(lam, torch.Tensor) and lam.ndim == 1:
            lam = lam.unsqueeze(1)
        return q + lam * (q - k)

    def sample_lambda(self, q: torch.Tensor) -> float | torch.Tensor:
        """One ``lam ~ U(beta1, beta2)`` for the batch (from ``batch_generator``), or an ``(N, 1)`` tensor of
        them with ``per_sample`` (from the global stream of ``q``'s device)."""
        beta1, beta2 = self.extrapolation
        if self.per_sample:
            return torch.empty(q.shape[0], 1, device=q.device, dtype=q.dtype).uniform_(beta1, beta2)
        # drawn on a CPU generator: a Python float costs no device synchronisation
        return beta1 + (beta2 - beta1) * torch.rand((), generator=self.batch_generator).item()

    def forward(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """``q_hat``, the hallucinated partner of ``k`` (in ``symmetric`` mode, of ``k'``: use :meth:`pair`)."""
        return self.pair(q, k).q_hat

    def pair(self, q: torch.Tensor, k: torch.Tensor) -> HallucinatedPair:
        """The hallucinated positive pair ``(q_hat, k)``, or ``(q_hat, k')`` in ``symmetric`` mode, and ``q'``."""
        if q.shape != k.shape or q.ndim != 2:
            raise ValueError(
                f"q and k must have the same shape (N, {self.dim}), got {tuple(q.shape)} and {tuple(k.shape)}"
            )
        if q.shape[1] != self.dim:
            raise ValueError(
                f"q and k have {q.shape[1]} features but this Hallucinator was built with dim={self.dim}; "
                f"build it with dim={q.shape[1]}"
            )
        lam = self.sample_lambda(q)
        if self.extrapolation_mode == "symmetric":
            q, k = F.normalize(q, dim=1), F.normalize(k, dim=1)
            q_prime, k = self.extrapolate(q, k, lam), self.extrapolate(k, q, lam)
        else:
            q_prime = self.extrapolate(q, k, lam)
        if len(self.net) == 0:
            return HallucinatedPair(q_prime, k, q_prime)
        return HallucinatedPair(self.hallucinate(torch.cat([q, q_prime], dim=1)), k, q_prime)

    def hallucinate(self, x: torch.Tensor) -> torch.Tensor:
        """``H(x)`` for ``x = concat[q, q']``."""
        return self.net(x)

    def extra_repr(self) -> str:
        return (
            f"dim={self.dim}, extrapolation={self.extrapolation}, per_sample={self.per_sample}, "
            f"extrapolation_mode={self.extrapolation_mode}"
        )
