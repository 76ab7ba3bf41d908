"""Hallucinator: harder positives in feature space for contrastive self-supervised learning."""

from hallucinator.hallucinator import Hallucinator

__version__ = "0.1.0"

__all__ = ["Hallucinator", "__version__", "load_backbone"]


def __getattr__(name: str):
    # ``hallucinator.load_backbone`` without importing Lightning (the engine) with the core
    if name == "load_backbone":
        from hallucinator.export import load_backbone

        return load_backbone
    raise AttributeError(f"module 'hallucinator' has no attribute {name!r}")
