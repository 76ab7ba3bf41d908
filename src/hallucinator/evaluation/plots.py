"""The paper's figures, as PNG and SVG (matplotlib, Agg backend).

- :func:`plot_positive_similarity`: Fig. 4, similarity of positive pairs during training,
  several runs on one axes (from each run's ``csv/version_N/metrics.csv``).
- :func:`plot_feature_distribution`: Fig. 5, features reduced to 2-D by PCA (see
  :func:`hallucinator.evaluation.metrics.reduce_to_2d`), L2-normalised onto the circle, a
  Gaussian KDE in R^2, the histogram of angles and per-class angle densities, with the
  ``G_2`` figure; a uniform reference and the runs side by side.
- :func:`plot_training_curves`: loss and kNN top-1 over epochs.
- :func:`plot_budget_curve`: a figure against the training budget, one line per arm, error bars over seeds.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import Tensor  # noqa: E402

from hallucinator.evaluation.metrics import g_potential, reduce_to_2d  # noqa: E402


def _save(fig: plt.Figure, out: str | Path) -> list[Path]:
    """Writes ``out`` with ``.png`` and ``.svg`` suffixes; returns both paths."""
    stem = Path(out).with_suffix("")
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = [stem.with_suffix(".png"), stem.with_suffix(".svg")]
    for path in paths:
        fig.savefig(path, dpi=150, bbox_inches="tight")
    plt.close(fig)
    return paths


def metrics_files(run_dir: str | Path) -> list[Path]:
    """A run's metrics CSVs in order: ``csv/version_N/metrics.csv``, one per (re)start (or the CSV itself)."""
    run_dir = Path(run_dir)
    if run_dir.suffix == ".csv":
        return [run_dir] if run_dir.is_file() else []
    return sorted(run_dir.glob("csv/version_*/metrics.csv"), key=lambda p: int(p.parent.name.split("_")[1]))


def read_metrics(run_dir: str | Path) -> dict[str, np.ndarray]:
    """The columns of a run's metrics CSV(s) (or one CSV path) as float arrays; empty cells are NaN.

    A resumed run's files are concatenated in order, so the curves span the whole run.
    """
    files = metrics_files(run_dir)
    if not files:
        raise FileNotFoundError(
            f"no metrics CSV under {run_dir}: pass a run directory written by `hallucinator pretrain`"
        )
    rows: list[dict[str, str]] = []
    for path in files:
        with path.open(newline="") as handle:
            rows += list(csv.DictReader(handle))
    names = list(dict.fromkeys(name for row in rows for name in row))
    return {
        name: np.array([float(row[name]) if row.get(name) not in ("", None) else math.nan for row in rows])
        for name in names
    }


def metric_series(metrics: Mapping[str, np.ndarray], name: str) -> tuple[np.ndarray, np.ndarray]:
    """``(epochs, values)`` of metric ``name`` (``train/<name>`` also matches); steps become fractional epochs.

    Lightning's CSV logger writes one row per logging call; the x-axis is ``step`` scaled by
    the steps per epoch of the run, so runs with different batch sizes share the axis.
    """
    column = next((c for c in (name, f"train/{name}", f"{name}_epoch", f"train/{name}_step") if c in metrics), None)
    if column is None:
        return np.empty(0), np.empty(0)
    values = metrics[column]
    keep = ~np.isnan(values)
    step, epoch = metrics.get("step"), metrics.get("epoch")
    if step is None or epoch is None:
        return np.arange(keep.sum(), dtype=float), values[keep]
    return (step[keep] + 1) / _steps_per_epoch(step, epoch), values[keep]


def _steps_per_epoch(step: np.ndarray, epoch: np.ndarray) -> float:
    """Median distance between the first steps of successive epochs (robust to a run cut off mid-epoch).

    A value logged at the last step of epoch ``e`` maps to ``e + 1`` on the x-axis.
    """
    starts = np.array([np.nanmin(step[epoch == e]) for e in np.unique(epoch[~np.isnan(epoch)])])
    if len(starts) >= 2:
        return float(np.median(np.diff(starts)))
    return float((np.nanmax(step) + 1) / (np.nanmax(epoch) + 1))


def _legend(ax: plt.Axes) -> None:
    """Inside the axes for a few short labels; outside for more, where it would hide the curves (``_save`` crops
    tight): beside them, or below them for long labels (sweep arms), which beside would make the figure too wide."""
    labels = ax.get_legend_handles_labels()[1]
    longest = max(map(len, labels), default=0)
    if len(labels) <= 4 and longest <= 40:
        ax.legend()
    elif longest <= 40:
        ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1), fontsize="small")
    else:
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), fontsize="small", frameon=False)


def _smooth(values: np.ndarray, window: int) -> np.ndarray:
    if window <= 1 or len(values) < window:
        return values
    kernel = np.ones(window) / window
    padded = np.pad(values, (window // 2, window - 1 - window // 2), mode="edge")
    return np.convolve(padded, kernel, mode="valid")


def plot_positive_similarity(
    runs: Mapping[str, str | Path], out: str | Path, *, smoothing: int | None = None
) -> list[Path]:
    """Fig. 4: ``train/pos_similarity`` of every run (``label -> run dir``) over epochs, on one axes, and,
    dashed in the same colour, ``train/hal_similarity`` (the hallucinated pair) of runs that logged it.

    Fig. 4's three curves are a plain run, a run with ``hallucinator.extrapolation_mode=symmetric``
    and a Hallucinator run. ``smoothing``: moving-average window in logged points (default: 2 % of
    the run's points).
    """
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, run_dir in runs.items():
        metrics = read_metrics(run_dir)
        x, y = metric_series(metrics, "pos_similarity")
        if len(y) == 0:
            raise ValueError(f"{run_dir}: metrics.csv has no pos_similarity column (was it written by pretrain?)")
        (line,) = ax.plot(x, _smooth(y, smoothing or max(1, len(y) // 50)), label=label)
        x, y = metric_series(metrics, "hal_similarity")
        if len(y):
            ax.plot(
                x,
                _smooth(y, smoothing or max(1, len(y) // 50)),
                linestyle="--",
                color=line.get_color(),
                label=f"{label} (hallucinated pair)",
            )
    ax.set(xlabel="epoch", ylabel="similarity of positive pairs S", title="Similarity of positives during training")
    ax.grid(alpha=0.3)
    _legend(ax)
    return _save(fig, out)


def plot_training_curves(runs: Mapping[str, str | Path], out: str | Path) -> list[Path]:
    """Loss (left) and kNN top-1 (right, when the run logged ``knn_top1``) over epochs."""
    fig, (loss_ax, knn_ax) = plt.subplots(1, 2, figsize=(11, 4))
    for label, run_dir in runs.items():
        metrics = read_metrics(run_dir)
        x, y = metric_series(metrics, "loss")
        loss_ax.plot(x, _smooth(y, max(1, len(y) // 50)), label=label)
        x, y = metric_series(metrics, "knn_top1")
        if len(y):
            knn_ax.plot(x, y, marker="o", label=label)
    loss_ax.set(xlabel="epoch", ylabel="training loss", title="Loss")
    knn_ax.set(xlabel="epoch", ylabel="kNN top-1 (%)", title="kNN accuracy")
    if not knn_ax.lines:
        knn_ax.text(
            0.5,
            0.5,
            "no knn_top1 logged\n(trainer.knn_every_n_epochs)",
            ha="center",
            va="center",
            transform=knn_ax.transAxes,
        )
    for ax in (loss_ax, knn_ax):
        ax.grid(alpha=0.3)
    if knn_ax.lines:
        _legend(knn_ax)
    elif loss_ax.lines:
        _legend(loss_ax)
    return _save(fig, out)


def circle_kde(points: Tensor, grid_size: int = 120, bandwidth: float | None = None) -> tuple[np.ndarray, float]:
    """Gaussian KDE of 2-D ``points`` on ``[-1.25, 1.25]^2``: ``(grid_size, grid_size)`` density and extent.

    Bandwidth defaults to Scott's rule for 2-D data, ``n^(-1/6)`` times the mean std.
    """
    points = points.double()
    if bandwidth is None:
        bandwidth = float(points.std(dim=0).mean()) * len(points) ** (-1 / 6)
    axis = torch.linspace(-1.25, 1.25, grid_size, dtype=torch.float64)
    grid = torch.stack(torch.meshgrid(axis, axis, indexing="xy"), dim=-1).reshape(-1, 2)
    density = torch.cat(
        [torch.exp(-torch.cdist(chunk, points).square() / (2 * bandwidth**2)).mean(dim=1) for chunk in grid.split(4096)]
    ) / (2 * math.pi * bandwidth**2)
    return density.reshape(grid_size, grid_size).numpy(), 1.25


def uniform_circle(n: int, seed: int = 0) -> Tensor:
    """``n`` points drawn uniformly on the unit circle (the reference column of Fig. 5)."""
    angles = torch.rand(n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 2 * math.pi
    return torch.stack([angles.cos(), angles.sin()], dim=1).float()


def plot_feature_distribution(
    runs: Mapping[str, tuple[Tensor, Tensor]],
    out: str | Path,
    *,
    classes: Sequence[int] = (1, 6),
    class_names: Sequence[str] | None = None,
    max_points: int = 10000,
    reduce: str = "pca",
) -> list[Path]:
    """Fig. 5: per run (``label -> (features, labels)``) a column of three panels.

    Rows: the Gaussian KDE of the features on the circle (after 2-D reduction and L2
    normalisation; ``G_2`` in the title), the histogram of their angles, and the angle
    densities of ``classes`` (the paper shows CIFAR-10 classes 1 and 6) overlaid to show
    their overlap. The first column is a uniform sample on the circle for reference.
    """
    columns: dict[str, tuple[Tensor, Tensor | None]] = {}
    for label, (features, labels) in runs.items():
        if len(features) != len(labels):
            raise ValueError(f"{label}: {len(features)} features but {len(labels)} labels")
        keep = torch.randperm(len(features), generator=torch.Generator().manual_seed(0))[:max_points]
        columns[label] = reduce_to_2d(features[keep].cpu(), reduce), labels[keep].cpu()
    if not columns:
        raise ValueError("plot_feature_distribution needs at least one run")
    reference_size = min(max_points, max(len(points) for points, _ in columns.values()))
    columns = {"uniform": (uniform_circle(reference_size), None), **columns}
    fig, axes = plt.subplots(3, len(columns), figsize=(3.2 * len(columns), 9.2), squeeze=False)
    bins = np.linspace(-math.pi, math.pi, 61)
    for col, (label, (points, point_labels)) in enumerate(columns.items()):
        density, extent = circle_kde(points)
        kde_ax, hist_ax, class_ax = axes[:, col]
        kde_ax.imshow(density, origin="lower", extent=(-extent, extent, -extent, extent), cmap="viridis")
        kde_ax.set_title(f"{label}\n$G_2$ = {g_potential(points, reduce=None).item():.4f}")
        kde_ax.set_aspect("equal")
        kde_ax.set_xticks([]), kde_ax.set_yticks([])
        angles = torch.atan2(points[:, 1], points[:, 0]).numpy()
        hist_ax.hist(angles, bins=bins, density=True, color="tab:blue", alpha=0.8)
        hist_ax.set(xlim=(-math.pi, math.pi), xlabel="angle (rad)", ylabel="density" if col == 0 else None)
        if point_labels is None:
            class_ax.axis("off")
            continue
        for c in classes:
            chosen = angles[(point_labels == c).numpy()]
            name = class_names[c] if class_names and c < len(class_names) else f"class {c}"
            if len(chosen):
                class_ax.hist(chosen, bins=bins, density=True, histtype="stepfilled", alpha=0.45, label=name)
        class_ax.set(xlim=(-math.pi, math.pi), xlabel="angle (rad)")
        if class_ax.patches:
            class_ax.legend(fontsize="small")
    fig.suptitle(f"Feature distribution on the circle ({reduce.upper()} to 2-D, L2-normalised)")
    fig.tight_layout()
    return _save(fig, out)


def plot_budget_curve(
    curves: Mapping[str, Sequence[tuple[float, float, float | None]]], out: str | Path, ylabel: str = "kNN top-1 (%)"
) -> list[Path]:
    """``curves``: arm -> ``(epochs, mean, std or None)`` points; one line per arm, error bars where there is a std.

    Example:
        >>> plot_budget_curve({"plain": [(4, 54.3, 1.0), (16, 70.1, None)]}, "budget_curve.png")
    """
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for arm, points in curves.items():
        points = sorted(points)
        epochs = [p[0] for p in points]
        means = [p[1] for p in points]
        errors = [p[2] if p[2] is not None else 0.0 for p in points]
        ax.errorbar(epochs, means, yerr=errors, marker="o", capsize=3, label=arm)
    ax.set_xscale("log", base=2)
    ticks = sorted({p[0] for points in curves.values() for p in points})
    ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
    ax.set_xlabel("pre-training epochs (log scale)")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    _legend(ax)
    return _save(fig, out)
