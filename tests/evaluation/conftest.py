"""A larger real CIFAR-10 split for the accuracy sanity checks (decoded here, independently of hallucinator.data),
and the fabricated runs (checkpoint, metrics, figures drawn) that the plot and report tests read."""

from __future__ import annotations

import csv
import io
import os
import tarfile
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from hallucinator.evaluation import plots
from hallucinator.evaluation.report import save_evaluation
from tests.conftest import write_checkpoint

TRAIN_PER_CLASS, TEST_PER_CLASS = 1000, 200
STEPS_PER_EPOCH, EPOCHS = 10, 3
STEPS = np.arange(STEPS_PER_EPOCH * EPOCHS)


def _decode_first(archive_path: Path, quota: dict[str, int]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """The first ``quota[split]`` images of every class of each split, in archive order."""
    found: dict[str, dict[str, list[np.ndarray]]] = {split: defaultdict(list) for split in quota}
    with tarfile.open(archive_path) as archive:
        for member in archive:
            *_, split, label, _name = ("", "", "") + Path(member.name).parts
            if member.isfile() and split in quota and len(found[split][label]) < quota[split]:
                found[split][label].append(np.asarray(Image.open(io.BytesIO(archive.extractfile(member).read()))))
    result = {}
    for split, by_class in found.items():
        names = sorted(by_class)
        pixels = np.stack([image for name in names for image in by_class[name]])
        labels = torch.arange(len(names)).repeat_interleave(torch.tensor([len(by_class[n]) for n in names]))
        result[split] = torch.from_numpy(pixels).permute(0, 3, 1, 2).contiguous(), labels
    return result


@pytest.fixture(scope="session")
def cifar10_sanity_split(cifar10_archive: Path) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """1,000 train and 200 test images per class: the shared README's sanity-figure split."""
    return _decode_first(cifar10_archive, {"train": TRAIN_PER_CLASS, "test": TEST_PER_CLASS})


def raw_pixel_features(images: torch.Tensor) -> torch.Tensor:
    """The README's raw-pixel features: each image's pixels, mean-centred and L2-normalised."""
    pixels = images.flatten(1).double() / 255
    return F.normalize(pixels - pixels.mean(dim=1, keepdim=True), dim=1).float()


def fabricate_checkpoint(
    run_dir: Path,
    *,
    backbone: str = "resnet18",
    width: int = 8,
    dataset: str = "cifar10",
    data_dir: str = "data",
    hallucinator: bool = True,
    seed: int = 0,
) -> Path:
    """A checkpoint in the documented format (a Lightning checkpoint dict with ``state_dict`` holding
    ``method.backbone.*`` and ``hyper_parameters.config``), plus the run directory's ``config.yaml``."""
    from hallucinator import backbones
    from hallucinator.engine.config import Config

    config = Config(seed=seed, output_dir=str(run_dir))
    config.model.backbone, config.model.width, config.model.cifar_stem = backbone, width, backbone == "resnet18"
    config.data.dataset, config.data.data_dir, config.data.image_size = dataset, data_dir, 32
    config.hallucinator.enabled = hallucinator
    torch.manual_seed(seed)
    net = backbones.build(backbone, cifar_stem=config.model.cifar_stem, width=width)
    state = {f"method.backbone.{key}": value for key, value in net.state_dict().items()}
    state["method.projector.weight"] = torch.zeros(2, 2)  # other method weights are ignored by load_pretrained
    return write_checkpoint(run_dir, config, state, global_step=1)


def write_metrics(run_dir, slope: float) -> None:
    """A metrics.csv as Lightning's CSVLogger writes it: per-step rows, plus an epoch-end kNN row."""
    path = run_dir / "csv" / "version_0" / "metrics.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    names = ["epoch", "step", "knn_top1", "train/loss", "train/pos_similarity"]
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, names)
        writer.writeheader()
        for step in range(STEPS_PER_EPOCH * EPOCHS):
            epoch = step // STEPS_PER_EPOCH
            writer.writerow(
                {
                    "epoch": epoch,
                    "step": step,
                    "train/loss": 5 - slope * step,
                    "train/pos_similarity": 1 - slope * step / 100,
                }
            )
            if step % STEPS_PER_EPOCH == STEPS_PER_EPOCH - 1:
                writer.writerow({"epoch": epoch, "step": step, "knn_top1": 20 + 10 * epoch * slope})


@pytest.fixture
def drawn(monkeypatch) -> list:
    """The figures the plot functions save, kept for inspection (they are closed after saving)."""
    figures = []
    save = plots._save

    def keep(fig, out):
        figures.append(fig)
        return save(fig, out)

    monkeypatch.setattr(plots, "_save", keep)
    return figures


def series(ax) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    return {line.get_label(): (np.asarray(line.get_xdata()), np.asarray(line.get_ydata())) for line in ax.lines}


def make_run(tmp_path, name, *, hallucinator, seed, slope=1.0, evaluation=None):
    run = tmp_path / name
    fabricate_checkpoint(run, hallucinator=hallucinator, seed=seed)
    write_metrics(run, slope)
    for key, figures in (evaluation or {}).items():
        save_evaluation(run, key, figures)
    config, checkpoint = run / "config.yaml", run / "checkpoints" / "last.ckpt"
    os.utime(config, (1000, 1000))
    os.utime(checkpoint, (1600, 1600))  # 10 minutes of training
    return run
