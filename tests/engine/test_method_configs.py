"""Every method of the registry has its CIFAR-10/100 configs (with and without the Hallucinator) and a quickstart-size one."""

from __future__ import annotations

from pathlib import Path

import pytest

from hallucinator import methods
from hallucinator.engine import load_config

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
BEYOND = ["byol", "barlowtwins", "vicreg", "mocov3", "nnclr"]


@pytest.mark.parametrize("method", BEYOND)
def test_cifar_and_quickstart_configs_of_the_methods_beyond_the_paper(method: str) -> None:
    assert method in methods.METHODS
    for dataset in ("cifar10", "cifar100"):
        for arm, enabled in (("base", False), ("hal", True)):
            config = load_config(CONFIGS / "beyond" / f"{dataset}_{method}_{arm}.yaml")
            assert (config.model.method, config.data.dataset, config.hallucinator.enabled) == (method, dataset, enabled)
            assert config.optimizer.name == "lars" and config.data.batch_size == 256
    quick, reference = load_config(CONFIGS / f"quickstart_{method}.yaml"), load_config(CONFIGS / "quickstart.yaml")
    assert quick.model.method == method
    # the quickstart's recipe, only the method and its heads differ
    for section in ("hallucinator", "data", "optimizer", "trainer"):
        assert getattr(quick, section) == getattr(reference, section), section
    assert (quick.model.width, quick.seed) == (reference.model.width, reference.seed)
