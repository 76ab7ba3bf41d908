"""A PNG grid of source images and their two augmented views, with the crop boxes drawn.

Each row is one image: the source with the central box where view 1's crop centres are drawn
(dashed) and both crop boxes, then view 1 (center-suppressed crop, the hallucinated branch) and
view 2, un-normalised for display. ``hallucinator show-augmentations`` writes it.

    >>> write_grid(images, presets.build("cifar10-mocov2", 32), presets.recipe("cifar10-mocov2"), Path("grid.png"))
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from hallucinator.data import augment, presets

VIEW_COLOURS = ("#ff3b30", "#00c7ff")


def run_view(view: augment.Compose, images: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor | None]:
    """``view(images, generator)`` step by step, also returning the crop boxes it drew (same random stream)."""
    out = augment.to_float(images)
    boxes = None
    for op in view.ops:
        if isinstance(op, augment.RandomResizedCrop):
            boxes = op.sample_boxes(out.shape[0], out.shape[-2], out.shape[-1], generator, out.device)
            out = op.crop(out, boxes)
        else:
            out = op(out, generator=generator)
    return out, boxes


def _central_box(view: augment.Compose, height: int, width: int) -> tuple[float, float, float, float] | None:
    for op in view.ops:
        if isinstance(op, augment.CenterSuppressedResizedCrop):
            return op.central_box(height, width)
    return None


def _displayable(images: Tensor, recipe: presets.Recipe) -> Tensor:
    mean = torch.tensor(recipe.mean).view(1, 3, 1, 1)
    std = torch.tensor(recipe.std).view(1, 3, 1, 1)
    return (images * std + mean).clamp(0, 1).permute(0, 2, 3, 1)


def write_grid(
    images: Tensor, two_views: augment.TwoViews, recipe: presets.Recipe, output: Path, seed: int = 0, title: str = ""
) -> None:
    """Renders the grid for uint8 ``images`` ``(N, 3, H, W)`` to the PNG ``output``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    view1, view2 = two_views.view1, two_views.view2
    if not (isinstance(view1, augment.Compose) and isinstance(view2, augment.Compose)):
        raise TypeError("write_grid draws the steps of Compose views (what presets.build makes)")
    pipelines = (view1, view2)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        views = [run_view(view, images, generator) for view in pipelines]
    n, _, height, width = images.shape
    # constrained layout reserves room for the suptitle (tight_layout drew it over the column titles)
    figure, axes = plt.subplots(n, 3, figsize=(6.6, 2.2 * n + 0.4), squeeze=False, layout="constrained")
    titles = ("source (dashed: central box)", "view 1 (hallucinated)", "view 2")
    sources = images.permute(0, 2, 3, 1)
    for row in range(n):
        ax = axes[row, 0]
        ax.imshow(sources[row].numpy(), interpolation="nearest")
        for (_, boxes), colour in zip(views, VIEW_COLOURS):
            if boxes is not None:
                x0, y0, x1, y1 = boxes[row].tolist()
                # imshow puts pixel centres on integers: shift by half a pixel to draw box edges.
                ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, edgecolor=colour, lw=1.5))
        for view_module in pipelines:
            box = _central_box(view_module, height, width)
            if box is not None:
                x0, y0, x1, y1 = box
                ax.add_patch(
                    Rectangle(
                        (x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, edgecolor="yellow", lw=1.2, linestyle="--"
                    )
                )
                break
        for column, (pixels, _) in enumerate(views, start=1):
            axes[row, column].imshow(_displayable(pixels[row : row + 1], recipe)[0].numpy(), interpolation="nearest")
            for spine in axes[row, column].spines.values():
                spine.set_edgecolor(VIEW_COLOURS[column - 1])
                spine.set_linewidth(2)
        for column in range(3):
            axes[row, column].set_xticks([])
            axes[row, column].set_yticks([])
            if row == 0:
                axes[row, column].set_title(titles[column], fontsize=9)
    if title:
        figure.suptitle(title, fontsize=9)
    output.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(output, dpi=100)
    plt.close(figure)
