"""mkdocs hook: the README as the home page, and a page per ``hallucinator`` command from its own parser.

Both are made at build time and never committed, so they cannot go stale: a new command or flag is on
the site at the next ``mkdocs build``. mkdocs.yml's nav holds an empty "Command line" section; this hook
fills it with an overview (``hallucinator --help``) and one page per command (``hallucinator CMD --help``).
"""

from __future__ import annotations

import argparse
import functools
from pathlib import Path

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File, Files

from hallucinator.cli import build_parser

CLI_SECTION = "Command line"
CLI_DIR = "cli"
HELP_WIDTH = 100  # fixed, so the pages do not depend on the terminal that built them
PIPE = "\\|"


def _commands(parser: argparse.ArgumentParser) -> list[tuple[str, str, argparse.ArgumentParser]]:
    """(name, one-line help, parser) of every subcommand, in the order ``--help`` lists them."""
    (action,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    summaries = {choice.dest: choice.help or "" for choice in action._choices_actions}
    return [(name, summaries.get(name, ""), sub) for name, sub in action.choices.items()]


def _help(parser: argparse.ArgumentParser) -> str:
    # typeshed types a formatter class as called with `prog` alone; every HelpFormatter also takes `width`
    parser.formatter_class = functools.partial(parser.formatter_class, width=HELP_WIDTH)  # type: ignore[call-arg]
    return parser.format_help()


def _page(title: str, summary: str, help_text: str) -> str:
    return f"# {title}\n\n{summary}\n\n```text\n{help_text.rstrip()}\n```\n"


def _cli_pages() -> dict[str, str]:
    """Page path (under the docs) -> Markdown."""
    parser = build_parser()
    commands = _commands(parser)
    # a help string's "|" would end its table cell
    rows = "\n".join(f"| [`{name}`]({name}.md) | {summary.replace('|', PIPE)} |" for name, summary, _ in commands)
    overview = (
        "# Command line\n\n"
        "One program, `hallucinator`, with a command for each step: pre-train, evaluate, export, transfer.\n"
        "Each page below is that command's `--help`, generated from the parser when this site was built.\n\n"
        f"| command | what it does |\n| --- | --- |\n{rows}\n\n"
        f"```text\n{_help(parser).rstrip()}\n```\n"
    )
    pages = {f"{CLI_DIR}/index.md": overview}
    for name, summary, sub in commands:
        pages[f"{CLI_DIR}/{name}.md"] = _page(f"hallucinator {name}", summary, _help(sub))
    return pages


def on_config(config: MkDocsConfig) -> MkDocsConfig:
    for entry in config.nav or []:
        if isinstance(entry, dict) and CLI_SECTION in entry:
            entry[CLI_SECTION] = [{"Overview": f"{CLI_DIR}/index.md"}] + [
                {f"hallucinator {name}": f"{CLI_DIR}/{name}.md"} for name, _, _ in _commands(build_parser())
            ]
            return config
    raise PluginError(f"mkdocs.yml: the nav has no {CLI_SECTION!r} section for the command pages")


def on_files(files: Files, config: MkDocsConfig) -> Files:
    # the README is the home page; its links into docs/ become links between the site's pages
    readme = (Path(config.config_file_path).parent / "README.md").read_text()
    files.append(File.generated(config, "index.md", content=readme.replace("](docs/", "](")))
    for path, markdown in _cli_pages().items():
        files.append(File.generated(config, path, content=markdown))
    return files
