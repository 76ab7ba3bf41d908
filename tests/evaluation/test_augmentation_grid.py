"""What ``show-augmentations`` draws: a title clear of the column headers, one row per image."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch

from hallucinator.data import presets
from hallucinator.evaluation.augmentation_grid import run_view, write_grid


def test_grid_title_does_not_cover_the_column_titles(tmp_path, monkeypatch):
    drawn = []
    monkeypatch.setattr(plt, "close", drawn.append)  # keep the figure open to inspect it
    images = torch.randint(
        0, 256, (8, 3, 32, 32), dtype=torch.uint8
    )  # the default; with 8 rows the title used to overlap
    two_views, recipe = presets.build("cifar10-mocov2", 32), presets.recipe("cifar10-mocov2")
    write_grid(images, two_views, recipe, tmp_path / "grid.png", title="cifar10-mocov2: center_fraction=0.5")
    (figure,) = drawn
    renderer = figure.canvas.get_renderer()
    suptitle = figure._suptitle.get_window_extent(renderer)
    axes = figure.get_axes()
    assert len(axes) == 8 * 3
    headers = [ax.title for ax in axes if ax.get_title()]
    assert [header.get_text() for header in headers] == [
        "source (dashed: central box)",
        "view 1 (hallucinated)",
        "view 2",
    ]
    for header in headers:
        assert not suptitle.overlaps(header.get_window_extent(renderer)), header.get_text()
    plt.close(figure)


def test_run_view_reproduces_the_module_forward():
    images = torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8)
    two = presets.build("cifar10-mocov2")
    expected = two.view1(images, generator=torch.Generator().manual_seed(4))
    out, boxes = run_view(two.view1, images, torch.Generator().manual_seed(4))
    assert torch.equal(out, expected) and boxes.shape == (6, 4)
