from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch

from hallucinator.evaluation.knn import knn_classify, knn_scores
from tests.evaluation.conftest import raw_pixel_features


def brute_force_scores(bank, bank_labels, queries, k, temperature, num_classes):
    """InstDisc's vote, one test sample at a time in plain Python."""
    scores = []
    for query in queries.tolist():
        sims = []
        for row, label in zip(bank.tolist(), bank_labels.tolist()):
            dot = sum(a * b for a, b in zip(query, row))
            norm = math.sqrt(sum(a * a for a in query)) * math.sqrt(sum(b * b for b in row))
            sims.append((dot / norm, label))
        sims.sort(reverse=True)
        votes = [0.0] * num_classes
        for sim, label in sims[:k]:
            votes[label] += math.exp(sim / temperature)
        scores.append(votes)
    return torch.tensor(scores)


@pytest.fixture
def clusters():
    generator = torch.Generator().manual_seed(0)
    centres = torch.randn(5, 8, generator=generator)
    bank_labels = torch.randint(0, 5, (120,), generator=generator)
    bank = centres[bank_labels] + 0.8 * torch.randn(120, 8, generator=generator)
    test_labels = torch.randint(0, 5, (40,), generator=generator)
    queries = centres[test_labels] + 0.8 * torch.randn(40, 8, generator=generator)
    return bank, bank_labels, queries, test_labels


@pytest.mark.parametrize("k", [1, 7, 200])  # 200 > bank size: every bank feature votes
@pytest.mark.parametrize("chunks", [(1024, 65536), (9, 13)])  # one chunk; query and bank chunks with remainders
def test_scores_match_brute_force(clusters, k, chunks):
    bank, bank_labels, queries, _ = clusters
    expected = brute_force_scores(bank, bank_labels, queries, k, 0.1, 5)
    scores = knn_scores(
        bank, bank_labels, queries, k=k, temperature=0.1, num_classes=5, chunk_size=chunks[0], bank_chunk_size=chunks[1]
    )
    torch.testing.assert_close(scores, expected, rtol=1e-4, atol=1e-6 * expected.max().item())


def test_accuracy_matches_brute_force_votes(clusters):
    bank, bank_labels, queries, test_labels = clusters
    expected = brute_force_scores(bank, bank_labels, queries, 20, 0.07, 5)
    ranked = expected.argsort(dim=1, descending=True)
    top1 = 100 * (ranked[:, 0] == test_labels).float().mean().item()
    top5 = 100 * (ranked[:, :5] == test_labels[:, None]).any(1).float().mean().item()
    result = knn_classify(bank, bank_labels, queries, test_labels, k=20, temperature=0.07, bank_chunk_size=50)
    assert result.top1 == pytest.approx(top1)
    assert result.top5 == pytest.approx(top5) == 100.0  # 5 classes: top-5 always hits
    assert 50 < result.top1 < 100  # the clusters overlap but are far from chance (20 %)


def test_scale_invariance_and_errors(clusters):
    bank, bank_labels, queries, test_labels = clusters
    # cosine similarity: rescaling features must not change anything
    assert knn_classify(3 * bank, bank_labels, queries / 7, test_labels) == knn_classify(
        bank, bank_labels, queries, test_labels
    )
    with pytest.raises(ValueError, match="dimension"):
        knn_classify(bank, bank_labels, queries[:, :4], test_labels)
    with pytest.raises(ValueError, match="unlabeled"):
        knn_classify(bank, -torch.ones_like(bank_labels), queries, test_labels)
    with pytest.raises(ValueError, match="temperature"):
        knn_classify(bank, bank_labels, queries, test_labels, temperature=0)


def test_raw_pixel_1nn_reproduces_readme_sanity_figure(cifar10_sanity_split):
    """Shared datasets README: 1-NN on raw, mean-centred, L2-normalised pixels, 1,000/200 per class = 34.5 %."""
    train_images, train_labels = cifar10_sanity_split["train"]
    test_images, test_labels = cifar10_sanity_split["test"]
    result = knn_classify(
        raw_pixel_features(train_images),
        train_labels,
        raw_pixel_features(test_images),
        test_labels,
        k=1,
        chunk_size=500,
        bank_chunk_size=4096,
    )
    assert result.top1 == pytest.approx(34.5, abs=0.06)


def test_random_subset_is_fixed_ordered_and_spans_classes():
    from hallucinator.evaluation.features import random_subset

    images, labels = torch.arange(100).view(100, 1, 1, 1), torch.arange(100) // 10  # sorted by class
    sub_images, sub_labels = random_subset(images, labels, 20)
    assert torch.equal(sub_labels, labels[sub_images.flatten()]) and sub_labels.unique().numel() > 5
    assert bool((sub_images.flatten().diff() > 0).all())  # dataset order kept
    assert torch.equal(random_subset(images, labels, 20)[0], sub_images)  # fixed seed
    assert random_subset(images, labels, None)[0] is images


def test_plain_knn_imports_no_lightning():
    """Users' own code may run kNN without Lightning installed: only the monitor needs it."""
    code = (
        "import sys, hallucinator.evaluation, hallucinator.evaluation.knn;"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('lightning', 'pytorch_lightning')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    from hallucinator.evaluation import KNNMonitor  # still reachable from the package, loaded on first use

    assert KNNMonitor.__module__ == "hallucinator.evaluation.monitor"
