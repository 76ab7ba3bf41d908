"""Export a pre-trained backbone for use outside this library.

State dicts (:func:`export_state_dict`):

- ``torchvision``: a ResNet state dict with torchvision's key names (our backbones already
  use them), loadable with ``torchvision.models.resnet50().load_state_dict(sd, strict=False)``
  (only ``fc.*`` missing). Only a standard ResNet (width 64, ImageNet stem) matches
  torchvision's shapes; other backbones are exported with the same names and a warning, and load into
  ``hallucinator.backbones.build(name, cifar_stem=..., width=...)``.
- ``detectron2``: the format of MoCo's ``convert-pretrain-to-detectron2.py``, for the
  paper's Table 7 transfer (R50-C4): ``layerN`` -> ``res{N+1}``, stem weights under
  ``stem.``, ``bnK`` -> ``convK_norm``, ``downsample.0/1`` -> ``shortcut``/``shortcut_norm``;
  numpy arrays in a pickled dict ``{"model", "__author__", "matching_heuristics": True}``.
  detectron2 then matches names heuristically (its checkpointer's ``matching_heuristics``).
- ``timm``: a state dict that ``timm.create_model(arch, pretrained=False, num_classes=0, **kwargs)``
  loads with no missing or unexpected key: ViTs (``vit_tiny``, ``vit_small``, ``timm:<name>``)
  are timm's own modules, and timm's ResNets use torchvision's names. :func:`timm_loading_code` says which
  ``arch`` and ``kwargs`` (e.g. ``patch_size=4, img_size=32``) to create. timm's ResNet cannot be built
  with a narrow width or the CIFAR stem (its plain stem is always a 64-channel 7x7 conv and a max-pool):
  such backbones are refused, naming the formats that hold them.

``safetensors=True`` writes the torchvision and timm formats as a ``.safetensors`` file instead of
``torch.save``'s pickle (no code runs when it is loaded).

Whole encoders, from a checkpoint (:func:`export_checkpoint`):

- ``onnx`` (:mod:`hallucinator.export.onnx`): the backbone, or backbone + projector, as an ONNX graph with a
  dynamic batch axis, the input normalisation in its metadata (the ``onnx`` extra).
- ``hf`` (:mod:`hallucinator.export.hf`): a Hugging Face style folder (``config.json``, ``model.safetensors``,
  ``README.md`` model card) that :func:`load_backbone` loads back, and timm too where timm builds the network.
"""

from __future__ import annotations

import pickle
import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torchvision
from torch import Tensor

from hallucinator import backbones
from hallucinator.data import DATASETS, presets

if TYPE_CHECKING:
    from hallucinator.engine.config import Config

FORMATS = ("torchvision", "detectron2", "timm")
"""The state-dict formats of :func:`export_state_dict`."""
CHECKPOINT_FORMATS = (*FORMATS, "onnx", "hf")
"""Every format of :func:`export_checkpoint` (and ``hallucinator export``): the state dicts, ONNX and a HF folder."""
NOT_TIMM_FORMATS = ("torchvision", "hf", "onnx")
"""What holds a backbone that timm cannot build (narrow ResNets, the CIFAR stem)."""
AUTHOR = "hallucinator"


def torchvision_state_dict(state: Mapping[str, Tensor], arch: str | None = None) -> dict[str, Tensor]:
    """Backbone weights under torchvision's ResNet names (contiguous CPU tensors, no ``fc``).

    With ``arch`` (e.g. ``"resnet50"``) the keys and shapes are checked against
    ``torchvision.models.<arch>()``; a mismatch (a narrow width, the CIFAR stem) warns,
    since such weights cannot be loaded into the stock model.
    """
    exported = {key: value.detach().cpu().contiguous() for key, value in state.items() if not key.startswith("fc.")}
    if arch is not None:
        with torch.device("meta"):  # shapes only: no memory, no weight initialisation
            reference = {k: v.shape for k, v in torchvision.models.get_model(arch, weights=None).state_dict().items()}
        unknown = sorted(set(exported) - set(reference))
        if unknown:
            raise ValueError(f"keys not in torchvision's {arch}: {unknown[:5]}... - is this a {arch} backbone?")
        wrong = [k for k, v in exported.items() if v.shape != reference[k]]
        if wrong:
            warnings.warn(
                f"{len(wrong)} tensors differ in shape from torchvision's {arch} (e.g. {wrong[0]}: "
                f"{tuple(exported[wrong[0]].shape)} vs {tuple(reference[wrong[0]])}); the export keeps torchvision's "
                "names but only a width-64 ImageNet-stem ResNet loads into the stock model",
                stacklevel=2,
            )
    return exported


_STAGE = re.compile(r"^layer([1-4])\.")
_BN = re.compile(r"\bbn([1-3])\.")


def detectron2_key(key: str) -> str:
    """torchvision ResNet name -> detectron2 name (MoCo's convert script's renaming)."""
    if not _STAGE.match(key):
        key = "stem." + key
    key = _STAGE.sub(lambda m: f"res{int(m.group(1)) + 1}.", key)
    key = _BN.sub(lambda m: f"conv{m.group(1)}_norm.", key)
    return key.replace("downsample.0.", "shortcut.").replace("downsample.1.", "shortcut_norm.")


def detectron2_model(state: Mapping[str, Tensor]) -> dict:
    """The pickle-able detectron2 dict; BN's ``num_batches_tracked`` counters are dropped (detectron2 has none)."""
    model = {
        detectron2_key(key): value.detach().cpu().numpy()
        for key, value in torchvision_state_dict(state).items()
        if not key.endswith("num_batches_tracked")
    }
    return {"model": model, "__author__": AUTHOR, "matching_heuristics": True}


def timm_state_dict(state: Mapping[str, Tensor], backbone: str, image_size: int | None = None) -> dict[str, Tensor]:
    """The weights of ``backbone`` checked against the timm model that takes them, keys and shapes strictly.

    ResNets must be timm's architectures of the same name: a narrow width or the CIFAR stem keeps the names
    but not the shapes, which timm cannot build, so it raises a ``ValueError`` naming the formats that work.

    Example:
        >>> weights = timm_state_dict(backbones.build("resnet50").state_dict(), "resnet50")
        >>> timm.create_model("resnet50", pretrained=False, num_classes=0).load_state_dict(weights)  # strict
    """
    import timm

    spec = backbones.timm_spec(backbone, image_size)
    if spec is None and backbone in backbones.RESNETS:
        spec = backbone, {}
    if spec is None:
        raise ValueError(f"--format timm: backbone {backbone!r} has no timm counterpart; use --format torchvision")
    arch, kwargs = spec
    with torch.device("meta"):  # shapes only: no memory, no weight initialisation (seconds for a ViT)
        model = timm.create_model(arch, pretrained=False, num_classes=0, **kwargs)
    reference = {k: v.shape for k, v in model.state_dict().items()}
    exported = {key: value.detach().cpu().contiguous() for key, value in state.items()}
    missing, unexpected = sorted(set(reference) - set(exported)), sorted(set(exported) - set(reference))
    if missing or unexpected:
        raise ValueError(
            f"--format timm: the weights do not match timm's {arch} (missing {missing[:3]}, unexpected "
            f"{unexpected[:3]}); is this a {backbone} backbone?"
        )
    wrong = [k for k, v in exported.items() if v.shape != reference[k]]
    if wrong:
        raise ValueError(
            f"--format timm: timm's {arch} cannot hold these weights ({len(wrong)} tensors differ in shape, e.g. "
            f"{wrong[0]}: {tuple(exported[wrong[0]].shape)} here, {tuple(reference[wrong[0]])} in timm), as timm's "
            f"ResNet has neither a narrow width nor the CIFAR stem; use --format {' / '.join(NOT_TIMM_FORMATS)}"
        )
    return exported


def timm_loading_code(backbone: str, image_size: int | None = None) -> str:
    """The line that creates the timm model the ``timm`` export loads into.

    Example:
        >>> timm_loading_code("vit_tiny", 32)
        "timm.create_model('vit_tiny_patch16_224', pretrained=False, num_classes=0, patch_size=4, img_size=32)"
    """
    arch, kwargs = backbones.timm_spec(backbone, image_size) or (backbone, {})
    extra = "".join(f", {key}={value!r}" for key, value in kwargs.items())
    return f"timm.create_model({arch!r}, pretrained=False, num_classes=0{extra})"


def _stock_resnet(backbone: str, width: int, cifar_stem: bool) -> bool:
    """Whether the backbone is torchvision's (and timm's) ResNet as it is: width 64, ImageNet stem."""
    return backbone in backbones.RESNETS and width == 64 and not cifar_stem


def timm_counterpart(
    backbone: str, *, width: int = 64, cifar_stem: bool = False, image_size: int | None = None
) -> tuple[str, dict[str, Any]] | None:
    """``(arch, kwargs)`` of the ``timm.create_model`` call that builds exactly this backbone; ``None`` where timm
    cannot: a ResNet of another width than 64 or with the CIFAR stem (timm's plain stem is always a 64-channel
    7x7 stride-2 conv and a max-pool; its ``stem_width`` only widens the ``deep`` stems, whose keys differ).

    Example:
        >>> timm_counterpart("resnet50")
        ('resnet50', {})
        >>> timm_counterpart("resnet18", width=16, cifar_stem=True) is None
        True
    """
    spec = backbones.timm_spec(backbone, image_size)
    if spec is None and _stock_resnet(backbone, width, cifar_stem):
        spec = backbone, {}
    return spec


def torchvision_loading_code(
    backbone: str, path: str | Path, *, width: int = 64, cifar_stem: bool = False, safetensors: bool = False
) -> str:
    """Python statements (imports included) that load the ``torchvision`` export at ``path`` into ``model``.

    A width-64 ImageNet-stem ResNet goes into torchvision's own model (only ``fc`` missing, then removed); any
    other backbone into the network :func:`hallucinator.backbones.build` makes, strictly.

    Example:
        >>> print(torchvision_loading_code("resnet18", "r18.pth", width=16, cifar_stem=True))
        import torch; from hallucinator import backbones; model = backbones.build('resnet18', cifar_stem=True, width=16); model.load_state_dict(torch.load('r18.pth', weights_only=True))
    """
    weights = (
        f"safetensors.torch.load_file({str(path)!r})"
        if safetensors
        else f"torch.load({str(path)!r}, weights_only=True)"
    )
    reader = "safetensors.torch" if safetensors else "torch"
    if _stock_resnet(backbone, width, cifar_stem):
        modules = ", ".join(dict.fromkeys([reader, "torch", "torchvision"]))
        return (
            f"import {modules}; model = torchvision.models.{backbone}(); "
            f"model.load_state_dict({weights}, strict=False); model.fc = torch.nn.Identity()"
        )
    options = f", cifar_stem={cifar_stem!r}, width={width!r}" if backbone in backbones.RESNETS else ""
    return (
        f"import {reader}; from hallucinator import backbones; model = backbones.build({backbone!r}{options}); "
        f"model.load_state_dict({weights})"
    )


# EvalTransform's ratio: images whose shorter side is not S are resized so that it is S / 0.875 (256 for 224)
_RESIZE_RATIO = 0.875


def input_spec(config: Config) -> dict[str, Any]:
    """What an exported encoder takes, as the run's evaluation fed it (``hallucinator.data.eval_transform``):
    float32 ``N x 3 x S x S`` (NCHW, RGB), ``(pixels / 255 - mean) / std`` per channel.

    Example:
        >>> backbone, config = hallucinator.engine.checkpoint.load_pretrained("runs/quickstart/checkpoints/last.ckpt")
        >>> input_spec(config)["mean"]  # a CIFAR-10 run
        [0.4914, 0.4822, 0.4465]
    """
    dataset = config.data.dataset
    recipe = presets.recipe(dataset, config.data.image_size)
    size = recipe.image_size
    return {
        "image_size": size,
        "layout": "NCHW",
        "channels": "RGB",
        "dtype": "float32",
        "mean": list(recipe.mean),
        "std": list(recipe.std),
        "preprocessing": (
            f"x = (rgb / 255 - mean) / std per channel on {size} x {size} images; an image whose shorter side is "
            f"not {size} px is first resized (bilinear, antialiased) so that it is {round(size / _RESIZE_RATIO)} px "
            f"and centre-cropped; = hallucinator.data.eval_transform({dataset!r}, {size})"
        ),
        # timm's data config for the same resize: none when the dataset is stored at the training size
        "crop_pct": 1.0 if DATASETS[dataset].image_size == size else _RESIZE_RATIO,
    }


def check_options(fmt: str, *, safetensors: bool = False, part: str = "backbone") -> None:
    """Raises ``ValueError`` naming the fix when ``--safetensors`` or ``--part`` does not apply to format ``fmt``."""
    if fmt not in CHECKPOINT_FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; choose one of {', '.join(CHECKPOINT_FORMATS)}")
    if safetensors and fmt in ("onnx", "hf"):
        raise ValueError(f"--safetensors applies to --format torchvision / timm, not {fmt} (no pickle there); drop it")
    if part != "backbone" and fmt != "onnx":
        raise ValueError(
            f"--part {part}: only --format onnx exports more than the backbone; drop --part or use --format onnx"
        )


def _save(weights: dict[str, Tensor], out: Path, safetensors: bool) -> None:
    if safetensors:
        from safetensors.torch import save_file

        # safetensors refuses tensors that share memory; exported tensors are contiguous copies or views: clone them
        save_file({key: value.clone() for key, value in weights.items()}, str(out))
    else:
        torch.save(weights, out)


def export_state_dict(
    state: Mapping[str, Tensor],
    out: str | Path,
    fmt: str,
    arch: str | None = None,
    *,
    image_size: int | None = None,
    safetensors: bool = False,
) -> Path:
    """Writes ``state`` (the backbone's own names) to ``out`` in format ``fmt`` (``torchvision`` | ``detectron2`` |
    ``timm``); ``arch`` is the backbone name (``resnet50``, ``vit_tiny``, ``timm:<name>``), needed for ``timm``.

    Example:
        >>> export_state_dict(backbones.build("vit_tiny", image_size=32).state_dict(), "vit.pth", "timm", "vit_tiny")
    """
    if fmt not in FORMATS:
        whole = f" ({fmt} exports a whole checkpoint: export_checkpoint)" if fmt in CHECKPOINT_FORMATS else ""
        raise ValueError(f"unknown state-dict format {fmt!r}{whole}; choose one of {', '.join(FORMATS)}")
    if safetensors and fmt == "detectron2":
        raise ValueError(
            "--safetensors: detectron2 reads its pickled format only; drop --safetensors or use "
            "--format torchvision / timm"
        )
    if fmt == "timm" and arch is None:
        raise ValueError("--format timm needs the backbone's name (arch)")
    if fmt != "timm" and arch is not None and backbones.timm_spec(arch) is not None:
        raise ValueError(f"backbone {arch!r} is a timm model: export it with --format timm")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    torchvision_arch = arch if arch in torchvision.models.list_models() else None
    if fmt == "timm":
        assert arch is not None  # checked above
        _save(timm_state_dict(state, arch, image_size), out, safetensors)
    elif fmt == "torchvision":
        _save(torchvision_state_dict(state, torchvision_arch), out, safetensors)
    else:
        torchvision_state_dict(state, torchvision_arch)  # the same key / shape checks
        with out.open("wb") as handle:
            pickle.dump(detectron2_model(state), handle)
    return out


def export_checkpoint(
    checkpoint: str | Path,
    out: str | Path,
    fmt: str = "torchvision",
    *,
    safetensors: bool = False,
    part: str = "backbone",
) -> Path:
    """Exports the backbone of a ``hallucinator pretrain`` checkpoint in any of :data:`CHECKPOINT_FORMATS`;
    ``part="projector"`` (ONNX only): the backbone followed by the method's projector.

    Example:
        >>> export_checkpoint("runs/in1k-mocov2/checkpoints/last.ckpt", "r50.pkl", "detectron2")
        >>> export_checkpoint("runs/vit/checkpoints/last.ckpt", "vit.safetensors", "timm", safetensors=True)
        >>> export_checkpoint("runs/quickstart/checkpoints/last.ckpt", "r18.onnx", "onnx", part="projector")
        >>> export_checkpoint("runs/quickstart/checkpoints/last.ckpt", "r18-hf", "hf")
    """
    check_options(fmt, safetensors=safetensors, part=part)
    if fmt == "onnx":
        from hallucinator.export.onnx import export_onnx

        return export_onnx(checkpoint, out, part).path
    if fmt == "hf":
        from hallucinator.export.hf import export_hf

        return export_hf(checkpoint, out)
    from hallucinator.engine.checkpoint import load_pretrained

    backbone, config = load_pretrained(checkpoint)
    return export_state_dict(
        backbone.state_dict(),
        out,
        fmt,
        config.model.backbone,
        image_size=config.data.image_size,
        safetensors=safetensors,
    )


def load_backbone(checkpoint: str | Path, map_location: str | torch.device = "cpu") -> torch.nn.Module:
    """The trained backbone of a ``hallucinator pretrain`` checkpoint, or of a folder written by
    ``hallucinator export CKPT DIR --format hf``, in eval mode, for one's own code.

    A torchvision-style ``ResNet`` (``fc`` replaced by the identity) or a timm model, with ``num_features``, mapping
    normalised images ``(N, 3, S, S)`` to ``(N, num_features)``; ``S`` is the run's
    ``data.image_size`` and ``hallucinator.data.eval_transform(dataset, S)`` normalises a
    uint8 batch as the run's evaluation did (a folder's ``config.json`` says which, under ``input``).
    Also ``hallucinator.load_backbone``. Loaded with ``torch.load(weights_only=True)`` or safetensors: no code runs.

    Example:
        >>> import hallucinator
        >>> backbone = hallucinator.load_backbone("runs/photos/checkpoints/last.ckpt")  # doctest: +SKIP
        >>> backbone = hallucinator.load_backbone("exports/photos-hf")  # doctest: +SKIP
        >>> features = backbone(images)  # doctest: +SKIP
    """
    if Path(checkpoint).is_dir():
        from hallucinator.export.hf import load_folder

        return load_folder(checkpoint, map_location)
    from hallucinator.engine.checkpoint import load_pretrained

    backbone, _ = load_pretrained(checkpoint, map_location)
    return backbone.eval()
