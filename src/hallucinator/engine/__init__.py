"""The training engine (PyTorch Lightning): config, LightningModule, run directory, ``pretrain``.

Example:
    >>> from hallucinator.engine import load_config, pretrain
    >>> result = pretrain(load_config("configs/quickstart.yaml", ["--trainer.max_epochs=1"]))
    >>> result.checkpoint  # runs/quickstart/checkpoints/last.ckpt
"""

from hallucinator.engine.checkpoint import load_pretrained
from hallucinator.engine.config import Config, ConfigError, dump_config, load_config
from hallucinator.engine.train import PretrainResult, TrainingDiverged, pretrain

__all__ = [
    "Config",
    "ConfigError",
    "PretrainResult",
    "TrainingDiverged",
    "dump_config",
    "load_pretrained",
    "load_config",
    "pretrain",
]
