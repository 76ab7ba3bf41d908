"""``hallucinator export``: a checkpoint's backbone as a torchvision or timm state dict, a detectron2 pickle, an ONNX
graph or a Hugging Face style folder; prints the code that loads what it wrote."""

from __future__ import annotations

import argparse
import sys

FORMATS = (
    "torchvision",
    "detectron2",
    "timm",
    "onnx",
    "hf",
)  # = hallucinator.export.CHECKPOINT_FORMATS (no torch here)
PARTS = ("backbone", "projector")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export",
        help="export a checkpoint's backbone (torchvision / timm state dict, detectron2 .pkl, ONNX, Hugging Face folder)",
        description="torchvision: torch.save'd ResNet state dict (load with strict=False; only fc is missing). "
        "detectron2: MoCo's convert-pretrain-to-detectron2 format (res2..res5 names, matching_heuristics), "
        "for MODEL.WEIGHTS with MODEL.PIXEL_MEAN/STD set to the pre-training normalisation. "
        "timm: a state dict that timm.create_model(ARCH, pretrained=False, num_classes=0, ...) loads strictly "
        "(ViTs and width-64 ImageNet-stem ResNets; timm cannot build a narrow or CIFAR-stem ResNet). "
        "onnx: OUTPUT.onnx taking normalised float32 N x 3 x S x S images, the normalisation in its metadata "
        "(pip install 'hallucinator[onnx]'). hf: a folder OUTPUT with config.json, model.safetensors and a "
        "README.md model card, which hallucinator.load_backbone(OUTPUT) loads. Prints how to load the result.",
    )
    parser.add_argument("checkpoint", help="a `hallucinator pretrain` checkpoint, e.g. RUN/checkpoints/last.ckpt")
    parser.add_argument(
        "output", help="file to write (backbone.pth, r50-detectron2.pkl, encoder.onnx), or the folder of --format hf"
    )
    parser.add_argument("--format", choices=FORMATS, default="torchvision")
    parser.add_argument(
        "--safetensors",
        action="store_true",
        help="write a .safetensors file instead of torch.save's pickle (torchvision and timm formats)",
    )
    parser.add_argument(
        "--part",
        choices=PARTS,
        default="backbone",
        help="--format onnx: the backbone (default) or the backbone followed by the method's projection head",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from hallucinator.export import check_options

    try:
        check_options(args.format, safetensors=args.safetensors, part=args.part)
        if args.format == "onnx":
            lines = _onnx(args)
        elif args.format == "hf":
            lines = _hf(args)
        else:
            lines = _state_dict(args)
    except (FileNotFoundError, ValueError, ImportError) as error:
        print(f"hallucinator export: {error}", file=sys.stderr)
        return 2
    print("\n".join(lines))
    return 0


def _state_dict(args: argparse.Namespace) -> list[str]:
    from hallucinator.engine.checkpoint import load_pretrained
    from hallucinator.export import export_state_dict, timm_loading_code, torchvision_loading_code

    backbone, config = load_pretrained(args.checkpoint)
    model = config.model
    path = export_state_dict(
        backbone.state_dict(),
        args.output,
        args.format,
        model.backbone,
        image_size=config.data.image_size,
        safetensors=args.safetensors,
    )
    lines = [f"wrote {args.format} weights to {path}" + (" (safetensors)" if args.safetensors else "")]
    if args.format == "timm":
        reader = "safetensors.torch.load_file" if args.safetensors else "torch.load"
        options = "" if args.safetensors else ", weights_only=True"
        lines.append(
            f"load them with: import {reader.rpartition('.')[0]}, timm; "
            f"model = {timm_loading_code(model.backbone, config.data.image_size)}; "
            f"model.load_state_dict({reader}({str(path)!r}{options}))"
        )
    elif args.format == "torchvision":
        code = torchvision_loading_code(
            model.backbone, path, width=model.width, cifar_stem=model.cifar_stem, safetensors=args.safetensors
        )
        lines.append(f"load them with: {code}")
    return lines


def _onnx(args: argparse.Namespace) -> list[str]:
    from hallucinator.export.onnx import export_onnx, loading_code

    result = export_onnx(args.checkpoint, args.output, args.part)
    lines = [f"wrote the {args.part} as ONNX to {result.path}; its metadata_props:"]
    lines += [f"  {key}: {value}" for key, value in result.metadata.items()]
    lines.append(f"onnxruntime matches PyTorch to {result.max_difference:.1e} (largest absolute difference)")
    lines.append(f"run it with: {loading_code(result.path)}")
    return lines


def _hf(args: argparse.Namespace) -> list[str]:
    import json

    from hallucinator.export.hf import CONFIG_FILE, export_hf, loading_code

    folder = export_hf(args.checkpoint, args.output)
    config = json.loads((folder / CONFIG_FILE).read_text())
    lines = [f"wrote config.json, model.safetensors and README.md (the model card) to {folder}"]
    lines += [f"load it with {library}: {'; '.join(code)}" for library, code in loading_code(folder, config).items()]
    return lines
