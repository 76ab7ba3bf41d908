"""Barlow Twins, VICReg and the in-batch InfoNCE of MoCo v3 / NNCLR against naive Python loops."""

from __future__ import annotations

import math

import pytest
import torch

from hallucinator.losses import barlow_twins, in_batch_info_nce, vicreg


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
