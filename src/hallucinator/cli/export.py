"""``hallucinator export``: a checkpoint's backbone as a torchvision or timm state dict, or a detectron2 pickle."""

from __future__ import annotations

import argparse
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export",
        help="export a checkpoint's backbone (torchvision or timm state dict, or detectron2 .pkl)",
        description="torchvision: torch.save'd ResNet state dict (load with strict=False; only fc is missing). "
        "detectron2: MoCo's convert-pretrain-to-detectron2 format (res2..res5 names, matching_heuristics), "
        "for MODEL.WEIGHTS with MODEL.PIXEL_MEAN/STD set to the pre-training normalisation. "
        "timm: a state dict that timm.create_model(ARCH, pretrained=False, num_classes=0, ...) loads strictly "
        "(ViTs and ResNets; the command prints the create_model call).",
    )
    parser.add_argument("checkpoint", help="a `hallucinator pretrain` checkpoint, e.g. RUN/checkpoints/last.ckpt")
    parser.add_argument("output", help="file to write (e.g. backbone.pth or r50-detectron2.pkl)")
    parser.add_argument("--format", choices=("torchvision", "detectron2", "timm"), default="torchvision")
    parser.add_argument(
        "--safetensors",
        action="store_true",
        help="write a .safetensors file instead of torch.save's pickle (torchvision and timm formats)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from hallucinator.engine.checkpoint import load_backbone
    from hallucinator.export import export_state_dict, timm_loading_code

    try:
        backbone, config = load_backbone(args.checkpoint)
        path = export_state_dict(
            backbone.state_dict(),
            args.output,
            args.format,
            config.model.backbone,
            image_size=config.data.image_size,
            safetensors=args.safetensors,
        )
    except (FileNotFoundError, ValueError) as error:
        print(f"hallucinator export: {error}", file=sys.stderr)
        return 2
    print(f"wrote {args.format} weights to {path}" + (" (safetensors)" if args.safetensors else ""))
    if args.format == "timm":
        print(f"load them with: {timm_loading_code(config.model.backbone, config.data.image_size)}")
    return 0
