"""Tests mirror ``src/``: a contributor finds a module's tests by the module's name (docs/ARCHITECTURE.md, "Tests").

``src/hallucinator/<package path>/<name>.py`` has its tests in ``tests/<package path>/test_<name>.py``; a package's
own ``__init__.py`` in ``tests/<package path>/test_<package>.py`` (``hallucinator/export/__init__.py``:
``tests/export/test_export.py``). Checks that test no single module live in ``tests/cross_cutting/`` and are
listed in :data:`CROSS_CUTTING`, so that neither a stray test module nor a stale entry goes unnoticed.
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CROSS_CUTTING_DIR = "cross_cutting"
# what each cross-cutting check covers, and why it is no single module's
CROSS_CUTTING = {
    "test_benchmarks.py": "the scripts in benchmarks/ run and print their JSON line",
    "test_configs.py": "every shipped config builds, and holds what docs/methods.md's table states",
    "test_dependencies.py": "every third-party import of src/ is declared in pyproject.toml",
    "test_device_check.py": "experiments/device_check.sh --dry-run runs every part",
    "test_devices.py": "a whole run on each device and precision; the file a GPU machine runs (device_check)",
    "test_distributed_methods.py": "every method's batch statistics under 2-process DDP equal 1 process's",
    "test_docs_site.py": "mkdocs build --strict of docs/",
    "test_doctests.py": "the usage examples in several modules' docstrings run",
    "test_layout.py": "this rule",
    "test_lint.py": "ruff, mypy and the import-linter layer contract",
    "test_method_learning.py": "each method lowers its loss on real CIFAR-10",
    "test_own_images.py": "a newcomer's folder of photos: pretrain, then embed, from the command line",
    "test_precision_modes.py": "the precision-sensitive tests pass under the other CPU kind's precision too",
    "test_readme.py": "the README's library example runs as printed",
    "test_vit_recipes.py": "the ViT quickstart configs train from the command line",
    "test_wheel.py": "the built wheel installs and runs without the checkout",
}


def mirrored_source(test: Path, source: Path) -> Path | None:
    """The source module that ``test`` (a path under ``tests/``) holds the tests of, or ``None``."""
    package, name = test.parent, test.stem.removeprefix("test_")
    module = source.joinpath(*package.parts, f"{name}.py")
    if module.is_file():
        return module
    init = source.joinpath(*package.parts, "__init__.py")
    return init if package.parts and package.name == name and init.is_file() else None


def misplaced(tests: Path, source: Path, cross_cutting: dict[str, str]) -> list[str]:
    """One line per test module that breaks the layout, and per listed cross-cutting check that is missing."""
    problems = []
    for path in sorted(tests.rglob("test_*.py")):
        test = path.relative_to(tests)
        if test.parts[0] == CROSS_CUTTING_DIR:
            if test.relative_to(CROSS_CUTTING_DIR).as_posix() not in cross_cutting:
                problems.append(
                    f"tests/{test.as_posix()}: not listed in CROSS_CUTTING (tests/cross_cutting/test_layout.py)"
                )
        elif mirrored_source(test, source) is None:
            wanted = source.relative_to(source.parents[1]).joinpath(*test.parent.parts, test.stem.removeprefix("test_"))
            problems.append(
                f"tests/{test.as_posix()}: {wanted.as_posix()}.py does not exist; name it after the module it tests, "
                "or move it to tests/cross_cutting/ and list it in CROSS_CUTTING"
            )
    for name in sorted(cross_cutting):
        if not (tests / CROSS_CUTTING_DIR / name).is_file():
            problems.append(f"tests/{CROSS_CUTTING_DIR}/{name}: listed in CROSS_CUTTING but absent")
    return problems


def test_every_test_module_mirrors_a_source_module_or_is_a_listed_cross_cutting_check() -> None:
    problems = misplaced(ROOT / "tests", ROOT / "src" / "hallucinator", CROSS_CUTTING)
    assert not problems, "\n".join(problems)


def test_the_check_names_a_stray_module_an_unlisted_check_and_a_stale_entry(tmp_path: Path) -> None:
    source, tests = tmp_path / "src" / "hallucinator", tmp_path / "tests"
    for module in ("losses.py", "export/__init__.py", "export/hf.py"):
        (source / module).parent.mkdir(parents=True, exist_ok=True)
        (source / module).touch()
    for test in ("test_losses.py", "export/test_export.py", "export/test_hf.py", "cross_cutting/test_readme.py"):
        (tests / test).parent.mkdir(parents=True, exist_ok=True)
        (tests / test).touch()
    assert misplaced(tests, source, {"test_readme.py": "the README"}) == []
    (tests / "export" / "test_onnx.py").touch()  # no export/onnx.py
    (tests / "test_losses_new_methods.py").touch()
    (tests / "cross_cutting" / "test_wheel.py").touch()
    assert misplaced(tests, source, {"test_readme.py": "the README", "test_lint.py": "the linters"}) == [
        "tests/cross_cutting/test_wheel.py: not listed in CROSS_CUTTING (tests/cross_cutting/test_layout.py)",
        "tests/export/test_onnx.py: src/hallucinator/export/onnx.py does not exist; name it after the module it "
        "tests, or move it to tests/cross_cutting/ and list it in CROSS_CUTTING",
        "tests/test_losses_new_methods.py: src/hallucinator/losses_new_methods.py does not exist; name it after the "
        "module it tests, or move it to tests/cross_cutting/ and list it in CROSS_CUTTING",
        "tests/cross_cutting/test_lint.py: listed in CROSS_CUTTING but absent",
    ]
