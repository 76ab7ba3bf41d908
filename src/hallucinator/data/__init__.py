"""Data layer (plain PyTorch): datasets of the paper, a decode-once cache, batched augmentation.

- :func:`build_dataset` -> :class:`ImageDataset` (uint8 images in a memory-mapped cache) or
  :class:`FileImageDataset` (ImageNet, streamed from files).
- :class:`StepSampler`: the batch order of every loop (a pure function of seed, epoch and batch
  number: resumable at any step, DDP-split); :func:`batch_loader`: its whole-batch gathers, the batches of every loop.
- :mod:`hallucinator.data.augment`: batched augmentations on any device;
  :mod:`hallucinator.data.presets`: the paper's two-view recipes and :func:`eval_transform`.
"""

from hallucinator.data.build import build_dataset
from hallucinator.data.datasets import DATASETS, FileImageDataset, ImageDataset
from hallucinator.data.loader import batch_loader
from hallucinator.data.presets import eval_transform
from hallucinator.data.sampler import StepSampler

__all__ = [
    "DATASETS",
    "FileImageDataset",
    "ImageDataset",
    "StepSampler",
    "batch_loader",
    "build_dataset",
    "eval_transform",
]
