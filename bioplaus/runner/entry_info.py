"""What ``bioplaus tasks NAME`` (``rules NAME``, ``models NAME``) prints: one entry's description and options.

The description is the first paragraph of the factory's docstring; each option is listed
with its type in words (from the factory's type hints), its default and the line the
docstring's ``Args:`` section gives it.
"""

from __future__ import annotations

import inspect
import re
from typing import Any

from bioplaus.registry import Entry, Registry
from bioplaus.runner.config import RUNNER_TASK_OPTIONS
from bioplaus.runner.option_types import describe, option_hints

_SECTION = re.compile(r"^(Args|Arguments|Attributes|Returns|Raises|Example|Examples|Note|Notes):\s*$")
_ARG = re.compile(r"^(\w+)(?: \([^)]*\))?:\s*(.*)$")


def _docstring(entry: Entry[Any]) -> str:
    """The docstring of the factory (a class: its own, else its ``__init__``'s)."""
    return inspect.getdoc(entry.factory) or inspect.getdoc(entry.target) or ""


def _split_docstring(doc: str) -> tuple[str, dict[str, str]]:
    """The docstring's first paragraph, and ``Args:`` name → its text joined into one line."""
    lines = doc.splitlines()
    intro: list[str] = []
    args: dict[str, str] = {}
    section, current = None, None
    for line in lines:
        match = _SECTION.match(line.strip())
        if match and not line.startswith(" "):
            section, current = match.group(1), None
            continue
        if section is None:
            intro.append(line)
        elif section in ("Args", "Arguments") and line.strip():
            arg = _ARG.match(line.strip()) if not line.startswith("        ") else None
            if arg:
                current = arg.group(1)
                args[current] = arg.group(2)
            elif current is not None:
                args[current] += " " + line.strip()
    return "\n".join(intro).strip().split("\n\n")[0], args


def _default(parameter: inspect.Parameter) -> str:
    return "required" if parameter.default is inspect.Parameter.empty else f"default {parameter.default!r}"


def entry_text(registry: Registry[Any], name: str) -> str:
    """``name``'s description, then one line per option: ``name  type, default  what it does``.

    Raises:
        ConfigError: for an unknown name (the message lists the known ones).
    """
    entry = registry.entry(name)
    intro, args = _split_docstring(_docstring(entry))
    params = {k: p for k, p in entry.options().items() if registry.kind != "task" or k not in RUNNER_TASK_OPTIONS}
    hints = option_hints(entry)
    head = f"{registry.kind} '{name}': {intro or entry.description}"
    if registry.kind == "task":
        head += f"\n\n{' and '.join(RUNNER_TASK_OPTIONS)} come from the run's top-level keys of those names."
    if not params:
        return f"{head}\n\nno options"
    rows = [(opt, f"{describe(hints[opt])}, {_default(p)}", args.get(opt, "")) for opt, p in params.items()]
    w1 = max(len(r[0]) for r in rows)
    w2 = max(len(r[1]) for r in rows)
    lines = [f"  {opt:<{w1}}  {kind:<{w2}}  {text}".rstrip() for opt, kind, text in rows]
    key = f"rule_options.{name}" if registry.kind == "rule" else f"{registry.kind}_options"
    return f"{head}\n\noptions (set with --set {key}.OPTION=VALUE or a [{key}] table):\n" + "\n".join(lines)
