"""The README's library example runs as printed (on the real CIFAR-10 from ../shared)."""

from __future__ import annotations

import re
from pathlib import Path

import torch

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_python_example_trains_one_step(cifar10_archive: Path, monkeypatch) -> None:
    (example,) = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    monkeypatch.chdir(README.parent)  # the example reads ../shared relative to the repository root
    namespace: dict = {}
    exec(compile(example, str(README), "exec"), namespace)
    out, model = namespace["out"], namespace["model"]
    assert torch.isfinite(out["loss"]) and "loss_hallucinated" in out
    assert all(p.grad is not None for p in model.hallucinator.parameters())
