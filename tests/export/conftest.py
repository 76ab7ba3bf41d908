"""What the export tests share: torch on one thread, and a checkpoint as ``pretrain`` writes it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from hallucinator import backbones
from tests.conftest import write_checkpoint


@pytest.fixture(autouse=True)
def _one_thread():
    """Torch on one thread (tests/conftest.py restores the count after each test): on a CPU shared with other jobs,
    two threads made building a ViT-Tiny 25x slower here (1.6 s against 0.06 s), and these tests build several."""
    torch.set_num_threads(1)


def method_checkpoint(
    run_dir: Path,
    *,
    backbone: str = "resnet18",
    width: int = 16,
    cifar_stem: bool | None = None,
    method: str = "simclr",
    hparams: dict | None = None,
    seed: int = 0,
) -> Path:
    """A checkpoint as ``pretrain`` writes it, with every weight of the method (``fabricate_checkpoint``'s projector
    is a stub), BatchNorm statistics away from their initial 0 / 1 so that the eval-mode normalisation is exercised.
    ``cifar_stem``: by default for ResNets of width < 64."""
    from hallucinator.engine.config import Config
    from hallucinator.engine.module import build_method

    config = Config(seed=seed, output_dir=str(run_dir))
    model = config.model
    model.method, model.backbone, model.width, model.hparams = method, backbone, width, hparams or {}
    model.cifar_stem = backbone in backbones.RESNETS and width < 64 if cifar_stem is None else cifar_stem
    config.data.dataset, config.data.image_size = "cifar10", 32
    torch.manual_seed(seed)
    net = build_method(config)
    for module in net.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm) and module.running_mean is not None:
            module.running_mean.normal_(0, 0.2)
            module.running_var.uniform_(0.5, 2.0)
    state = {f"method.{key}": value for key, value in net.state_dict().items()}
    return write_checkpoint(run_dir, config, state, global_step=7)


def printed_command(output: str, prefix: str) -> str:
    """The code after ``prefix`` on the line of ``output`` that starts with it."""
    (line,) = [line for line in output.splitlines() if line.startswith(prefix)]
    return line[len(prefix) :]
