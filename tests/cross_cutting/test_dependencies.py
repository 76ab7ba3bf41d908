"""Every third-party module the library imports is declared in ``pyproject.toml``.

A module imported at a module's top level must be a core dependency; one imported only inside a
function (an optional feature) may instead sit in an optional extra.
"""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib", reason="tomllib needs Python >= 3.11")

ROOT = Path(__file__).resolve().parents[2]
# module -> distribution of the optional extras the dev environment does not install (pyproject.toml says why)
NOT_INSTALLED = {"umap": "umap-learn"}


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_names(requirements: list[str]) -> set[str]:
    return {normalise(re.match(r"[A-Za-z0-9_.-]+", requirement).group()) for requirement in requirements}


def third_party_imports(path: Path) -> dict[str, bool]:
    """Top-level module name -> whether some import of it runs at module import time."""
    tree = ast.parse(path.read_text())
    at_import_time = {id(node) for node in tree.body}
    found: dict[str, bool] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        for name in names:
            top = name.split(".")[0]
            if top in sys.stdlib_module_names or top == "hallucinator":
                continue
            found[top] = found.get(top, False) or id(node) in at_import_time
    return found


def test_every_import_of_the_library_is_declared():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    core = requirement_names(project["dependencies"])
    extras = set().union(*(requirement_names(group) for group in project["optional-dependencies"].values()))
    distributions = importlib.metadata.packages_distributions()
    problems = []
    for path in sorted((ROOT / "src").rglob("*.py")):
        for module, eager in third_party_imports(path).items():
            # an optional extra that is not installed here has no metadata to map its module to its distribution
            names = distributions.get(module, [NOT_INSTALLED.get(module, module)])
            declared = {normalise(name) for name in names}
            allowed = core if eager else core | extras
            if not declared & allowed:
                where = "dependencies" if eager else "dependencies or an optional extra"
                problems.append(f"{path.relative_to(ROOT)} imports {module!r}: not in [project] {where}")
    assert not problems, "\n".join(problems)


def test_the_checker_sees_an_undeclared_import(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("import numpy\nimport os\n\ndef f():\n    import tqdm\n")
    assert third_party_imports(module) == {"numpy": True, "tqdm": False}
