"""The wheel works where the repository is not: built by ``python -m build``, installed into a fresh venv.

The venv gets the wheel alone (``--no-deps``); the third-party packages it needs (torch is a multi-GB CUDA
build here, and CI has no cache of it) come from this environment's site-packages, listed in a ``.pth``
file. A directory listed that way is only put on ``sys.path``: the ``.pth`` files inside it, the editable
install of this checkout among them, are not run, so ``import hallucinator`` can only find the wheel's copy.

Also here: the version is written once (``hallucinator.__version__``) and the configs the wheel ships
(the repository's ``configs/``) are found by name when no such file is on disk.
"""

from __future__ import annotations

import email.parser
import importlib.metadata
import importlib.util
import os
import re
import shutil
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import hallucinator
from hallucinator.cli import main
from hallucinator.engine.config import SHIPPED_CONFIGS, ConfigError, config_path, load_config

tomllib = pytest.importorskip("tomllib", reason="tomllib needs Python >= 3.11")

ROOT = Path(__file__).resolve().parents[2]
needs_build = pytest.mark.skipif(
    importlib.util.find_spec("build") is None,
    reason="the `build` package is not installed (pip install -e '.[dev]' installs it): no wheel to check",
)


def _project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _name(requirement: str) -> str:
    return re.sub(r"[-_.]+", "-", re.match(r"[A-Za-z0-9_.-]+", requirement).group()).lower()


def _repo_configs() -> dict[str, bytes]:
    return {
        path.relative_to(ROOT / "configs").as_posix(): path.read_bytes()
        for path in (ROOT / "configs").rglob("*")
        if path.is_file()
    }


# ---------------------------------------------------------------------------------------
# the version and the shipped configs, in this checkout


def test_version_is_written_once_and_printed(capsys):
    project = _project()
    assert "version" not in project and "version" in project["dynamic"]
    assert re.fullmatch(r"\d+\.\d+\.\d+", hallucinator.__version__)
    # the installed metadata is the package's: a stale one means the checkout was not reinstalled
    assert importlib.metadata.version("hallucinator") == hallucinator.__version__
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out == f"hallucinator {hallucinator.__version__}\n"


def test_shipped_configs_are_the_repository_configs():
    assert (ROOT / "configs").resolve() == SHIPPED_CONFIGS
    shipped = {path.relative_to(SHIPPED_CONFIGS).as_posix() for path in SHIPPED_CONFIGS.rglob("*.yaml")}
    assert shipped == {name for name in _repo_configs() if name.endswith(".yaml")}


def test_a_config_name_not_on_disk_is_found_among_the_shipped_ones(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no configs/ here
    for given in ("quickstart.yaml", "configs/quickstart.yaml", "table1/cifar10_mocov2_hal.yaml"):
        expected = (ROOT / "configs" / given.removeprefix("configs/")).resolve()
        assert config_path(given) == expected
    assert load_config("quickstart.yaml") == load_config(ROOT / "configs" / "quickstart.yaml")
    # a file on disk wins over a shipped config of the same name
    (tmp_path / "quickstart.yaml").write_text("model: {method: byol}\n")
    assert load_config("quickstart.yaml").model.method == "byol"


def test_a_missing_config_names_the_shipped_ones_near_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(
        ConfigError, match=r"config file not found: quickstrt\.yaml \(shipped configs near that name: quickstart\.yaml"
    ):
        config_path("quickstrt.yaml")
    with pytest.raises(ConfigError, match=r"table1/cifar10_mocov2_hal\.yaml"):
        config_path("configs/table1/cifar10_mocov2_hall.yaml")
    count = sum(1 for _ in (ROOT / "configs").rglob("*.yaml"))
    with pytest.raises(ConfigError, match=rf"nor among the {count} shipped configs \(e\.g\. quickstart\.yaml"):
        config_path("zzz.yaml")


def test_pretrain_with_a_missing_config_says_so_in_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["pretrain", "quickstrt.yaml"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1
    assert "config file not found: quickstrt.yaml (shipped configs near that name: quickstart.yaml" in captured.err


# ---------------------------------------------------------------------------------------
# the wheel


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel that ``python -m build`` makes (the sdist first, then the wheel from the sdist), from a copy of
    the files the build reads: the checkout itself gets no build/ or egg-info."""
    tmp = tmp_path_factory.mktemp("wheel")
    source = tmp / "source"
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
    shutil.copytree(ROOT / "src", source / "src", symlinks=True, ignore=ignore)  # src/hallucinator/configs: a link
    shutil.copytree(ROOT / "configs", source / "configs")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    # --no-isolation: the build backend of this environment, no download
    command = [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(tmp / "dist"), str(source)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"python -m build failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    (built,) = (tmp / "dist").glob("hallucinator-*.whl")
    return built


@pytest.fixture(scope="module")
def venv(wheel, tmp_path_factory) -> Path:
    """A fresh venv holding the wheel, and this environment's third-party packages through a ``.pth`` line."""
    root = tmp_path_factory.mktemp("venv") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True, timeout=120)
    python = root / "bin" / "python"
    purelib = Path(
        subprocess.run(
            [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    # this pip, installing into the venv's interpreter (and writing its console script for it)
    install = [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index", str(wheel)]
    result = subprocess.run(install, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"pip install of the wheel failed:\n{result.stdout}\n{result.stderr}"
    (purelib / "dependencies.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    return root


def _run(venv: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "PYTHONHOME")}
    return subprocess.run(
        [str(venv / "bin" / args[0]), *args[1:]], capture_output=True, text=True, cwd=cwd, env=env, timeout=300
    )


@needs_build
def test_wheel_metadata_requires_no_dev_or_test_package(wheel):
    with zipfile.ZipFile(wheel) as archive:
        (metadata_name,) = (name for name in archive.namelist() if name.endswith(".dist-info/METADATA"))
        metadata = email.parser.Parser().parsestr(archive.read(metadata_name).decode())
    project = _project()
    assert metadata["Version"] == hallucinator.__version__
    requirements = metadata.get_all("Requires-Dist")
    unconditional = {_name(r) for r in requirements if "extra ==" not in r}
    assert unconditional == {_name(r) for r in project["dependencies"]}
    dev_only = {_name(r) for r in project["optional-dependencies"]["dev"]} - unconditional
    assert {"pytest", "ruff", "mypy", "import-linter", "build", "mkdocs"} <= dev_only
    for extra, extra_requirements in project["optional-dependencies"].items():
        marked = {_name(r) for r in requirements if re.search(rf"extra == ['\"]{extra}['\"]", r)}
        assert marked == {_name(r) for r in extra_requirements}, extra


@needs_build
def test_wheel_ships_the_class_list_and_every_config(wheel):
    with zipfile.ZipFile(wheel) as archive:
        files = {name: archive.read(name) for name in archive.namelist()}
    class_list = ROOT / "src" / "hallucinator" / "data" / "imagenet200.class"
    assert files["hallucinator/data/imagenet200.class"] == class_list.read_bytes()
    shipped = {
        name.removeprefix("hallucinator/configs/"): data
        for name, data in files.items()
        if name.startswith("hallucinator/configs/")
    }
    assert shipped == {name: data for name, data in _repo_configs().items() if name.endswith(".yaml")}
    assert not any(name.startswith(("tests/", "docs/", "benchmarks/")) for name in files)


@needs_build
def test_installed_wheel_runs_without_the_checkout(venv, tmp_path):
    site_packages = next((venv / "lib").glob("python*/site-packages"))
    script = venv / "bin" / "hallucinator"
    assert script.read_text().splitlines()[0] == f"#!{venv / 'bin' / 'python'}"

    result = _run(venv, "hallucinator", "--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: hallucinator") and "pretrain" in result.stdout
    result = _run(venv, "hallucinator", "--version", cwd=tmp_path)
    assert result.stdout == f"hallucinator {hallucinator.__version__}\n", result.stderr

    # the package, its class list and its configs come from the wheel's install, not from this checkout
    probe = "import importlib.metadata, hallucinator; print(hallucinator.__file__, importlib.metadata.version('hallucinator'))"
    result = _run(venv, "python", "-c", probe, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    module, version = result.stdout.split()
    assert Path(module) == site_packages / "hallucinator" / "__init__.py"
    assert version == hallucinator.__version__
    package = site_packages / "hallucinator"
    assert (package / "data" / "imagenet200.class").is_file()
    assert (package / "configs").is_dir() and not (package / "configs").is_symlink()

    # a shipped config by its repository path, from a directory without one (the one run that imports torch)
    result = _run(venv, "hallucinator", "pretrain", "configs/quickstart.yaml", "--print-config", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "method: simclr" in result.stdout and "width: 16" in result.stdout  # quickstart.yaml over its bases
