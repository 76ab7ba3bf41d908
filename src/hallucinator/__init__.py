"""Hallucinator: harder positives in feature space for contrastive self-supervised learning."""

__version__ = "0.1.0"
