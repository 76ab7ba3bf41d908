"""The small detection set, made once per session from the real CIFAR-10 (skipped without it)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from hallucinator.data import build_dataset
from hallucinator.transfer import DetectionSet, make_detection_set
from hallucinator.transfer.config import TransferConfig, load_transfer_config


@pytest.fixture(scope="session")
def small_set(cifar10_archive: Path, tmp_path_factory: pytest.TempPathFactory) -> DetectionSet:
    """12 training and 6 test canvases of 96 x 96."""
    root = tmp_path_factory.mktemp("detection") / "set"
    return make_detection_set(cifar10_archive, root, images_per_split={"train": 12, "test": 6}, canvas=(96, 96))


@pytest.fixture(scope="session")
def cifar10_test_images(cifar10_archive: Path):
    """The CIFAR-10 test split's uint8 images (N, 3, 32, 32): what the objects were cut from."""
    return build_dataset("cifar10", cifar10_archive, "test").images


RECIPE = Path(__file__).resolve().parents[2] / "configs" / "transfer" / "cifar_det_r18c4.yaml"
# the small recipe at the test set's 96 px, 4 images a step, in one thread: seconds per run
FAST = {
    "data": {"train_sizes": [96], "test_size": 96, "max_size": 160, "num_workers": 0, "test_batch_size": 6},
    "solver": {"batch_size": 4, "max_steps": 2, "steps": [1000], "warmup_steps": 0},
    "trainer": {"log_every_n_steps": 1, "progress_bar": False, "cpu_threads": 1, "accelerator": "cpu"},
}


def fast_recipe(path: Path, **sections: Any) -> Path:
    """A config file at ``path``: the small recipe (``base:``), :data:`FAST` and ``sections`` (or top-level keys)."""
    import yaml

    data: dict = {"base": str(RECIPE), **FAST}
    for name, value in sections.items():
        data[name] = {**FAST.get(name, {}), **value} if isinstance(value, dict) else value
    path.write_text(yaml.safe_dump(data))
    return path


def config_for(recipe: Path, checkpoint: Path, data_dir: Path, output_dir: Path, *overrides: str) -> TransferConfig:
    """``recipe`` fine-tuning ``checkpoint`` on ``data_dir`` into ``output_dir``, then ``overrides``."""
    return load_transfer_config(
        recipe,
        [f"--model.checkpoint={checkpoint}", f"--data.data_dir={data_dir}", f"--output_dir={output_dir}", *overrides],
    )


@pytest.fixture(scope="session")
def r18_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A `pretrain` checkpoint of a width-8 CIFAR-stem ResNet-18 (seeded random weights)."""
    import torch

    from hallucinator.engine.checkpoint import build_backbone
    from hallucinator.engine.config import load_config
    from tests.conftest import write_checkpoint

    config = load_config(None, ["--model.width=8"])
    torch.manual_seed(0)
    state = {f"method.backbone.{key}": value for key, value in build_backbone(config).state_dict().items()}
    return write_checkpoint(tmp_path_factory.mktemp("pretrained"), config, state, global_step=0)
