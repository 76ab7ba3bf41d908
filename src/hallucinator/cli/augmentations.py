"""``hallucinator show-augmentations``: a PNG grid of source images and their views (two, or a config's multi-crop).

The grid itself is :mod:`hallucinator.evaluation.augmentation_grid`; this module only parses the
command line, so that ``hallucinator --help`` imports no torch.

    hallucinator show-augmentations --dataset cifar10 --data-dir ../shared/datasets/cifar10-jpeg.tar.gz \\
        --preset cifar10-mocov2 --output grid.png --num-images 8
    hallucinator show-augmentations --config configs/quickstart_dino.yaml --output crops.png  # the global and local crops
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hallucinator.data.augment import TwoViews
    from hallucinator.data.multicrop import MultiCrop


def show_augmentations(args: argparse.Namespace) -> int:
    import torch

    from hallucinator.data import build_dataset, presets
    from hallucinator.evaluation.augmentation_grid import write_grid

    overrides = {
        key: value
        for key, value in (("center_fraction", args.center_fraction), ("alpha", args.alpha))
        if value is not None
    }
    try:  # bad input (a missing or corrupt dataset, an unknown preset, impossible center fraction or alpha) is one line
        if args.config:
            preset, pipeline = _from_config(args, overrides)
        else:
            if args.dataset is None or args.data_dir is None:
                raise ValueError("--dataset and --data-dir are required without --config")
            preset = args.preset or f"{args.dataset}-mocov2"
            pipeline = presets.build(preset, args.image_size, **overrides)
        recipe = presets.recipe(preset, args.image_size, **overrides)
        dataset = build_dataset(args.dataset, args.data_dir, args.split, cache_dir=args.cache_dir)
    except (FileNotFoundError, ValueError) as error:
        print(f"hallucinator show-augmentations: {error}", file=sys.stderr)
        return 2
    count = min(args.num_images, len(dataset))
    chosen = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(args.seed))[:count]
    images, _ = dataset[chosen]
    write_grid(
        images,
        pipeline,
        recipe,
        Path(args.output),
        args.seed,
        title=f"{preset}: center_fraction={recipe.center_fraction}, alpha={recipe.alpha}, "
        + (crops_title(pipeline) if args.config else f"scale={recipe.scale}"),
    )
    print(f"wrote {args.output} ({count} images, preset {preset})")
    return 0


def crops_title(pipeline: object) -> str:
    """``2 x 32 px (scale 0.4-1.0) + 4 x 16 px (scale 0.05-0.4)``: what the crops of each kind are."""
    views = getattr(pipeline, "views", None) or [pipeline.view1, pipeline.view2]  # type: ignore[attr-defined]
    kinds: dict[tuple, int] = {}
    for view in views:
        crop = view.ops[0]
        key = (crop.size[0], crop.scale)
        kinds[key] = kinds.get(key, 0) + 1
    return " + ".join(f"{n} x {size} px (scale {low:g}-{high:g})" for (size, (low, high)), n in kinds.items())


def _from_config(args: argparse.Namespace, overrides: dict[str, float]) -> tuple[str, TwoViews | MultiCrop]:
    """The preset and the views (two or multi-crop) that pre-training with ``--config`` makes; fills in
    ``--dataset`` / ``--data-dir`` from the config when not given."""
    from hallucinator.engine.config import load_config
    from hallucinator.engine.module import build_augmentation, preset_name

    config = load_config(args.config, [f"--data.augment.{key}={value}" for key, value in overrides.items()])
    if args.image_size is not None:
        config.data.crop_size = args.image_size
    args.dataset = args.dataset or config.data.dataset
    args.data_dir = args.data_dir or config.data.data_dir
    pipeline = build_augmentation(config)
    if pipeline is None:
        raise ValueError(f"{args.config}: data.preset is none, so there are no augmentations to show")
    return preset_name(config), pipeline


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "show-augmentations",
        help="write a PNG grid of images and their augmented views (two, or a config's multi-crop), with the crops drawn",
        description=__doc__.splitlines()[0],
    )
    parser.add_argument(
        "--config", default=None, help="a pre-training config: draw its views (e.g. DINO's global and local crops)"
    )
    parser.add_argument("--dataset", default=None, help="dataset name, e.g. cifar10, stl10, imagefolder")
    parser.add_argument("--data-dir", default=None, help="dataset location (folder or .tar/.tar.gz archive)")
    parser.add_argument("--preset", default=None, help="augmentation preset (default: <dataset>-mocov2)")
    parser.add_argument("--output", default="augmentations.png", help="PNG file to write")
    parser.add_argument("--num-images", type=int, default=8)
    parser.add_argument("--split", default="train", choices=("pretrain", "train", "test"))
    parser.add_argument("--image-size", type=int, default=None, help="output size of the views")
    parser.add_argument(
        "--center-fraction",
        "--p",  # its name until 2026-11-30 (the paper's p)
        dest="center_fraction",
        type=float,
        default=None,
        help="share of each side the central box covers (the paper's p)",
    )
    parser.add_argument("--alpha", type=float, default=None, help="Beta(alpha, alpha) of the crop centres")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--cache-dir", default=None, help="decoded-dataset cache (default $HALLUCINATOR_CACHE or ~/.cache/hallucinator)"
    )
    parser.set_defaults(func=show_augmentations)
