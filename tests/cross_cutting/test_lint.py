"""The linters CI runs on every commit: ruff (lint and format), mypy on ``src/`` and the layer contract.

Each runs as a subprocess on this checkout with the configuration in ``pyproject.toml``; a finding
fails the test with the tool's own output. A tool that is not installed (``pip install -e ".[dev]"``
installs them all) skips its test and says so.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LINT_IMPORTS = "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"


def _require(module: str) -> None:
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} is not installed: pip install -e '.[dev]' installs the linters")


def _run(args: list[str], cwd: Path = ROOT, source: Path = ROOT / "src") -> subprocess.CompletedProcess:
    # the checked tree's package first on the path, whatever else is installed
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(source), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def _passes(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == 0, f"{' '.join(map(str, result.args[1:]))} failed:\n{result.stdout}\n{result.stderr}"


@pytest.mark.parametrize("command", [["check", "."], ["format", "--check", "."]], ids=["lint", "format"])
def test_ruff(command):
    _require("ruff")
    _passes(_run(["-m", "ruff", *command]))


def test_mypy():
    _require("mypy")
    _passes(_run(["-m", "mypy"]))  # files, strictness and untyped libraries: [tool.mypy]


def test_layer_contract_holds():
    _require("importlinter")
    result = _run(["-c", LINT_IMPORTS])
    _passes(result)
    assert "2 kept, 0 broken" in result.stdout  # the layers and no import cycles


def _copy_with(tmp_path: Path, module: str, line: str) -> Path:
    """A copy of the tree and its ``pyproject.toml`` in which ``module`` (a path under the package) ends with ``line``."""
    package = tmp_path / "src" / "hallucinator"
    shutil.copytree(ROOT / "src" / "hallucinator", package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    path = package / module
    path.write_text(path.read_text() + f"\n{line}\n")
    return tmp_path


def test_layer_contract_catches_an_upward_import(tmp_path):
    """A copy of the tree where a core module imports the CLI breaks the contract (the check can fail)."""
    _require("importlinter")
    _copy_with(tmp_path, "losses.py", "import hallucinator.cli.pretrain  # an upward import")
    result = _run(["-c", LINT_IMPORTS], cwd=tmp_path, source=tmp_path / "src")
    assert result.returncode != 0, result.stdout
    assert "BROKEN" in result.stdout and "hallucinator.losses -> hallucinator.cli.pretrain" in result.stdout


def test_cycle_contract_catches_a_circle_even_through_a_function_level_import(tmp_path):
    """datamodule imports device_data; a function of device_data importing datamodule back closes a circle."""
    _require("importlinter")
    line = "def _back() -> None:\n    from hallucinator.engine.datamodule import PretrainDataModule  # noqa: F401"
    _copy_with(tmp_path, "engine/device_data.py", line)
    result = _run(["-c", LINT_IMPORTS], cwd=tmp_path, source=tmp_path / "src")
    assert result.returncode != 0, result.stdout
    assert (
        "No cycles are allowed in hallucinator.engine" in result.stdout
        and ".device_data -> .datamodule" in result.stdout
    )
