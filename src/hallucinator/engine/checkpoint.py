"""Reading pre-training checkpoints: the trained backbone and the config it was trained with."""

from __future__ import annotations

import pickle
from pathlib import Path

import torch
from torch import nn

from hallucinator import backbones
from hallucinator.engine.config import Config, ConfigError, from_dict

BACKBONE_PREFIX = "method.backbone."


def read_config(checkpoint: dict, path: Path) -> Config:
    try:
        data = checkpoint["hyper_parameters"]["config"]
    except (KeyError, TypeError):
        raise ValueError(
            f"{path} is not a hallucinator pre-training checkpoint (no hyper_parameters.config); "
            "pass a checkpoint written by `hallucinator pretrain` (e.g. RUN/checkpoints/last.ckpt)"
        ) from None
    try:
        return from_dict(data)
    except ConfigError as error:
        raise ValueError(f"{path}: the config stored in the checkpoint is invalid: {error}") from error


def _load_failure(error: Exception) -> str:
    """The line of a ``torch.load`` error that says what went wrong, without torch's generic advice."""
    generic = ("Weights only load failed", "Check the documentation", "Please file an issue", "In PyTorch 2.6")
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    specific = [line for line in lines if not line.startswith(generic)]
    return f"{type(error).__name__}: {specific[0][:200] if specific else 'no details'}"


def build_backbone(config: Config) -> nn.Module:
    """The (randomly initialised) backbone ``config.model`` describes, at ``config.data.image_size`` where it matters.

    One place for pre-training and for loading checkpoints, so both build the same network.
    """
    model = config.model
    return backbones.build(
        model.backbone, cifar_stem=model.cifar_stem, width=model.width, image_size=config.data.image_size
    )


def load_pretrained(path: str | Path, map_location: str | torch.device = "cpu") -> tuple[nn.Module, Config]:
    """The online encoder saved in ``path`` (a ``hallucinator pretrain`` checkpoint) and its config
    (``hallucinator.load_backbone`` returns the backbone alone, from a checkpoint or an export).

    Loads with ``torch.load(weights_only=True)``: no code from the file is run.

    Example:
        >>> backbone, config = load_pretrained("runs/quickstart/checkpoints/last.ckpt")
        >>> features = backbone(images)  # (N, backbone.num_features)
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as error:
        raise ValueError(
            f"{path} cannot be read as a checkpoint: it is truncated, corrupt, not a PyTorch file, or holds objects "
            f"that weights_only loading refuses ({_load_failure(error)}); pass a checkpoint written by `hallucinator pretrain`"
        ) from error
    config = read_config(checkpoint, path)
    model = config.model
    backbone = build_backbone(config)
    state = {
        key[len(BACKBONE_PREFIX) :]: value
        for key, value in checkpoint["state_dict"].items()
        if key.startswith(BACKBONE_PREFIX)
    }
    if not state:
        raise ValueError(f"{path}: the checkpoint holds no `{BACKBONE_PREFIX}*` weights")
    try:
        backbone.load_state_dict(state)
    except RuntimeError as error:
        raise ValueError(
            f"{path}: the weights do not fit {model.backbone} (width {model.width}, cifar_stem {model.cifar_stem}) "
            f"stored in its config; was the checkpoint edited or written by another version? ({error})"
        ) from error
    return backbone, config
