"""Hallucinator: harder positives in feature space for contrastive self-supervised learning."""

from hallucinator.hallucinator import Hallucinator

__version__ = "0.1.0"

__all__ = ["Hallucinator", "__version__"]
