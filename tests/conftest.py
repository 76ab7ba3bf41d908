"""Shared fixtures: the real CIFAR-10 archive from ``../shared`` (skipped, with the reason, when absent), and a
tiny backbone, views and every method's small heads for the tests that build methods."""

from __future__ import annotations

import io
import os
import socket
import tarfile
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from hallucinator.engine.config import Config, TrainerConfig
from hallucinator.engine.train import FORCE_PRECISION_VARIABLE

PROJECT_ROOT = Path(__file__).resolve().parents[1]
# HALLUCINATOR_TEST_CIFAR10: the archive elsewhere (a GPU machine without ../shared; experiments/device_check.sh)
CIFAR10_ARCHIVE = Path(
    os.environ.get("HALLUCINATOR_TEST_CIFAR10", PROJECT_ROOT.parent / "shared" / "datasets" / "cifar10-jpeg.tar.gz")
)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--force-precision",
        choices=("32-true", "bf16-mixed"),
        help="what `trainer.precision: auto` resolves to in every test (sets $HALLUCINATOR_FORCE_PRECISION): "
        "bf16-mixed runs on an AVX2 CPU what an AVX-512 BF16 / AMX one runs, 32-true the other way round",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "precision_sensitive: its outcome could depend on the precision `auto` picks on this CPU; "
        "tests/cross_cutting/test_precision_modes.py runs these under the other precision too",
    )
    forced = config.getoption("--force-precision")
    if forced:  # the environment, so that the runs the tests start in subprocesses see it too
        os.environ[FORCE_PRECISION_VARIABLE] = forced


class TinyNet(nn.Module):
    """Conv -> (BatchNorm) -> ReLU -> global pool: a fast backbone with a ``num_features`` attribute."""

    def __init__(self, channels: int = 6, batch_norm: bool = False) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, channels, 3, padding=1)
        self.bn = nn.BatchNorm2d(channels) if batch_norm else nn.Identity()
        self.num_features = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.bn(self.conv(x))).mean(dim=(2, 3))


# every registered method's small heads, for TinyNet
SMALL = {
    "mocov1": {"dim": 8, "queue_size": 16, "shuffle_bn_splits": 2},
    "mocov2": {"dim": 8, "queue_size": 16, "shuffle_bn_splits": 2},
    "simclr": {"dim": 8},
    "simsiam": {"dim": 8, "pred_hidden_dim": 4},
    "byol": {"dim": 8, "hidden_dim": 16, "pred_hidden_dim": 16},
    "barlowtwins": {"dim": 8, "hidden_dim": 16},
    "vicreg": {"dim": 8, "hidden_dim": 16},
    "mocov3": {"dim": 8, "hidden_dim": 16, "pred_hidden_dim": 16},
    "nnclr": {"dim": 8, "hidden_dim": 16, "pred_hidden_dim": 16, "queue_size": 16},
    "dino": {"out_dim": 16, "hidden_dim": 16, "bottleneck_dim": 8},
}


@pytest.fixture
def tiny_net() -> type[TinyNet]:
    return TinyNet


@pytest.fixture
def views() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return torch.randn(8, 3, 8, 8, generator=generator), torch.randn(8, 3, 8, 8, generator=generator)


def write_checkpoint(run_dir: Path, config: Config, state: dict, global_step: int) -> Path:
    """``RUN/checkpoints/last.ckpt`` in the documented format (a Lightning checkpoint dict with ``state_dict``
    and ``hyper_parameters.config``) and the run directory's ``config.yaml``; returns the checkpoint's path."""
    from hallucinator.engine.config import dump_config, to_dict

    path = run_dir / "checkpoints" / "last.ckpt"
    path.parent.mkdir(parents=True, exist_ok=True)
    checkpoint = {"epoch": 0, "global_step": global_step, "state_dict": state}
    torch.save({**checkpoint, "hyper_parameters": {"config": to_dict(config)}}, path)
    (run_dir / "config.yaml").write_text(dump_config(config))
    return path


def auto_precision() -> str:
    """What ``trainer.precision: auto`` trains in on this CPU, or under ``--force-precision``."""
    from hallucinator.engine.train import resolve_precision

    return resolve_precision(Config(trainer=TrainerConfig(accelerator="cpu")))[0]


@pytest.fixture(autouse=True)
def _restore_threads():
    """Runs with ``--trainer.cpu_threads`` or ``--threads`` set torch's thread count: give it back after each test."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (for a test's process group)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_ranks(worker, out_dir: Path, world: int, attempts: int = 3) -> list[dict]:
    """``worker(rank, port, out_dir)`` in ``world`` spawned processes (a gloo group), then each ``rank{r}.pt`` it saved.

    A rank killed by a signal is retried on a fresh port, up to ``attempts`` times: gloo's TCP transport
    aborts the process on a rare connection race (once in ~20 full CI runs here, 2026-11-30: SIGABRT,
    "terminate called without an active exception", the test passing alone at every rerun). A rank
    that raises, i.e. a failure of the code under test, fails at once.
    """
    import torch.distributed as dist
    import torch.multiprocessing as mp

    if not dist.is_available():
        pytest.skip("torch.distributed is not available in this PyTorch build")
    for attempt in range(1, attempts + 1):
        try:
            mp.spawn(worker, args=(free_port(), str(out_dir)), nprocs=world, join=True)
            break
        except mp.ProcessExitedException as error:
            if error.signal_name is None or attempt == attempts:
                raise
            warnings.warn(f"run_ranks: {error} (attempt {attempt} of {attempts}); retrying on a fresh port")
    return [torch.load(out_dir / f"rank{r}.pt") for r in range(world)]


@pytest.fixture(scope="session")
def cifar10_archive() -> Path:
    if not CIFAR10_ARCHIVE.is_file():
        pytest.skip(f"real CIFAR-10 not found at {CIFAR10_ARCHIVE} (../shared is absent on this machine)")
    return CIFAR10_ARCHIVE


@pytest.fixture(scope="session")
def cifar10_subset(cifar10_archive: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """The first 200 training images of each class, decoded independently of ``hallucinator.data``.

    Returns uint8 images ``(2000, 3, 32, 32)`` and int64 labels ``(2000,)``.
    """
    per_class = 200
    images: dict[str, list[np.ndarray]] = {}
    with tarfile.open(cifar10_archive) as archive:
        for member in archive:
            parts = Path(member.name).parts
            if not member.isfile() or len(parts) < 3 or parts[-3] != "train":
                continue
            bucket = images.setdefault(parts[-2], [])
            if len(bucket) < per_class:
                data = archive.extractfile(member).read()
                bucket.append(np.asarray(Image.open(io.BytesIO(data)).convert("RGB")))
    classes = sorted(images)
    pixels = np.stack([image for name in classes for image in images[name]])
    labels = np.repeat(np.arange(len(classes)), per_class)
    return torch.from_numpy(pixels).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(labels)
