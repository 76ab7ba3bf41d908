"""Embeddings you can look at: features mapped to 2-D by t-SNE (scikit-learn) or UMAP (umap-learn), one colour per class.

The features are L2-normalised first, so that distances in the map follow the cosine the kNN
evaluation uses. :func:`plot_embedding` returns the matplotlib figure (one scatter per class, a
legend of class names up to :data:`MAX_LEGEND` classes) for :func:`save_figure` to write.

Example (``features``: ``(N, D)``, e.g. from ``extract_features``; ``labels``: ``(N,)``, -1 for none):
    >>> fig = embedding_figure(features, labels, ["airplane", "automobile", ...], method="tsne", limit=2000)
    >>> [len(scatter.get_offsets()) for scatter in fig.axes[0].collections]  # points per class
    >>> save_figure(fig, "embedding.png")  # doctest: +SKIP
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import Tensor  # noqa: E402

from hallucinator.evaluation.features import random_subset  # noqa: E402

__all__ = [
    "EMBEDDINGS",
    "check_embedding",
    "check_figure_path",
    "embedding_figure",
    "plot_embedding",
    "project",
    "save_figure",
]

# method -> (module it needs, its pip package, the extra that installs it, the name on the axes)
_METHODS = {
    "umap": ("umap", "umap-learn", "umap", "UMAP"),
    "tsne": ("sklearn", "scikit-learn", "tsne", "t-SNE"),
}
EMBEDDINGS = tuple(_METHODS)
FIGURE_SUFFIXES = (".png", ".svg", ".pdf")
MAX_LEGEND = 20
"""More classes than this are coloured without a legend (200 names would hide the map)."""
UNLABELED_COLOUR = "black"
"""Unlabelled points: a colour no class gets (tab10 and tab20 have greys, none has black)."""


def check_embedding(method: str) -> None:
    """A method not known or not installed is a one-line ``ValueError`` naming the extra, before any work."""
    if method not in _METHODS:
        raise ValueError(f"--embedding {method}: choose one of {', '.join(EMBEDDINGS)}")
    module, package, extra, _ = _METHODS[method]
    if importlib.util.find_spec(module) is None:
        other = next(name for name in EMBEDDINGS if name != method)
        raise ValueError(
            f"--embedding {method} needs {package}: pip install 'hallucinator[{extra}]' (or use --embedding {other})"
        )


def check_figure_path(path: str | Path) -> Path:
    """``path`` when its suffix is a figure format matplotlib writes (.png, .svg, .pdf), else a ``ValueError``."""
    path = Path(path)
    if path.suffix.lower() not in FIGURE_SUFFIXES:
        raise ValueError(f"{path}: the figure must end in {', '.join(FIGURE_SUFFIXES)}")
    return path


def project(
    features: Tensor | np.ndarray, method: str = "tsne", seed: int = 0, threads: int | None = None
) -> np.ndarray:
    """``(N, 2)`` coordinates of ``features`` ``(N, D)``, L2-normalised, by ``method`` (t-SNE or UMAP), seeded.

    ``threads`` caps the native thread pools (OpenMP, BLAS): on a CPU shared with other jobs, t-SNE on
    300 points took 50 s with 2 threads and 3 s with 1 (2-core Xeon under load, scikit-learn 1.9).
    """
    check_embedding(method)
    x = torch.nn.functional.normalize(torch.as_tensor(features).float(), dim=1).cpu().numpy()
    n = len(x)
    if n < 3:
        raise ValueError(f"a 2-D map needs at least 3 images, got {n}")
    from threadpoolctl import threadpool_limits  # a dependency of scikit-learn, which both methods use

    with threadpool_limits(threads) if threads else nullcontext():
        if method == "umap":
            import umap

            # a seeded UMAP runs on one thread (n_jobs=1 says so, without its warning); fewer neighbours than points
            reducer = umap.UMAP(n_components=2, n_neighbors=min(15, n - 1), random_state=seed, n_jobs=1)
            points = reducer.fit_transform(x)
        else:
            from sklearn.manifold import TSNE

            # perplexity must stay below the number of points; 30 is scikit-learn's default
            tsne = TSNE(n_components=2, perplexity=min(30.0, (n - 1) / 3), init="pca", random_state=seed)
            points = tsne.fit_transform(x)
    return np.asarray(points, dtype=np.float32)


def _colours(count: int) -> list[tuple[float, ...]]:
    """``count`` distinct colours: tab10 / tab20 when they suffice, else evenly spaced on a cyclic colormap."""
    if count <= 10:
        return [plt.get_cmap("tab10")(i) for i in range(count)]
    if count <= 20:
        return [plt.get_cmap("tab20")(i) for i in range(count)]
    return [plt.get_cmap("hsv")(i / count) for i in range(count)]


def plot_embedding(
    points: np.ndarray,
    labels: Sequence[int] | np.ndarray | Tensor | None = None,
    classes: Sequence[str] = (),
    *,
    method: str = "tsne",
    what: str = "embeddings",
) -> plt.Figure:
    """A scatter of ``points`` ``(N, 2)``: one colour and one legend entry (its class name) per class present,
    unlabelled points (-1, or ``labels=None``) in black; axes named after the method, the title
    ``"t-SNE of N <what>"``. Returns the figure.

    ``classes[c]`` names label ``c``; without it (or past :data:`MAX_LEGEND` classes) there is no legend.
    """
    points = np.asarray(points)
    labels = np.full(len(points), -1) if labels is None else np.asarray(labels).reshape(-1)
    if points.ndim != 2 or points.shape[1] != 2 or len(labels) != len(points):
        raise ValueError(f"points must be (N, 2) with N labels, got {points.shape} and {len(labels)} labels")
    present = sorted(int(c) for c in np.unique(labels) if c >= 0)
    colours = dict(zip(present, _colours(len(present))))
    legend = bool(present) and len(classes) > 0 and len(present) <= MAX_LEGEND
    fig, ax = plt.subplots(figsize=(7, 6))
    size = 12 if len(points) <= 2000 else 4
    if (labels < 0).any():
        unlabeled = points[labels < 0]
        ax.scatter(unlabeled[:, 0], unlabeled[:, 1], s=size, c=[UNLABELED_COLOUR], label="unlabelled", linewidths=0)
    for c in present:
        name = classes[c] if c < len(classes) else str(c)
        members = points[labels == c]
        ax.scatter(members[:, 0], members[:, 1], s=size, color=colours[c], label=name, linewidths=0)
    axis = _METHODS[method][3] if method in _METHODS else method
    ax.set_xlabel(f"{axis} 1")
    ax.set_ylabel(f"{axis} 2")
    ax.set_title(f"{axis} of {len(points):,} {what}")
    ax.set_xticks([])
    ax.set_yticks([])  # the map's coordinates have no units
    if legend:
        ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1), fontsize="small", markerscale=2, frameon=False)
    return fig


def embedding_figure(
    features: Tensor,
    labels: Tensor,
    classes: Sequence[str] = (),
    *,
    method: str = "tsne",
    limit: int | None = None,
    seed: int = 0,
    threads: int | None = None,
    what: str = "embeddings",
) -> plt.Figure:
    """:func:`plot_embedding` of :func:`project`: of a fixed random, class-stratified ``limit`` of the rows
    (all of them when ``None``; ``hallucinator.evaluation.features.random_subset``)."""
    features, labels = random_subset(features, labels, limit, seed)
    points = project(features, method, seed=seed, threads=threads)
    return plot_embedding(points, labels, classes, method=method, what=what)


def save_figure(fig: plt.Figure, path: str | Path) -> Path:
    """Writes ``fig`` to ``path`` (format from the suffix) under a temporary name, then renames it; closes ``fig``."""
    path = check_figure_path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}{path.suffix}")
    try:
        fig.savefig(tmp, dpi=150, bbox_inches="tight")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
        plt.close(fig)
    return path
