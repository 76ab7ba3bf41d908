from __future__ import annotations

import math

import pytest
import torch
from scipy.special import i0
from torch import nn

from hallucinator.evaluation.metrics import (
    alignment,
    g_potential,
    pos_similarity,
    reduce_to_2d,
    representation_metrics,
    topk_accuracy,
    uniformity,
    uniformity_metrics,
)


def circle(angles: torch.Tensor) -> torch.Tensor:
    return torch.stack([angles.cos(), angles.sin()], dim=1)


def test_pos_similarity_by_hand():
    q = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    k = torch.tensor([[0.0, 2.0], [5.0, 0.0]])
    # cosines: 0 and 1/sqrt(2)
    assert pos_similarity(q, k).item() == pytest.approx((0 + 1 / math.sqrt(2)) / 2)
    with pytest.raises(ValueError, match="equal shape"):
        pos_similarity(q, k[:1])


def test_alignment_by_hand():
    q = torch.tensor([[3.0, 4.0], [1.0, 0.0]])
    k = torch.tensor([[4.0, 3.0], [0.0, 2.0]])
    # normalised: (0.6, 0.8) vs (0.8, 0.6) -> |d|^2 = 0.08; (1, 0) vs (0, 1) -> |d|^2 = 2
    assert alignment(q, k).item() == pytest.approx((0.08 + 2) / 2, rel=1e-6)


def test_uniformity_and_g_by_hand():
    points = circle(torch.tensor([0.0, math.pi / 2, math.pi])) * torch.tensor([[1.0], [2.0], [3.0]])
    # on the unit circle the pairwise squared distances are 2, 4, 2
    mean_potential = (math.exp(-4) + math.exp(-8) + math.exp(-4)) / 3
    assert uniformity(points).item() == pytest.approx(math.log(mean_potential), rel=1e-5)
    assert g_potential(points, reduce=None).item() == pytest.approx(mean_potential, rel=1e-5)
    assert uniformity(points, t=1).item() == pytest.approx(math.log((2 * math.exp(-2) + math.exp(-4)) / 3), rel=1e-5)


def test_g2_of_uniform_circle_is_papers_0_2070():
    """Paper Sec. 3.4: G_2 = 0.2070 for uniformly distributed samples = e^{-4} I_0(4) in closed form."""
    exact = math.exp(-4) * i0(4)
    assert exact == pytest.approx(0.2070, abs=5e-5)
    n = 3000
    points = circle(torch.arange(n) * (2 * math.pi / n))
    # evenly spaced points average exp(-4 + 4 cos) exactly over all pairs (self-pairs included);
    # the mean over distinct pairs removes the n self-pairs of potential 1
    distinct = (n * exact - 1) / (n - 1)
    assert g_potential(points, reduce=None).item() == pytest.approx(distinct, abs=2e-5)
    # the same circle embedded in a random plane of R^16: PCA recovers the plane, G_2 is unchanged
    basis, _ = torch.linalg.qr(torch.randn(16, 2, generator=torch.Generator().manual_seed(0)))
    embedded = points @ basis.T
    assert g_potential(embedded).item() == pytest.approx(distinct, abs=2e-5)


def test_reduce_to_2d_preserves_a_planar_configuration():
    angles = torch.rand(25, generator=torch.Generator().manual_seed(1)) * math.pi
    planar = circle(torch.cat([angles, angles + math.pi]))  # point-symmetric: centring changes nothing
    basis, _ = torch.linalg.qr(torch.randn(10, 2, generator=torch.Generator().manual_seed(2)))
    reduced = reduce_to_2d(planar @ basis.T)
    # a rotation/reflection of the original points: all pairwise inner products agree
    torch.testing.assert_close(reduced @ reduced.T, planar @ planar.T, atol=1e-5, rtol=1e-5)
    random = reduce_to_2d(torch.randn(30, 10), method="random")
    torch.testing.assert_close(random.norm(dim=1), torch.ones(30))
    with pytest.raises(ValueError, match="pca"):
        reduce_to_2d(planar, method="tsne")


def test_topk_accuracy_by_hand():
    scores = torch.tensor([[0.1, 0.5, 0.4], [0.9, 0.05, 0.06], [0.2, 0.3, 0.5]])
    labels = torch.tensor([2, 0, 0])
    # ranks of the true class: 2nd, 1st, 3rd
    assert topk_accuracy(scores, labels, ks=(1, 2, 5)) == pytest.approx([100 / 3, 200 / 3, 100.0])


def test_uniformity_metrics_subsamples_deterministically():
    features = torch.randn(300, 8, generator=torch.Generator().manual_seed(3))
    full = uniformity_metrics(features, max_samples=1000)
    assert full["uniformity"] == pytest.approx(uniformity(features).item())
    assert full["g2"] == pytest.approx(g_potential(features).item())
    assert uniformity_metrics(features, max_samples=100) == uniformity_metrics(features, max_samples=100)
    assert uniformity_metrics(features, max_samples=100) != full


def test_representation_metrics_on_identity_backbone():
    # 1x1x2 "images": the flattened backbone output is the pixel pair itself
    images = torch.tensor([[0, 10], [10, 0], [0, 0], [7, 7]], dtype=torch.uint8).view(4, 1, 1, 2)
    backbone = nn.Flatten()
    plain = lambda x: x.float() + torch.tensor([0.0, 1.0]).view(1, 1, 1, 2)  # noqa: E731 (keeps rows non-zero)
    opposite = lambda x: (plain(x), -plain(x))  # noqa: E731
    figures = representation_metrics(backbone, images, two_views=opposite, transform=plain, batch_size=3)
    assert figures["pos_similarity"] == pytest.approx(-1.0)
    assert figures["alignment"] == pytest.approx(4.0)  # |u - (-u)|^2 for unit u
    features = torch.tensor([[0.0, 11.0], [10.0, 1.0], [0.0, 1.0], [7.0, 8.0]])
    unit = features / features.norm(dim=1, keepdim=True)
    pairs = [(i, j) for i in range(4) for j in range(i + 1, 4)]
    mean_potential = sum(math.exp(-2 * (unit[i] - unit[j]).pow(2).sum().item()) for i, j in pairs) / len(pairs)
    assert figures["uniformity"] == pytest.approx(math.log(mean_potential), rel=1e-5)
