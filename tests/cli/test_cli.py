"""``hallucinator --help`` answers at once: building the parser imports neither torch nor Lightning."""

from __future__ import annotations

import subprocess
import sys


def test_the_parser_imports_no_torch():
    code = (
        "import sys; from hallucinator.cli import build_parser; build_parser();"
        "print(sorted(m for m in ('torch', 'lightning', 'torchvision', 'timm') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_help_lists_every_subcommand():
    out = subprocess.run([sys.executable, "-m", "hallucinator", "--help"], capture_output=True, text=True).stdout
    for command in (
        "pretrain",
        "sweep",
        "knn",
        "linear",
        "metrics",
        "report",
        "plot",
        "show-augmentations",
        "export",
        "embed",
    ):
        assert command in out
