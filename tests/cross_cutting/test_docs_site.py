"""The docs site builds with ``mkdocs build --strict``: a broken link, anchor or nav entry and an API reference
that names no object fail it (mkdocs.yml's ``validation`` makes each a warning, ``--strict`` each warning an error).

The build also checks what the hooks make: a page per ``hallucinator`` command and rendered doctests. Skipped,
saying so, where the docs tooling is not installed (``pip install -e ".[dev]"`` or ``".[docs]"`` installs it).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from hallucinator.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
TOOLS = ("mkdocs", "material", "mkdocstrings", "mkdocstrings_handlers.python")


def _require_tools() -> None:
    missing = [name for name in TOOLS if importlib.util.find_spec(name.split(".")[0]) is None]
    if missing:
        pytest.skip(f"docs tooling not installed ({', '.join(missing)}): pip install -e '.[docs]'")


def _build(config: Path, site: Path) -> tuple[subprocess.CompletedProcess, float]:
    # NO_MKDOCS_2_WARNING: Material's banner about MkDocs 2 (not a build warning) stays out of the log
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    command = [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(config), "-d", str(site)]
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    return result, time.perf_counter() - started


def _commands() -> list[str]:
    (action,) = (a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return list(action.choices)


def _text(page: Path) -> str:
    return page.read_text(encoding="utf-8")


def test_site_builds_strictly_with_every_page(tmp_path):
    _require_tools()
    site = tmp_path / "site"
    result, seconds = _build(ROOT / "mkdocs.yml", site)
    assert result.returncode == 0, f"mkdocs build --strict failed:\n{result.stdout}\n{result.stderr}"
    print(f"mkdocs build --strict: {seconds:.1f} s")

    # the home page is the README, its links into docs/ rewritten to the site's pages
    home = _text(site / "index.html")
    assert "Two commands" in home and 'href="training/"' in home and 'href="docs/' not in home
    assert "q' = q + lam (q - k)" in _text(site / "concepts" / "index.html")

    # one page per command, each holding that command's --help, from the parser itself
    overview = _text(site / "cli" / "index.html")
    for name in _commands():
        page = site / "cli" / name / "index.html"
        assert page.is_file(), f"no page for `hallucinator {name}`"
        assert f"usage: hallucinator {name}" in _text(page)
        assert f'href="{name}/"' in overview
    assert "--version" in overview

    # docstrings: the `Example:` doctests render as code, not as Markdown quotes; Sphinx roles as code
    api = _text(site / "api" / "hallucinator" / "index.html")
    assert 'id="hallucinator.hallucinator.Hallucinator"' in api
    assert "<blockquote>" not in api and "&gt;&gt;&gt;" in api
    data = _text(site / "api" / "data" / "index.html")
    assert ":class:" not in data and ":func:" not in data
    assert 'id="hallucinator.data.StepSampler"' in data
    for page in ("methods", "losses", "backbones", "engine", "evaluation", "export", "transfer"):
        assert (site / "api" / page / "index.html").is_file()


# (page, what is appended to it, what the failed build's log names); an unknown reference stops the build
# at once, before links are checked, so it has a build of its own
DEFECTS = {
    "links": (
        "concepts.md",
        "See [a page](no-such-page.md) and [a section](data.md#no-such-section).",
        ["no-such-page.md", "no-such-section"],
    ),
    "reference": ("api/losses.md", "::: hallucinator.losses.no_such_loss", ["hallucinator.losses.no_such_loss"]),
}


@pytest.mark.parametrize("defect", DEFECTS)
def test_strict_build_fails_on_a_broken_link_or_reference(tmp_path, defect):
    """A copy of the docs with a broken link and anchor, or an API reference to nothing, does not build."""
    _require_tools()
    page, text, named = DEFECTS[defect]
    docs = tmp_path / "docs"
    shutil.copytree(ROOT / "docs", docs)
    shutil.copy(ROOT / "README.md", tmp_path / "README.md")
    with (docs / page).open("a") as file:
        file.write(f"\n{text}\n")
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    (mkdocstrings,) = (plugin["mkdocstrings"] for plugin in config["plugins"] if isinstance(plugin, dict))
    python = mkdocstrings["handlers"]["python"]
    python["paths"] = [str(ROOT / "src")]
    python["options"]["extensions"] = [str(ROOT / path) for path in python["options"]["extensions"]]
    config["hooks"] = [str(ROOT / path) for path in config["hooks"]]
    (tmp_path / "mkdocs.yml").write_text(yaml.safe_dump(config, sort_keys=False))

    result, _ = _build(tmp_path / "mkdocs.yml", tmp_path / "site")
    log = result.stdout + result.stderr
    assert result.returncode != 0, log
    for name in named:
        assert name in log, log


def _griffe_extension():
    spec = importlib.util.spec_from_file_location("griffe_docstrings", ROOT / "docs" / "hooks" / "griffe_docstrings.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_docstring_dialect_reads_as_google_style():
    pytest.importorskip("griffe", reason="docs tooling not installed: pip install -e '.[docs]'")
    docstring = """Batches of :class:`~hallucinator.data.ImageDataset` via :func:`batch_loader`.

Args:
    size: pixels.
    rank, world_size: the process group's,
        else 0 and 1.

    seed: a seed.

Example:
    >>> x = 1

Example: not a heading; ``:func:`` alone stays, and so does a pair outside Args:
    a, b: c
"""
    expected = """Batches of `ImageDataset` via `batch_loader`.

Args:
    size: pixels.
    rank: the process group's,
        else 0 and 1.
    world_size: the process group's,
        else 0 and 1.

    seed: a seed.

Examples:
    >>> x = 1

Example: not a heading; ``:func:`` alone stays, and so does a pair outside Args:
    a, b: c
"""
    assert _griffe_extension().to_google(docstring) == expected
