"""Evaluation of pre-trained encoders: kNN, linear probe, representation metrics, plots and reports.

Numerical code works on plain tensors (features, or a backbone plus a uint8 image tensor);
only :class:`~hallucinator.evaluation.monitor.KNNMonitor` needs Lightning, and it is imported on
first use, so ``import hallucinator.evaluation`` does not load Lightning.
"""

from typing import Any

from hallucinator.evaluation.features import extract_features, extract_pair_features
from hallucinator.evaluation.knn import KNNResult, knn_classify, knn_evaluate
from hallucinator.evaluation.linear import LinearConfig, LinearResult, linear_probe, linear_probe_features
from hallucinator.evaluation.metrics import (
    alignment,
    g_potential,
    pos_similarity,
    representation_metrics,
    uniformity,
)

__all__ = [
    "KNNMonitor",
    "KNNResult",
    "LinearConfig",
    "LinearResult",
    "alignment",
    "extract_features",
    "extract_pair_features",
    "g_potential",
    "knn_classify",
    "knn_evaluate",
    "linear_probe",
    "linear_probe_features",
    "pos_similarity",
    "representation_metrics",
    "uniformity",
]


def __getattr__(name: str) -> Any:
    if name == "KNNMonitor":
        from hallucinator.evaluation.monitor import KNNMonitor

        return KNNMonitor
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
