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

FORMATS = ("torchvision", "detectron2")
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


def export_state_dict(state: Mapping[str, Tensor], out: str | Path, fmt: str, arch: str | None = None) -> Path:
    """Writes ``state`` (torchvision names) to ``out`` in format ``fmt`` (``torchvision`` | ``detectron2``)."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "torchvision":
        torch.save(torchvision_state_dict(state, arch), out)
    else:
        torchvision_state_dict(state, arch)  # the same key / shape checks
        with out.open("wb") as handle:
            pickle.dump(detectron2_model(state), handle)
    return out


def export_checkpoint(checkpoint: str | Path, out: str | Path, fmt: str = "torchvision") -> Path:
    """Exports the backbone of a ``hallucinator pretrain`` checkpoint.

    Example:
        >>> export_checkpoint("runs/in1k-mocov2/checkpoints/last.ckpt", "r50.pkl", "detectron2")
    """
    from hallucinator.engine.checkpoint import load_backbone

    backbone, config = load_backbone(checkpoint)
    arch = config.model.backbone if config.model.backbone in torchvision.models.list_models() else None
    return export_state_dict(backbone.state_dict(), out, fmt, arch)


def load_backbone(checkpoint: str | Path, map_location: str | torch.device = "cpu") -> torch.nn.Module:
    """The trained backbone of a ``hallucinator pretrain`` checkpoint, in eval mode, for one's own code.

    A torchvision ``ResNet`` (``fc`` replaced by the identity, ``num_features`` set) mapping
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
