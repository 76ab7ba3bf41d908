"""Hallucinator: harder positives in feature space for contrastive self-supervised learning."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hallucinator.hallucinator import Hallucinator

__version__ = "0.1.0"  # the one place the version is written: pyproject.toml reads it ([tool.setuptools.dynamic])

__all__ = ["Hallucinator", "__version__", "load_backbone"]


def __getattr__(name: str) -> Any:
    # imported on first use: `hallucinator --help` (the CLI lives in this package) then loads no torch,
    # and `hallucinator.load_backbone` no Lightning with the core
    if name == "Hallucinator":
        from hallucinator.hallucinator import Hallucinator

        return Hallucinator
    if name == "load_backbone":
        from hallucinator.export import load_backbone

        return load_backbone
    raise AttributeError(f"module 'hallucinator' has no attribute {name!r}")
