"""A PNG grid of source images and their augmented views, with the crop boxes drawn.

Each row is one image: the source with the central box where the center-suppressed crop centres
are drawn (dashed) and every crop box, then each view, un-normalised for display: view 1
(center-suppressed crop, the hallucinated branch) and view 2 of a two-view pipeline, or the global
then the local crops of a :class:`~hallucinator.data.multicrop.MultiCrop` (each in its own colour,
its box drawn in the source). ``hallucinator show-augmentations`` writes it.

    >>> write_grid(images, presets.build("cifar10-mocov2", 32), presets.recipe("cifar10-mocov2"), Path("grid.png"))
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from hallucinator.data import augment, multicrop, presets

VIEW_COLOURS = ("#ff3b30", "#00c7ff", "#34c759", "#ff9500", "#af52de", "#8e8e93", "#5856d6", "#ff2d55", "#a2845e")


def view_pipelines(pipeline: augment.TwoViews | multicrop.MultiCrop) -> list[tuple[str, augment.Compose]]:
    """``(column title, view pipeline)`` of each view, in the pipeline's order."""
    if isinstance(pipeline, augment.TwoViews):
        named = [("view 1 (hallucinated)", pipeline.view1), ("view 2", pipeline.view2)]
    else:
        names = [f"global {i + 1}" for i in range(pipeline.num_global)]
        names += [f"local {i + 1}" for i in range(len(pipeline.local_views))]
        named = list(zip(names, pipeline.views))
    columns = []
    for name, view in named:
        if not isinstance(view, augment.Compose):
            raise TypeError("write_grid draws the steps of Compose views (what presets.build makes)")
        suppressed = isinstance(pipeline, multicrop.MultiCrop) and _central_box(view, 1, 1) is not None
        columns.append((name + (" (c.-s.)" if suppressed else ""), view))
    return columns


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
    images: Tensor,
    pipeline: augment.TwoViews | multicrop.MultiCrop,
    recipe: presets.Recipe,
    output: Path,
    seed: int = 0,
    title: str = "",
) -> None:
    """Renders the grid for uint8 ``images`` ``(N, 3, H, W)`` and every view of ``pipeline`` to the PNG ``output``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    columns = view_pipelines(pipeline)
    colours = [VIEW_COLOURS[i % len(VIEW_COLOURS)] for i in range(len(columns))]
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        views = [run_view(view, images, generator) for _, view in columns]
    n, _, height, width = images.shape
    # constrained layout reserves room for the suptitle (tight_layout drew it over the column titles)
    figure, axes = plt.subplots(
        n, 1 + len(columns), figsize=(2.2 * (1 + len(columns)), 2.2 * n + 0.4), squeeze=False, layout="constrained"
    )
    titles = ["source (dashed: central box)", *(name for name, _ in columns)]
    sources = images.permute(0, 2, 3, 1)
    for row in range(n):
        ax = axes[row, 0]
        ax.imshow(sources[row].numpy(), interpolation="nearest")
        for (_, boxes), colour in zip(views, colours):
            if boxes is not None:
                x0, y0, x1, y1 = boxes[row].tolist()
                # imshow puts pixel centres on integers: shift by half a pixel to draw box edges.
                ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, edgecolor=colour, lw=1.5))
        for _, view_module in columns:
            box = _central_box(view_module, height, width)
            if box is not None:
                x0, y0, x1, y1 = box
                ax.add_patch(
                    Rectangle(
                        (x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, edgecolor="yellow", lw=1.2, linestyle="--"
                    )
                )
                break
        for column, ((pixels, _), colour) in enumerate(zip(views, colours), start=1):
            axes[row, column].imshow(_displayable(pixels[row : row + 1], recipe)[0].numpy(), interpolation="nearest")
            for spine in axes[row, column].spines.values():
                spine.set_edgecolor(colour)
                spine.set_linewidth(2)
        for column in range(1 + len(columns)):
            axes[row, column].set_xticks([])
            axes[row, column].set_yticks([])
            if row == 0:
                axes[row, column].set_title(titles[column], fontsize=9)
    if title:
        figure.suptitle(title, fontsize=9)
    output.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(output, dpi=100)
    plt.close(figure)
