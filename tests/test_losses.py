"""Each loss against hand-computed values on tiny inputs and against naive Python loops (Barlow Twins, VICReg
and the in-batch InfoNCE of MoCo v3 / NNCLR too)."""

from __future__ import annotations

import math

import pytest
import torch

from hallucinator import losses
from hallucinator.losses import (
    alignment,
    barlow_twins,
    in_batch_info_nce,
    info_nce,
    negative_cosine,
    nt_xent,
    uniformity,
    vicreg,
)


def _unit(rows: torch.Tensor) -> list[list[float]]:
    return [[v / math.sqrt(sum(x * x for x in row)) for v in row] for row in rows.tolist()]


def _dot(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b))


def naive_nt_xent(z1: torch.Tensor, z2: torch.Tensor, t: float) -> float:
    z = _unit(z1) + _unit(z2)
    n = len(z1)
    total = 0.0
    for i in range(2 * n):
        positive = (i + n) % (2 * n)
        denominator = sum(math.exp(_dot(z[i], z[j]) / t) for j in range(2 * n) if j != i)
        total -= math.log(math.exp(_dot(z[i], z[positive]) / t) / denominator)
    return total / (2 * n)


def naive_info_nce(q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, t: float) -> float:
    qs, ks, negatives = _unit(q), _unit(k), queue.tolist()
    total = 0.0
    for qi, ki in zip(qs, ks):
        logits = [_dot(qi, ki) / t] + [_dot(qi, neg) / t for neg in negatives]
        total += math.log(sum(math.exp(x) for x in logits)) - logits[0]
    return total / len(qs)


def test_nt_xent_hand_computed_orthogonal_case() -> None:
    # two orthonormal pairs: every anchor has its positive at cosine 1 and two negatives at cosine 0
    z = torch.eye(2)
    expected = math.log(1 + 2 * math.exp(-1 / 0.5))  # -log(e^2 / (e^2 + 2))
    assert nt_xent(z, z, temperature=0.5).item() == pytest.approx(expected, rel=1e-6)


def test_nt_xent_matches_naive_loop_on_random_inputs() -> None:
    torch.manual_seed(0)
    z1, z2 = torch.randn(5, 3, dtype=torch.float64) * 3, torch.randn(5, 3, dtype=torch.float64)
    for t in (0.1, 0.5):
        assert nt_xent(z1, z2, t).item() == pytest.approx(naive_nt_xent(z1, z2, t), rel=1e-10)


def test_nt_xent_rejects_a_single_pair() -> None:
    with pytest.raises(ValueError, match="at least 2"):
        nt_xent(torch.randn(1, 4), torch.randn(1, 4))


def test_info_nce_hand_computed_case() -> None:
    q, k = torch.tensor([[2.0, 0.0]]), torch.tensor([[1.0, 0.0]])
    queue = torch.tensor([[0.0, 1.0], [-1.0, 0.0]])
    expected = -math.log(math.e / (math.e + 1 + math.exp(-1)))
    assert info_nce(q, k, queue, temperature=1.0).item() == pytest.approx(expected, rel=1e-6)


def test_info_nce_with_a_queue_matches_naive_loop() -> None:
    torch.manual_seed(1)
    q, k = torch.randn(4, 6, dtype=torch.float64), torch.randn(4, 6, dtype=torch.float64)
    queue = torch.nn.functional.normalize(torch.randn(7, 6, dtype=torch.float64), dim=1)
    assert info_nce(q, k, queue, 0.2).item() == pytest.approx(naive_info_nce(q, k, queue, 0.2), rel=1e-10)


def test_negative_cosine_value_and_stop_gradient() -> None:
    p = torch.tensor([[1.0, 0.0], [0.0, 2.0]], requires_grad=True)
    z = torch.tensor([[1.0, 1.0], [0.0, 3.0]], requires_grad=True)
    loss = negative_cosine(p, z)
    assert loss.item() == pytest.approx(-(1 / math.sqrt(2) + 1) / 2, rel=1e-6)
    loss.backward()
    assert z.grad is None  # the target is behind a stop-gradient
    assert p.grad.abs().sum() > 0


def test_alignment_and_uniformity_hand_computed() -> None:
    x, y = torch.tensor([[3.0, 0.0], [0.0, 1.0]]), torch.tensor([[0.0, 5.0], [0.0, 2.0]])
    # normalised pairs: orthogonal (squared distance 2) and identical (0)
    assert alignment(x, y).item() == pytest.approx(1.0)
    assert alignment(x, y, alpha=1).item() == pytest.approx(math.sqrt(2) / 2)
    # three points: two identical, one opposite -> squared distances 0, 4, 4
    points = torch.tensor([[1.0, 0.0], [2.0, 0.0], [-1.0, 0.0]])
    expected = math.log((1 + 2 * math.exp(-2 * 4)) / 3)
    assert uniformity(points).item() == pytest.approx(expected, rel=1e-6)
    assert uniformity(points, t=1).item() == pytest.approx(math.log((1 + 2 * math.exp(-4)) / 3), rel=1e-6)


def _loss_cases(generator: torch.Generator) -> dict[str, tuple]:
    def features(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=generator).to(torch.bfloat16)

    queue = torch.nn.functional.normalize(torch.randn(64, 16, generator=generator), dim=1).to(torch.bfloat16)
    probs = torch.softmax(torch.randn(8, 32, generator=generator), dim=1).to(torch.bfloat16)
    return {
        "nt_xent": (losses.nt_xent, (features(8, 16), features(8, 16), 0.07)),
        "info_nce": (losses.info_nce, (features(8, 16), features(8, 16), queue, 0.07)),
        "in_batch_info_nce": (losses.in_batch_info_nce, (features(8, 16), features(8, 16), 0.2)),
        "barlow_twins": (losses.barlow_twins, (features(8, 16), features(8, 16))),
        "vicreg": (losses.vicreg, (features(8, 16), features(8, 16))),
        "soft_cross_entropy": (losses.soft_cross_entropy, (features(8, 32), probs, 0.1)),
        "dino": (losses.dino, ([features(8, 32), features(8, 32)], [probs, probs], 0.1)),
        "negative_cosine": (losses.negative_cosine, (features(8, 16), features(8, 16))),
    }


def _each_tensor(function, args: tuple) -> tuple:
    """``args`` with ``function`` applied to every tensor, also inside lists (DINO's views)."""
    return tuple(
        [function(a) for a in arg] if isinstance(arg, list) else function(arg) if isinstance(arg, torch.Tensor) else arg
        for arg in args
    )


@pytest.mark.parametrize("name", sorted(_loss_cases(torch.Generator())))
def test_losses_compute_in_float32_inside_bf16_autocast(name: str) -> None:
    """Under bf16 autocast a loss equals its float32 value on the same (bf16) inputs, and gradients reach them."""
    loss, args = _loss_cases(torch.Generator().manual_seed(0))[name]
    args = _each_tensor(lambda a: a.clone().requires_grad_(), args)
    reference = loss(*_each_tensor(lambda a: a.detach().float(), args))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert (torch.randn(4, 4) @ torch.randn(4, 4)).dtype == torch.bfloat16  # autocast is on: a matmul would be bf16
        value = loss(*args)
    assert value.dtype == torch.float32
    assert value.item() == pytest.approx(reference.item(), rel=1e-6, abs=1e-7)
    value.backward()
    grads: list[torch.Tensor] = []
    _each_tensor(lambda a: grads.append(a.grad) if a.grad is not None else None, args)
    assert grads and all(grad.dtype == torch.bfloat16 for grad in grads)


def _columns(z: torch.Tensor) -> list[list[float]]:
    return [list(column) for column in zip(*z.tolist())]


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def _variance(values: list[float], unbiased: bool) -> float:
    m = _mean(values)
    return sum((v - m) ** 2 for v in values) / (len(values) - (1 if unbiased else 0))


def naive_barlow_twins(z1: torch.Tensor, z2: torch.Tensor, lambd: float) -> float:
    def standardized(z: torch.Tensor) -> list[list[float]]:
        out = []
        for column in _columns(z):
            m, s = _mean(column), math.sqrt(_variance(column, unbiased=False) + 1e-5)
            out.append([(v - m) / s for v in column])
        return out

    a, b = standardized(z1), standardized(z2)
    n, d = z1.shape
    loss = 0.0
    for i in range(d):
        for j in range(d):
            c = sum(a[i][s] * b[j][s] for s in range(n)) / n
            loss += (1 - c) ** 2 if i == j else lambd * c**2
    return loss


def naive_vicreg(z1: torch.Tensor, z2: torch.Tensor, sim: float, std: float, cov: float) -> float:
    n, d = z1.shape
    invariance = sum((x - y) ** 2 for r1, r2 in zip(z1.tolist(), z2.tolist()) for x, y in zip(r1, r2)) / (n * d)
    variance = covariance = 0.0
    for z in (z1, z2):
        columns = _columns(z)
        variance += _mean([max(0.0, 1 - math.sqrt(_variance(c, unbiased=True) + 1e-4)) for c in columns]) / 2
        means = [_mean(c) for c in columns]
        for i in range(d):
            for j in range(d):
                if i != j:
                    c_ij = sum((columns[i][s] - means[i]) * (columns[j][s] - means[j]) for s in range(n)) / (n - 1)
                    covariance += c_ij**2 / d
    return sim * invariance + std * variance + cov * covariance


def naive_in_batch_info_nce(anchors: torch.Tensor, positives: torch.Tensor, t: float) -> float:
    def unit(rows: torch.Tensor) -> list[list[float]]:
        return [[v / math.sqrt(sum(x * x for x in row)) for v in row] for row in rows.tolist()]

    a, p = unit(anchors), unit(positives)
    total = 0.0
    for i, anchor in enumerate(a):
        logits = [sum(x * y for x, y in zip(anchor, row)) / t for row in p]
        total += math.log(sum(math.exp(x) for x in logits)) - logits[i]
    return total / len(a)


def test_barlow_twins_matches_naive_loop() -> None:
    torch.manual_seed(0)
    z1, z2 = torch.randn(6, 4, dtype=torch.float64) * 2 + 1, torch.randn(6, 4, dtype=torch.float64)
    for lambd in (0.0051, 0.5):
        assert barlow_twins(z1, z2, lambd).item() == pytest.approx(naive_barlow_twins(z1, z2, lambd), rel=1e-10)


def test_barlow_twins_of_identical_decorrelated_views_is_zero() -> None:
    # columns +-1 with zero mean and orthogonal: C is the identity up to BatchNorm's eps
    z = torch.tensor([[1.0, 1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0]], dtype=torch.float64)
    assert barlow_twins(z, z).item() == pytest.approx(0.0, abs=1e-8)


def test_vicreg_matches_naive_loop() -> None:
    torch.manual_seed(1)
    z1, z2 = torch.randn(7, 5, dtype=torch.float64) * 0.5, torch.randn(7, 5, dtype=torch.float64) * 3
    for coeffs in ((25.0, 25.0, 1.0), (1.0, 2.0, 3.0)):
        assert vicreg(z1, z2, *coeffs).item() == pytest.approx(naive_vicreg(z1, z2, *coeffs), rel=1e-10)


def test_in_batch_info_nce_matches_naive_loop() -> None:
    torch.manual_seed(2)
    anchors, positives = torch.randn(5, 3, dtype=torch.float64) * 4, torch.randn(5, 3, dtype=torch.float64)
    for t in (0.2, 1.0):
        assert in_batch_info_nce(anchors, positives, t).item() == pytest.approx(
            naive_in_batch_info_nce(anchors, positives, t), rel=1e-10
        )


def test_bad_shapes_and_single_samples_are_refused() -> None:
    with pytest.raises(ValueError, match="same shape"):
        barlow_twins(torch.randn(4, 3), torch.randn(4, 2))
    with pytest.raises(ValueError, match="at least 2 samples"):
        vicreg(torch.randn(1, 3), torch.randn(1, 3))
    with pytest.raises(ValueError, match="same shape"):
        in_batch_info_nce(torch.randn(4, 3), torch.randn(3, 3))
