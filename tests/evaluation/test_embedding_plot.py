"""Embeddings in 2-D (t-SNE, UMAP): checked by what the figure draws (points, colours, legend, axes), not its file."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch
from matplotlib.colors import to_rgba
from PIL import Image

from hallucinator.cli import main
from hallucinator.evaluation import embedding_plot
from hallucinator.evaluation.embedding_plot import MAX_LEGEND, embedding_figure, plot_embedding, project
from tests.evaluation.conftest import fabricate_checkpoint

FRUIT = ["apple", "banana", "cherry"]


def scatters(fig) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """What the figure's one axes draws: legend label -> (points, their RGBA colours)."""
    (ax,) = fig.axes
    return {c.get_label(): (np.asarray(c.get_offsets()), c.get_facecolors()) for c in ax.collections}


def one_colour(colours: np.ndarray) -> tuple[float, ...]:
    assert len(np.unique(colours, axis=0)) == 1  # every point of a class in its class's colour
    return tuple(colours[0])


def clusters(per_cluster: int, dims: int = 16, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Three tight clusters of ``per_cluster`` points around orthogonal directions: what any 2-D map keeps apart."""
    generator = torch.Generator().manual_seed(seed)
    centres = torch.eye(dims)[:3] * 5
    labels = torch.arange(3).repeat_interleave(per_cluster)
    return centres[labels] + 0.3 * torch.randn(len(labels), dims, generator=generator), labels


def neighbour_agreement(points: np.ndarray, labels: torch.Tensor) -> float:
    """The share of points whose nearest other point in the map has their label (computed here, independently)."""
    distances = torch.cdist(torch.as_tensor(points, dtype=torch.float64), torch.as_tensor(points, dtype=torch.float64))
    distances.fill_diagonal_(float("inf"))
    return float((labels[distances.argmin(dim=1)] == labels).double().mean())


def test_the_scatter_has_every_point_in_its_class_colour_and_a_legend_of_class_names() -> None:
    points = np.random.default_rng(0).normal(size=(10, 2))
    labels = np.array([0, 0, 0, 0, 0, 2, 2, 2, -1, -1])  # class 1 is absent
    fig = plot_embedding(points, labels, FRUIT, method="tsne", what="fruit photos")
    drawn = scatters(fig)
    assert list(drawn) == ["unlabelled", "apple", "cherry"]
    for name, rows in (("unlabelled", labels < 0), ("apple", labels == 0), ("cherry", labels == 2)):
        np.testing.assert_allclose(drawn[name][0], points[rows])
    colours = {name: one_colour(c) for name, (_, c) in drawn.items()}
    assert colours["unlabelled"] == to_rgba("black") and len(set(colours.values())) == 3
    (ax,) = fig.axes
    assert [text.get_text() for text in ax.get_legend().get_texts()] == ["unlabelled", "apple", "cherry"]
    assert (ax.get_xlabel(), ax.get_ylabel(), ax.get_title()) == ("t-SNE 1", "t-SNE 2", "t-SNE of 10 fruit photos")


def test_unlabelled_points_are_one_colour_and_many_classes_no_legend() -> None:
    points = np.random.default_rng(0).normal(size=(60, 2))
    fig = plot_embedding(points, None, method="umap")
    assert list(scatters(fig)) == ["unlabelled"] and fig.axes[0].get_legend() is None
    assert fig.axes[0].get_xlabel() == "UMAP 1"
    ten = plot_embedding(points, np.arange(60) % 11 - 1, [f"c{i}" for i in range(10)])  # tab10 has a grey
    assert len({one_colour(colours) for _, colours in scatters(ten).values()}) == 11
    many = MAX_LEGEND + 10  # colours by class, but a legend of 30 names would hide the map
    labels = np.arange(60) % many
    fig = plot_embedding(points, labels, [f"c{i}" for i in range(many)])
    drawn = scatters(fig)
    assert len(drawn) == many and fig.axes[0].get_legend() is None
    assert len({one_colour(colours) for _, colours in drawn.values()}) == many


@pytest.mark.parametrize("method", ["tsne", "umap"])
def test_the_map_keeps_clusters_apart_and_is_seeded(method: str) -> None:
    module, package = {"tsne": ("sklearn", "scikit-learn"), "umap": ("umap", "umap-learn")}[method]
    if importlib.util.find_spec(module) is None:  # umap-learn is not in the dev extra (docs/evaluation.md)
        pytest.skip(f"{package} is not installed: pip install 'hallucinator[{method}]'")
    features, labels = clusters(per_cluster=20)
    points = project(features, method, seed=0, threads=1)
    assert points.shape == (60, 2) and np.isfinite(points).all()
    assert neighbour_agreement(points, labels) == 1.0
    np.testing.assert_array_equal(points, project(features, method, seed=0, threads=1))
    # the features are L2-normalised first (the kNN's cosine): each row scaled by its own power of two (exact in
    # floating point) gives the same map, where the distances between the raw rows are not alike at all
    scales = 2.0 ** torch.randint(0, 5, (len(features), 1), generator=torch.Generator().manual_seed(1))
    np.testing.assert_array_equal(project(features * scales, method, seed=0, threads=1), points)


def test_embedding_figure_draws_a_stratified_subset() -> None:
    features, labels = clusters(per_cluster=30)
    fig = embedding_figure(features, labels, FRUIT, limit=30, threads=1, what="clusters")
    drawn = scatters(fig)
    assert {name: len(points) for name, (points, _) in drawn.items()} == {"apple": 10, "banana": 10, "cherry": 10}
    assert fig.axes[0].get_title() == "t-SNE of 30 clusters"


def test_a_missing_package_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "umap" else find_spec(name, *a))
    with pytest.raises(ValueError) as error:
        project(np.zeros((5, 4)), "umap")
    assert str(error.value) == (
        "--embedding umap needs umap-learn: pip install 'hallucinator[umap]' (or use --embedding tsne)"
    )


@pytest.fixture(scope="module")
def fruit_images(tmp_path_factory):
    """train/ and test/ folders of three classes, each class a colour with noise: 8 test images per class."""
    root = tmp_path_factory.mktemp("fruit")
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for label, name in enumerate(FRUIT):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(8):
                pixels = np.clip(rng.normal(60 + 70 * label, 20, (32, 32, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.png")
    return root


@pytest.fixture
def drawn_figures(monkeypatch: pytest.MonkeyPatch) -> list:
    """The figures the commands save, kept for inspection (then saved as usual)."""
    figures, save = [], embedding_plot.save_figure

    def keep(fig, path):
        figures.append(scatters(fig) | {"axes": fig.axes[0]})
        return save(fig, path)

    monkeypatch.setattr(embedding_plot, "save_figure", keep)
    return figures


def test_plot_embedding_command(fruit_images, tmp_path, capsys, drawn_figures) -> None:
    run = tmp_path / "run"
    fabricate_checkpoint(run, data_dir=str(fruit_images))
    out = tmp_path / "figures" / "tsne.png"
    args = ["plot", str(run), "--embedding", "tsne", "--out", str(out), "--cache-dir", str(tmp_path / "cache")]
    assert main([*args, "--limit", "12", "--threads", "1", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "embedding 12 cifar10 test images, device cpu ..." in printed and f"written: {out}" in printed
    assert out.is_file()
    (figure,) = drawn_figures
    ax = figure.pop("axes")
    assert {name: len(points) for name, (points, _) in figure.items()} == dict.fromkeys(FRUIT, 4)  # stratified
    assert [text.get_text() for text in ax.get_legend().get_texts()] == FRUIT
    assert ax.get_title().startswith("t-SNE of 12 cifar10 test images\n(simclr + Hallucinator, resnet18, ")
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("t-SNE 1", "t-SNE 2")


def test_plot_embedding_refuses_before_the_work(tmp_path, capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    ckpt = str(tmp_path / "missing.ckpt")
    assert main(["plot", ckpt, "--embedding", "tsne", "--out", str(tmp_path / "map.jpg")]) == 2
    assert (
        capsys.readouterr().err
        == f"hallucinator plot: {tmp_path / 'map.jpg'}: the figure must end in .png, .svg, .pdf\n"
    )
    assert main(["plot", ckpt, ckpt, "--embedding", "tsne"]) == 2
    assert "hallucinator plot: --embedding maps one checkpoint, got 2" in capsys.readouterr().err
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "sklearn" else find_spec(name, *a)
    )
    assert main(["plot", ckpt, "--embedding", "tsne", "--out", str(tmp_path / "map.png")]) == 2
    assert capsys.readouterr().err == (
        "hallucinator plot: --embedding tsne needs scikit-learn: pip install 'hallucinator[tsne]' "
        "(or use --embedding umap)\n"
    )


@pytest.mark.parametrize("labelled", [True, False], ids=["subfolders", "flat"])
def test_embed_plot_colours_by_subfolder(fruit_images, tmp_path, capsys, drawn_figures, labelled: bool) -> None:
    checkpoint = fabricate_checkpoint(tmp_path / "run", data_dir=str(fruit_images))
    photos = tmp_path / "photos"
    for i, source in enumerate(sorted((fruit_images / "test").rglob("*.png"))):
        target = photos / (source.parent.name if labelled else "") / f"{i}.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(source.read_bytes())
    args = ["embed", str(checkpoint), "--data-dir", str(photos), "--output", str(tmp_path / "e.npz"), "--no-progress"]
    figure_path = tmp_path / "map.svg"
    assert main([*args, "--plot", str(figure_path), "--threads", "1", "--cache-dir", str(tmp_path / "cache")]) == 0
    assert f"written: {figure_path}" in capsys.readouterr().out and figure_path.is_file()
    assert len(np.load(tmp_path / "e.npz")["paths"]) == 24
    (figure,) = drawn_figures
    ax = figure.pop("axes")
    if labelled:
        assert {name: len(points) for name, (points, _) in figure.items()} == dict.fromkeys(FRUIT, 8)
        assert len({one_colour(colours) for _, colours in figure.values()}) == 3
        assert [text.get_text() for text in ax.get_legend().get_texts()] == FRUIT
    else:
        ((name, (points, colours)),) = figure.items()
        assert (name, len(points), one_colour(colours)) == ("unlabelled", 24, to_rgba("black"))
        assert ax.get_legend() is None
    assert ax.get_title() == f"t-SNE of 24 images of {photos} (backbone)"
