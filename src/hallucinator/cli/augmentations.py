"""``hallucinator show-augmentations``: a PNG grid of source images and their two views.

The grid itself is :mod:`hallucinator.evaluation.augmentation_grid`; this module only parses the
command line, so that ``hallucinator --help`` imports no torch.

    hallucinator show-augmentations --dataset cifar10 --data-dir ../shared/datasets/cifar10-jpeg.tar.gz \\
        --preset cifar10-mocov2 --output grid.png --num-images 8
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def show_augmentations(args: argparse.Namespace) -> int:
    import torch

    from hallucinator.data import build_dataset, presets
    from hallucinator.evaluation.augmentation_grid import write_grid

    given = (("center_fraction", args.center_fraction), ("alpha", args.alpha))
    overrides = {key: value for key, value in given if value is not None}
    preset = args.preset or f"{args.dataset}-mocov2"
    try:  # bad input (a missing or corrupt dataset, an unknown preset, impossible center fraction or alpha) is one line
        recipe = presets.recipe(preset, args.image_size, **overrides)
        two_views = presets.build(preset, args.image_size, **overrides)
        dataset = build_dataset(args.dataset, args.data_dir, args.split, cache_dir=args.cache_dir)
    except (FileNotFoundError, ValueError) as error:
        print(f"hallucinator show-augmentations: {error}", file=sys.stderr)
        return 2
    count = min(args.num_images, len(dataset))
    chosen = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(args.seed))[:count]
    images, _ = dataset[chosen]
    write_grid(
        images,
        two_views,
        recipe,
        Path(args.output),
        args.seed,
        title=f"{preset}: center_fraction={recipe.center_fraction}, alpha={recipe.alpha}, scale={recipe.scale}",
    )
    print(f"wrote {args.output} ({count} images, preset {preset})")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "show-augmentations",
        help="write a PNG grid of images and their two augmented views, with the crops drawn",
        description=__doc__.splitlines()[0],
    )
    parser.add_argument("--dataset", required=True, help="dataset name, e.g. cifar10, stl10, imagefolder")
    parser.add_argument("--data-dir", required=True, help="dataset location (folder or .tar/.tar.gz archive)")
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
