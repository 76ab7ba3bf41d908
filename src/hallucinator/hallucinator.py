"""The Hallucinator (Wu et al., ICCV 2023, Sec. 3.3): an extra, harder positive in feature space."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

EXTRAPOLATION_MODES = ("asymmetric", "symmetric")
TRAIN_MODES = ("joint", "adversarial", "frozen")


class _ReverseGradient(torch.autograd.Function):
    """Identity forward; the backward pass multiplies the gradient by ``-strength``."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor, strength: float) -> torch.Tensor:
        ctx.strength = strength
        return tensor.view_as(tensor)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return -ctx.strength * grad, None


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

    Variants beyond the paper (the defaults are the paper's): jointly trained, ``H`` can learn to
    pull ``q_hat`` back towards ``k`` (an *easier* positive; docs/RESULTS.md), so

    - ``train_mode="adversarial"``: the gradient reaching ``H``'s parameters is multiplied by
      ``-adversarial_strength``, so ``H`` ascends the loss it is scored by while the encoder,
      whose gradient passes through ``H`` unchanged, descends it (a gradient-reversal layer on
      the parameters only);
    - ``train_mode="frozen"``: ``H`` keeps its random initialisation (a fixed non-linear
      smoothing; no shortcut to learn); its parameters do not require gradients;
    - a hardness guard, :meth:`guard_penalty` with weight ``guard_weight``: the mean of
      ``relu(cos(q_hat, k) - bound)`` with ``bound = cos(q', k)`` (``guard_margin=None``) or
      ``cos(q, k) - guard_margin``, so ``H`` may smooth but not undo the extrapolation. The
      methods add ``guard_weight * penalty`` to the hallucinated loss.

    After each :meth:`pair`, ``last_extrapolated`` holds the detached ``q'`` (for the logged
    ``cos(q', k)``; computing it draws no random numbers).

    Args:
        dim: feature dimension ``d`` of ``q`` and ``k``.
        num_layers: number of Linear layers of ``H`` (the paper's ``n``; 3 by default).
        hidden_dim: width of the hidden layers; ``None`` means ``2 * dim`` (the authors' code).
        extrapolation: ``(beta1, beta2)``, the range of ``lam`` (paper: ``(0, 0.1)``).
        per_sample: draw one ``lam`` per sample instead of one per batch.
        extrapolation_mode: ``asymmetric`` (the paper's) or ``symmetric`` (the comparison point).
        train_mode: ``joint`` (the paper's), ``adversarial`` or ``frozen``.
        adversarial_strength: factor in ``(0, 1]`` of the reversed gradient on ``H`` (``adversarial`` only).
        guard_weight: weight of the hardness guard (0 = off, the paper's).
        guard_margin: ``None`` bounds ``cos(q_hat, k)`` by ``cos(q', k)``; a number ``m`` by ``cos(q, k) - m``.

    Example:
        >>> hallucinator = Hallucinator(dim=128)
        >>> q, k = torch.randn(256, 128), torch.randn(256, 128)
        >>> q_hat = hallucinator(q, k)  # (256, 128), a harder positive for k
        >>> adversary = Hallucinator(dim=128, train_mode="adversarial", adversarial_strength=0.1)
        >>> guarded = Hallucinator(dim=128, guard_weight=1.0)  # cos(q_hat, k) <= cos(q', k)
    """

    def __init__(
        self,
        dim: int,
        num_layers: int = 3,
        hidden_dim: int | None = None,
        extrapolation: tuple[float, float] = (0.0, 0.1),
        per_sample: bool = False,
        extrapolation_mode: str = "asymmetric",
        train_mode: str = "joint",
        adversarial_strength: float = 0.1,
        guard_weight: float = 0.0,
        guard_margin: float | None = None,
    ) -> None:
        super().__init__()
        if dim <= 0:
            raise ValueError(f"dim must be a positive feature dimension, got {dim}")
        if num_layers < 0:
            raise ValueError(f"num_layers must be >= 0 (0 = extrapolation only), got {num_layers}")
        hidden_dim = 2 * dim if hidden_dim is None else hidden_dim
        if hidden_dim <= 0:
            raise ValueError(f"hidden_dim must be positive (or None for 2 * dim), got {hidden_dim}")
        beta1, beta2 = (float(b) for b in extrapolation)
        if beta1 > beta2:
            raise ValueError(f"extrapolation must be (beta1, beta2) with beta1 <= beta2, got {extrapolation}")
        if extrapolation_mode not in EXTRAPOLATION_MODES:
            raise ValueError(
                f"extrapolation_mode must be one of {list(EXTRAPOLATION_MODES)}, got {extrapolation_mode!r}"
            )
        if train_mode not in TRAIN_MODES:
            raise ValueError(f"train_mode must be one of {list(TRAIN_MODES)}, got {train_mode!r}")
        if not 0.0 < adversarial_strength <= 1.0:
            raise ValueError(f"adversarial_strength must be in (0, 1] (try 0.01-0.3), got {adversarial_strength}")
        if guard_weight < 0:
            raise ValueError(f"guard_weight must be >= 0 (0 = no hardness guard), got {guard_weight}")
        if guard_weight > 0 and train_mode != "joint":
            # a frozen H has nothing to guard (the penalty would move the encoder instead), and the
            # reversed gradient of an adversarial H would turn the guard into its opposite
            raise ValueError(
                f"the hardness guard (guard_weight > 0) constrains a jointly trained H; got train_mode={train_mode!r}"
            )
        self.extrapolation_mode = extrapolation_mode
        self.train_mode = train_mode
        self.adversarial_strength = float(adversarial_strength)
        self.guard_weight = float(guard_weight)
        self.guard_margin = None if guard_margin is None else float(guard_margin)
        self.last_extrapolated: torch.Tensor | None = None
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
        if train_mode == "frozen":
            self.net.requires_grad_(False)

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
        return self.pair(q, k)[0]

    def pair(self, q: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The hallucinated positive pair: ``(q_hat, k)``, or ``(q_hat, k')`` in ``symmetric`` mode."""
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
        self.last_extrapolated = q_prime.detach()
        if len(self.net) == 0:
            return q_prime, k
        return self._hallucinate(torch.cat([q, q_prime], dim=1)), k

    def _hallucinate(self, x: torch.Tensor) -> torch.Tensor:
        if self.train_mode != "adversarial" or not torch.is_grad_enabled():
            return self.net(x)
        for layer in self.net:
            if isinstance(layer, nn.Linear):
                # same forward; only the gradient reaching the parameters is reversed, not the input's
                weight = _ReverseGradient.apply(layer.weight, self.adversarial_strength)
                bias = _ReverseGradient.apply(layer.bias, self.adversarial_strength)
                x = F.linear(x, weight, bias)
            else:
                x = layer(x)
        return x

    def guard_penalty(self, q_hat: torch.Tensor, k: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        """Mean ``relu(cos(q_hat, k) - bound)``: 0 when every hallucinated positive is at least as hard
        as the bound, ``cos(q', k)`` (the last :meth:`pair`'s) or ``cos(q, k) - guard_margin``.

        The bound and the ``k`` compared with are constants, but ``q_hat = H(concat[q, q'])`` is not cut from
        its inputs: the penalty's gradient reaches ``H``'s parameters and, through ``q`` and
        ``q' = q + lam (q - k)``, the encoder (``k`` too where it carries a gradient, as SimCLR's does; a
        momentum or stop-gradient target does not). That is the guard the study measured (docs/study.md);
        one on ``H`` alone would evaluate ``H`` on detached inputs.
        """
        k = k.detach()
        with torch.no_grad():
            if self.guard_margin is None:
                if self.last_extrapolated is None:
                    raise RuntimeError("guard_penalty with guard_margin=None needs q' from a pair() call first")
                bound = F.cosine_similarity(self.last_extrapolated, k, dim=1)
            else:
                bound = F.cosine_similarity(q, k, dim=1) - self.guard_margin
        return F.relu(F.cosine_similarity(q_hat, k, dim=1) - bound).mean()

    def extra_repr(self) -> str:
        return (
            f"dim={self.dim}, extrapolation={self.extrapolation}, per_sample={self.per_sample}, "
            f"extrapolation_mode={self.extrapolation_mode}, train_mode={self.train_mode}"
            + (f", adversarial_strength={self.adversarial_strength}" if self.train_mode == "adversarial" else "")
            + (f", guard_weight={self.guard_weight}, guard_margin={self.guard_margin}" if self.guard_weight else "")
        )
