"""The training plots (Fig. 4, loss and kNN curves) and the feature-distribution figure, from what each run logged."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from hallucinator.evaluation.metrics import reduce_to_2d
from hallucinator.evaluation.plots import (
    circle_kde,
    metric_series,
    plot_budget_curve,
    plot_feature_distribution,
    plot_positive_similarity,
    plot_training_curves,
    read_metrics,
)
from tests.evaluation.conftest import EPOCHS, STEPS, STEPS_PER_EPOCH, make_run, series, write_metrics


def test_metric_series_maps_steps_to_epochs(tmp_path):
    write_metrics(tmp_path, 1.0)
    metrics = read_metrics(tmp_path)
    epochs, knn = metric_series(metrics, "knn_top1")
    np.testing.assert_allclose(epochs, [1, 2, 3])
    np.testing.assert_allclose(knn, [20, 30, 40])
    epochs, loss = metric_series(metrics, "loss")  # train/loss
    assert len(loss) == 30 and epochs[0] == pytest.approx(0.1) and epochs[-1] == pytest.approx(3.0)
    assert metric_series(metrics, "absent")[1].size == 0
    # a resumed run writes csv/version_1/metrics.csv: appended after version_0
    resumed = tmp_path / "csv" / "version_1" / "metrics.csv"
    resumed.parent.mkdir()
    resumed.write_text("epoch,step,knn_top1\n3,39,55.0\n")
    epochs, knn = metric_series(read_metrics(tmp_path), "knn_top1")
    np.testing.assert_allclose(knn, [20, 30, 40, 55])
    assert epochs[-1] == pytest.approx(4.0)
    with pytest.raises(FileNotFoundError, match="pretrain"):
        read_metrics(tmp_path / "nowhere")


def assert_images(paths):
    assert [p.suffix for p in paths] == [".png", ".svg"]
    assert paths[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "<svg" in paths[1].read_text()[:2000]


def test_training_plots_draw_each_runs_logged_values(tmp_path, drawn):
    runs = {
        "without": make_run(tmp_path, "a", hallucinator=False, seed=0),
        "with": make_run(tmp_path, "b", hallucinator=True, seed=0, slope=0.5),
    }
    # the Hallucinator run also logged its hallucinated pair's similarity
    csv_path = runs["with"] / "csv" / "version_0" / "metrics.csv"
    rows = csv_path.read_text().splitlines()
    csv_path.write_text(
        "\n".join(
            [rows[0] + ",train/hal_similarity"] + [row + ("," if row.split(",")[2] else ",0.5") for row in rows[1:]]
        )
        + "\n"
    )
    assert_images(plot_positive_similarity(runs, tmp_path / "out" / "fig4"))
    (similarity,) = drawn[0].axes
    assert (similarity.get_xlabel(), similarity.get_ylabel()) == ("epoch", "similarity of positive pairs S")
    lines = series(similarity)
    assert list(lines) == ["without", "with", "with (hallucinated pair)"]
    epochs = (STEPS + 1) / STEPS_PER_EPOCH  # a value logged at step s is drawn at epoch (s + 1) / steps per epoch
    for label, slope in (("without", 1.0), ("with", 0.5)):
        np.testing.assert_allclose(lines[label][0], epochs)
        np.testing.assert_allclose(lines[label][1], 1 - slope * STEPS / 100)  # write_metrics' pos_similarity
    np.testing.assert_allclose(lines["with (hallucinated pair)"][1], 0.5)
    assert (
        similarity.lines[2].get_linestyle() == "--"
        and similarity.lines[2].get_color() == similarity.lines[1].get_color()
    )

    assert_images(plot_training_curves(runs, tmp_path / "out" / "curves"))
    loss, knn = drawn[1].axes
    assert (loss.get_ylabel(), knn.get_ylabel()) == ("training loss", "kNN top-1 (%)")
    for label, slope in (("without", 1.0), ("with", 0.5)):
        np.testing.assert_allclose(series(loss)[label][1], 5 - slope * STEPS)
        np.testing.assert_allclose(series(knn)[label][0], [1, 2, 3])  # the kNN row closes each epoch
        np.testing.assert_allclose(series(knn)[label][1], [20 + 10 * epoch * slope for epoch in range(EPOCHS)])


def test_feature_distribution_plot_draws_every_run_and_its_g2(tmp_path, drawn):
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(600) % 10
    features = torch.randn(600, 16, generator=generator) + torch.randn(10, 16, generator=generator)[labels]
    runs = {"MoCo v2": (features, labels), "+ Hallucinator": (features.flip(1), labels)}
    assert_images(plot_feature_distribution(runs, tmp_path / "fig5", class_names=[f"c{i}" for i in range(10)]))
    axes = np.array(drawn[0].axes).reshape(3, 3)  # rows: KDE, angle histogram, classes; columns: reference + runs
    titles = [ax.get_title().split("\n") for ax in axes[0]]
    assert [title[0] for title in titles] == ["uniform", "MoCo v2", "+ Hallucinator"]
    keep = torch.randperm(600, generator=torch.Generator().manual_seed(0))
    for (label, (run_features, _)), title in zip(runs.items(), titles[1:]):
        points = reduce_to_2d(run_features[keep]).double()
        g2 = torch.exp(-2 * torch.pdist(points).square()).mean().item()  # independently: mean pair potential
        assert title[1] == f"$G_2$ = {g2:.4f}", label
    assert all(len(ax.patches) == 60 for ax in axes[1])  # 60 angle bins per column
    assert not axes[2, 0].axison  # the uniform reference has no classes
    for ax in axes[2, 1:]:
        assert [text.get_text() for text in ax.get_legend().get_texts()] == ["c1", "c6"]


def test_circle_kde_integrates_to_one():
    angles = torch.rand(400, generator=torch.Generator().manual_seed(0)) * 2 * math.pi
    # a bandwidth well inside the grid's 0.25 margin, so (almost) no mass falls outside it
    density, extent = circle_kde(torch.stack([angles.cos(), angles.sin()], 1), grid_size=200, bandwidth=0.06)
    cell = (2 * extent / 199) ** 2
    assert density.sum() * cell == pytest.approx(1.0, abs=0.03)
    assert density[100, 100] < density.max() / 10  # the centre of the ring is empty


def test_a_legend_of_many_runs_sits_beside_the_axes(tmp_path, drawn):
    runs = {f"r{i}": make_run(tmp_path, f"r{i}", hallucinator=False, seed=i) for i in range(5)}
    for chosen in (dict(list(runs.items())[:2]), runs):
        plot_positive_similarity(chosen, tmp_path / "fig4")
        ax = drawn[-1].axes[0]
        legend = ax.get_legend()
        assert [text.get_text() for text in legend.get_texts()] == list(chosen)
        anchor = legend.get_bbox_to_anchor().transformed(ax.transAxes.inverted())
        # 2 runs: anchored to the axes themselves; 5: to the right of them, where no curve is hidden
        assert anchor.x0 == pytest.approx(0.0 if len(chosen) == 2 else 1.02)


def test_a_legend_of_long_arm_names_sits_below_the_axes(tmp_path, drawn):
    long_name = "hallucinator.enabled=True, hallucinator.loss_form=average, hallucinator.warmup_fraction=0.5"
    plot_budget_curve({"hallucinator.enabled=False": [(4, 54.7, None)], long_name: [(4, 53.7, 0.3)]}, tmp_path / "c")
    ax = drawn[-1].axes[0]
    anchor = ax.get_legend().get_bbox_to_anchor().transformed(ax.transAxes.inverted())
    assert anchor.y0 < 0 and anchor.x0 == pytest.approx(0.5)  # below, centred: beside, it would double the width
