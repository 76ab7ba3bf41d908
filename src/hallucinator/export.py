"""Export a pre-trained backbone for use outside this library.

- ``torchvision``: a ResNet state dict with torchvision's key names (our backbones already
  use them), loadable with ``torchvision.models.resnet50().load_state_dict(sd, strict=False)``
  (only ``fc.*`` missing). Only a standard ResNet (width 64, ImageNet stem) matches
  torchvision's shapes; other backbones are exported with the same names and a warning.
- ``detectron2``: the format of MoCo's ``convert-pretrain-to-detectron2.py``, for the
  paper's Table 7 transfer (R50-C4): ``layerN`` -> ``res{N+1}``, stem weights under
  ``stem.``, ``bnK`` -> ``convK_norm``, ``downsample.0/1`` -> ``shortcut``/``shortcut_norm``;
  numpy arrays in a pickled dict ``{"model", "__author__", "matching_heuristics": True}``.
  detectron2 then matches names heuristically (its checkpointer's ``matching_heuristics``).
- ``timm``: a state dict that ``timm.create_model(arch, pretrained=False, num_classes=0, **kwargs)``
  loads with no missing or unexpected key: ViTs (``vit_tiny``, ``vit_small``, ``timm:<name>``)
  are timm's own modules, and timm's ResNets use torchvision's names. The export says which
  ``arch`` and ``kwargs`` (e.g. ``patch_size=4, img_size=32``) to create.

``safetensors=True`` writes the torchvision and timm formats as a ``.safetensors`` file instead of
``torch.save``'s pickle (no code runs when it is loaded).
"""

from __future__ import annotations

import pickle
import re
import warnings
from collections.abc import Mapping
from pathlib import Path

import torch
import torchvision
from torch import Tensor

from hallucinator import backbones

FORMATS = ("torchvision", "detectron2", "timm")
AUTHOR = "hallucinator"


def torchvision_state_dict(state: Mapping[str, Tensor], arch: str | None = None) -> dict[str, Tensor]:
    """Backbone weights under torchvision's ResNet names (contiguous CPU tensors, no ``fc``).

    With ``arch`` (e.g. ``"resnet50"``) the keys and shapes are checked against
    ``torchvision.models.<arch>()``; a mismatch (a narrow width, the CIFAR stem) warns,
    since such weights cannot be loaded into the stock model.
    """
    exported = {key: value.detach().cpu().contiguous() for key, value in state.items() if not key.startswith("fc.")}
    if arch is not None:
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
    """The weights of ``backbone`` checked against the timm model that takes them (keys strictly, shapes warned).

    ResNets must be timm's architectures of the same name (a narrow width or the CIFAR stem keeps
    the names but not the shapes, and warns, as for torchvision).
    """
    import timm

    spec = backbones.timm_spec(backbone, image_size)
    if spec is None and backbone in backbones.RESNETS:
        spec = backbone, {}
    if spec is None:
        raise ValueError(f"--format timm: backbone {backbone!r} has no timm counterpart; use --format torchvision")
    arch, kwargs = spec
    reference = {
        k: v.shape for k, v in timm.create_model(arch, pretrained=False, num_classes=0, **kwargs).state_dict().items()
    }
    exported = {key: value.detach().cpu().contiguous() for key, value in state.items()}
    missing, unexpected = sorted(set(reference) - set(exported)), sorted(set(exported) - set(reference))
    if missing or unexpected:
        raise ValueError(
            f"--format timm: the weights do not match timm's {arch} (missing {missing[:3]}, unexpected "
            f"{unexpected[:3]}); is this a {backbone} backbone?"
        )
    wrong = [k for k, v in exported.items() if v.shape != reference[k]]
    if wrong:
        warnings.warn(
            f"{len(wrong)} tensors differ in shape from timm's {arch} (e.g. {wrong[0]}: {tuple(exported[wrong[0]].shape)} "
            f"vs {tuple(reference[wrong[0]])}); the export keeps timm's names but only a width-64 ImageNet-stem ResNet "
            "loads into the stock model",
            stacklevel=2,
        )
    return exported


def timm_loading_code(backbone: str, image_size: int | None = None) -> str:
    """The line that creates the timm model the ``timm`` export loads into."""
    arch, kwargs = backbones.timm_spec(backbone, image_size) or (backbone, {})
    extra = "".join(f", {key}={value!r}" for key, value in kwargs.items())
    return f"timm.create_model({arch!r}, pretrained=False, num_classes=0{extra})"


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
    ``timm``); ``arch`` is the backbone name (``resnet50``, ``vit_tiny``, ``timm:<name>``), needed for ``timm``."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
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
    checkpoint: str | Path, out: str | Path, fmt: str = "torchvision", *, safetensors: bool = False
) -> Path:
    """Exports the backbone of a ``hallucinator pretrain`` checkpoint.

    Example:
        >>> export_checkpoint("runs/in1k-mocov2/checkpoints/last.ckpt", "r50.pkl", "detectron2")
        >>> export_checkpoint("runs/vit/checkpoints/last.ckpt", "vit.safetensors", "timm", safetensors=True)
    """
    from hallucinator.engine.checkpoint import load_backbone

    backbone, config = load_backbone(checkpoint)
    return export_state_dict(
        backbone.state_dict(),
        out,
        fmt,
        config.model.backbone,
        image_size=config.data.image_size,
        safetensors=safetensors,
    )


def load_backbone(checkpoint: str | Path, map_location: str | torch.device = "cpu") -> torch.nn.Module:
    """The trained backbone of a ``hallucinator pretrain`` checkpoint, in eval mode, for one's own code.

    A torchvision-style ``ResNet`` (``fc`` replaced by the identity) or a timm model, with ``num_features``, mapping
    normalised images ``(N, 3, S, S)`` to ``(N, num_features)``; ``S`` is the run's
    ``data.image_size`` and ``hallucinator.data.eval_transform(dataset, S)`` normalises a
    uint8 batch as the run's evaluation did. Also ``hallucinator.load_backbone``. Loaded with
    ``torch.load(weights_only=True)``.

    Example:
        >>> import hallucinator
        >>> backbone = hallucinator.load_backbone("runs/photos/checkpoints/last.ckpt")  # doctest: +SKIP
        >>> features = backbone(images)  # doctest: +SKIP
    """
    from hallucinator.engine.checkpoint import load_backbone as load_with_config

    backbone, _ = load_with_config(checkpoint, map_location)
    return backbone.eval()
