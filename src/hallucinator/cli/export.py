"""``hallucinator export``: a checkpoint's backbone as a torchvision state dict or a detectron2 pickle."""

from __future__ import annotations

import argparse
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export",
        help="export a checkpoint's backbone (torchvision state dict or detectron2 .pkl)",
        description="torchvision: torch.save'd ResNet state dict (load with strict=False; only fc is missing). "
        "detectron2: MoCo's convert-pretrain-to-detectron2 format (res2..res5 names, matching_heuristics), "
        "for MODEL.WEIGHTS with MODEL.PIXEL_MEAN/STD set to the pre-training normalisation.",
    )
    parser.add_argument("checkpoint", help="a `hallucinator pretrain` checkpoint, e.g. RUN/checkpoints/last.ckpt")
    parser.add_argument("output", help="file to write (e.g. backbone.pth or r50-detectron2.pkl)")
    parser.add_argument("--format", choices=("torchvision", "detectron2"), default="torchvision")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from hallucinator.export import export_checkpoint

    try:
        path = export_checkpoint(args.checkpoint, args.output, args.format)
    except (FileNotFoundError, ValueError) as error:
        print(f"hallucinator export: {error}", file=sys.stderr)
        return 2
    print(f"wrote {args.format} weights to {path}")
    return 0
