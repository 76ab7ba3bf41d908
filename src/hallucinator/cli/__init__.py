"""The ``hallucinator`` command line: one parser, subcommands contributed by sibling modules."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from hallucinator import __version__

# Each module defines ``register(subparsers)``; it adds its subcommands and sets ``func``.
SUBCOMMAND_MODULES = ("pretrain", "sweep", "evaluate", "augmentations", "export", "embed", "transfer")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hallucinator",
        description="Self-supervised pre-training with the Hallucinator (ICCV 2023).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMAND_MODULES:
        importlib.import_module(f"{__name__}.{name}").register(subparsers)
    return parser


def parse_arguments(parser: argparse.ArgumentParser, argv: Sequence[str] | None = None) -> argparse.Namespace:
    """``argv`` parsed once. A subcommand that takes config overrides (``--section.key=value`` or
    ``--section.key value``, anywhere after the subcommand) has an ``overrides`` default: the arguments its
    parser does not know become its ``overrides``, in order. Elsewhere they are an error, as ``parse_args`` says.

    Example:
        >>> parse_arguments(build_parser(), ["pretrain", "c.yaml", "--seed", "3", "--trainer.max_epochs=2"]).overrides
        ['--trainer.max_epochs=2']
    """
    args, unknown = parser.parse_known_args(argv)
    if unknown and not hasattr(args, "overrides"):
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    if unknown:
        args.overrides = unknown
    return args


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parse_arguments(parser, argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
