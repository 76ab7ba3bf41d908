"""A checkpoint's encoder as an ONNX graph, for onnxruntime, TensorRT or any ONNX consumer.

Input ``images``: float32 ``N x 3 x S x S`` (dynamic ``N``), normalised as the run's evaluation did
(:func:`hallucinator.export.input_spec`); output ``features`` (``N x num_features``), or ``embeddings`` for
``part="projector"`` (the backbone followed by the method's projection head). The normalisation, the image
size, the input layout and what was exported are written into the model's ``metadata_props``, which
``onnxruntime.InferenceSession(path).get_modelmeta().custom_metadata_map`` reads back.

Needs the ``onnx`` extra (``pip install 'hallucinator[onnx]'``): torch's exporter translates with
``onnxscript``, and ``onnxruntime`` checks the written graph against PyTorch.

Example:
    >>> result = export_onnx("runs/quickstart/checkpoints/last.ckpt", "r18.onnx")
    >>> session = onnxruntime.InferenceSession("r18.onnx")
    >>> features = session.run(None, {"images": normalised.numpy()})[0]  # (N, 128)
"""

from __future__ import annotations

import importlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from hallucinator.export import input_spec

if TYPE_CHECKING:
    from hallucinator.engine.config import Config

PARTS = ("backbone", "projector")
PROJECTOR_PREFIX = "method.projector."
INPUT_NAME = "images"
OUTPUT_NAMES = {"backbone": "features", "projector": "embeddings"}
# torch.onnx.export's exporter (dynamo=True, torch.export-based: the default since torch 2.9) imports
# onnxscript; the TorchScript one (dynamo=False) needs no more than torch but is deprecated, warning on
# every export that it will be removed (torch 2.14). Both gave equal graphs here; the supported one is used.
PACKAGES = ("onnx", "onnxscript", "onnxruntime")
EXTRA = "pip install 'hallucinator[onnx]'"
CHECK_BATCH = 3


@dataclass
class OnnxExport:
    """What :func:`export_onnx` wrote: the file, its ``metadata_props`` and onnxruntime's largest absolute
    difference to PyTorch on a random batch of :data:`CHECK_BATCH` (the batch the export traced had 2)."""

    path: Path
    metadata: dict[str, str]
    max_difference: float


def require_onnx() -> None:
    """Raises ``ModuleNotFoundError`` (one line, naming the extra) when a package of the ``onnx`` extra is missing."""
    for name in PACKAGES:
        try:
            importlib.import_module(name)
        except ImportError:
            raise ModuleNotFoundError(f"--format onnx needs the {name} package: {EXTRA}") from None


def load_encoder(checkpoint: str | Path, part: str = "backbone") -> tuple[nn.Module, Config]:
    """The checkpoint's backbone, or (``part="projector"``) backbone followed by the method's projector, in eval
    mode, and the run's config.

    Example:
        >>> encoder, config = load_encoder("runs/quickstart/checkpoints/last.ckpt", "projector")
        >>> encoder(images).shape  # (N, the projector's output size, e.g. 128 for MoCo v2)
    """
    from hallucinator.engine.checkpoint import load_pretrained
    from hallucinator.engine.module import build_method

    if part not in PARTS:
        raise ValueError(f"--part {part!r}: choose one of {', '.join(PARTS)}")
    backbone, config = load_pretrained(checkpoint)
    if part == "backbone":
        return backbone.eval(), config
    projector = getattr(build_method(config), "projector", None)
    if not isinstance(projector, nn.Module):
        raise ValueError(
            f"--part projector: method {config.model.method} has no `projector` (DINO's head ends in prototype "
            "logits); export --part backbone"
        )
    # mmap: only the projector's tensors are read from a checkpoint that may hold a large queue and momentum copies
    state = torch.load(checkpoint, map_location="cpu", weights_only=True, mmap=True)["state_dict"]
    weights = {key[len(PROJECTOR_PREFIX) :]: value for key, value in state.items() if key.startswith(PROJECTOR_PREFIX)}
    try:
        projector.load_state_dict(weights)
    except RuntimeError as error:
        first = str(error).splitlines()[-1].strip()
        raise ValueError(
            f"{checkpoint}: its `{PROJECTOR_PREFIX}*` weights do not fit the {config.model.method} projector its "
            f"config builds ({first}); export --part backbone"
        ) from error
    return nn.Sequential(backbone, projector).eval(), config


def onnx_metadata(config: Config, part: str, num_features: int) -> dict[str, str]:
    """The ``metadata_props`` of the exported model: strings, lists and numbers as JSON.

    Example:
        >>> onnx_metadata(config, "backbone", 128)["mean"]  # a CIFAR-10 run
        '[0.4914, 0.4822, 0.4465]'
    """
    spec = input_spec(config)
    size = spec["image_size"]
    model = config.model
    values = {
        "input_name": INPUT_NAME,
        "input_shape": f"N x 3 x {size} x {size}",
        "input_layout": spec["layout"],
        "input_channels": spec["channels"],
        "input_dtype": spec["dtype"],
        "image_size": size,
        "mean": spec["mean"],
        "std": spec["std"],
        "preprocessing": spec["preprocessing"],
        "output_name": OUTPUT_NAMES[part],
        "output_shape": f"N x {num_features}",
        "part": part,
        "backbone": model.backbone,
        "width": model.width,
        "cifar_stem": model.cifar_stem,
        "method": model.method,
        "hallucinator": config.hallucinator.enabled,
        "dataset": config.data.dataset,
    }
    return {key: value if isinstance(value, str) else json.dumps(value) for key, value in values.items()}


def export_module(module: nn.Module, out: str | Path, image_size: int, metadata: dict[str, str]) -> Path:
    """Writes ``module`` (``N x 3 x S x S`` -> ``N x D``, in eval mode) to ``out`` as one ONNX file with a dynamic
    batch axis, ``metadata`` in its ``metadata_props``.

    Example:
        >>> export_module(backbones.build("vit_tiny", image_size=32).eval(), "vit.onnx", 32, {"mean": "[0.5, 0.5, 0.5]"})
    """
    require_onnx()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    output_name = metadata.get("output_name", OUTPUT_NAMES["backbone"])
    example = torch.zeros(2, 3, image_size, image_size)  # 2, not 1: torch.export would specialise a batch of 1
    program = torch.onnx.export(
        module,
        (example,),
        input_names=[INPUT_NAME],
        output_names=[output_name],
        dynamic_shapes=({0: torch.export.Dim("batch", min=1)},),
        dynamo=True,
        verbose=False,
    )
    assert program is not None  # no file given: the exporter returns the program
    program.model.metadata_props.update(metadata)
    # one self-contained file (the exporter's default keeps the weights beside it in OUT.data)
    program.save(str(out), external_data=False)
    return out


def onnxruntime_difference(path: str | Path, module: nn.Module, image_size: int, batch: int = CHECK_BATCH) -> float:
    """The largest absolute difference of onnxruntime's output for the graph at ``path`` to ``module``'s, on a
    random normal batch."""
    require_onnx()
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    images = torch.randn(batch, 3, image_size, image_size, generator=torch.Generator().manual_seed(0))
    (onnx_output,) = session.run(None, {INPUT_NAME: images.numpy()})
    with torch.no_grad():
        expected = module(images)
    return float((torch.from_numpy(onnx_output) - expected).abs().max())


def export_onnx(checkpoint: str | Path, out: str | Path, part: str = "backbone") -> OnnxExport:
    """Exports the checkpoint's encoder (``part``: ``backbone`` or ``projector``) to ``out`` and checks it with
    onnxruntime.

    Example:
        >>> result = export_onnx("runs/quickstart/checkpoints/last.ckpt", "r18.onnx")
        >>> result.metadata["mean"], result.max_difference
        ('[0.4914, 0.4822, 0.4465]', 1.2e-06)
    """
    require_onnx()
    encoder, config = load_encoder(checkpoint, part)
    size = input_spec(config)["image_size"]
    with torch.no_grad():
        num_features = encoder(torch.zeros(2, 3, size, size)).shape[1]
    metadata = onnx_metadata(config, part, num_features)
    path = export_module(encoder, out, size, metadata)
    return OnnxExport(path, metadata, onnxruntime_difference(path, encoder, size))


def loading_code(path: str | Path) -> str:
    """Python statements that run the exported graph on a normalised float32 batch ``images`` (a numpy array).

    Example:
        >>> print(loading_code("r18.onnx"))
        import onnxruntime; session = onnxruntime.InferenceSession('r18.onnx', providers=['CPUExecutionProvider']); features = session.run(None, {'images': images})[0]
    """
    # providers named: a GPU build of onnxruntime (1.9+) refuses a session without them
    return (
        f"import onnxruntime; session = onnxruntime.InferenceSession({str(path)!r}, providers=['CPUExecutionProvider']); "
        f"features = session.run(None, {{{INPUT_NAME!r}: images}})[0]"
    )
