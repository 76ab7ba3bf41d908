"""Griffe extension (mkdocs.yml loads it for mkdocstrings): the library's docstring dialect, read as Google style.

The docstrings are Google style with three habits Google's parser does not know: a usage example under
``Example:`` (Google's section is ``Examples:``; griffe reads ``Example:`` as an admonition of Markdown, in
which ``>>>`` is a quote), parameters that share a line (``rank, world_size: ...``, Napoleon's grouping) and
Sphinx roles such as :func:`~hallucinator.data.build_dataset`. The first becomes ``Examples:``, so the
doctests render as code; a shared line becomes one entry per parameter, each with the whole description;
a role becomes the code span it names (``~`` keeps the last part, as in Sphinx). The source is left as it
is: only the text griffe hands to mkdocstrings changes.
"""

from __future__ import annotations

import ast
import re
from typing import Any

from griffe import Extension, Object, ObjectNode

EXAMPLE_HEADING = re.compile(r"^(\s*)Example:[ \t]*$", re.MULTILINE)
ROLE = re.compile(r":(?:func|class|meth|mod|data|attr|obj|exc):`(~?)([^`]+)`")
ARGS_HEADING = re.compile(r"^(\s*)(?:Args|Arguments|Parameters|Params):\s*$")
GROUPED = re.compile(r"^(\s+)(\w+(?:,\s*\w+)+):(.*)$")


def _role_to_code(match: re.Match[str]) -> str:
    shortened, target = match.groups()
    return f"`{target.rsplit('.', 1)[-1] if shortened else target}`"


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _ungroup_parameters(text: str) -> str:
    """Each ``a, b: description`` entry of an ``Args:`` section as ``a: description`` and ``b: description``."""
    lines = text.split("\n")
    out: list[str] = []
    section: int | None = None  # the indent of the Args heading while inside its section
    i = 0
    while i < len(lines):
        line = lines[i]
        i += 1
        if line.strip() and section is not None and _indent(line) <= section:
            section = None
        heading = ARGS_HEADING.match(line)
        if heading:
            section = len(heading.group(1))
        grouped = GROUPED.match(line) if section is not None else None
        if not grouped:
            out.append(line)
            continue
        indent, names, first = grouped.groups()
        continuation = []
        while i < len(lines) and (not lines[i].strip() or _indent(lines[i]) > len(indent)):
            continuation.append(lines[i])
            i += 1
        while continuation and not continuation[-1].strip():  # blank lines stay after the last entry
            continuation.pop()
            i -= 1
        for name in re.split(r",\s*", names):
            out += [f"{indent}{name}:{first}", *continuation]
    return "\n".join(out)


def to_google(text: str) -> str:
    """The docstring ``text`` with ``Example:`` as ``Examples:``, one entry per parameter and roles as code."""
    return ROLE.sub(_role_to_code, _ungroup_parameters(EXAMPLE_HEADING.sub(r"\1Examples:", text)))


class LibraryDocstrings(Extension):
    """Rewrites every docstring with :func:`to_google` as griffe creates its object."""

    def on_instance(self, *, node: ast.AST | ObjectNode, obj: Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = to_google(obj.docstring.value)
