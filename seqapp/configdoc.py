"""Settings documented once: ``seqapp config show`` and the settings reference, docs/settings.md.

Every config field carries its help text and its allowed values in its metadata (see
:func:`seqapp.config.setting`). This module writes that metadata out twice: as the
comments of a resolved template (``seqapp config show sine > my.yaml`` gives a file to
edit and train with) and as the tables of ``docs/settings.md``, which a test
(``tests/test_config.py``) compares with the code so the two cannot drift. Regenerate the
tables, from the repository root, with::

    python -m seqapp.configdoc            # or: python -m seqapp.configdoc docs/settings.md
"""

from __future__ import annotations

import dataclasses
import sys
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from seqapp.config import SECTIONS, Config, describe_range

SETTINGS_DOC = Path("docs") / "settings.md"  # the settings reference, relative to the repository root
BEGIN, END = "<!-- settings:begin (python -m seqapp.configdoc docs/settings.md) -->", "<!-- settings:end -->"


def type_name(hint: Any) -> str:
    """A type hint in words: ``int``, ``list[float]``, ``str or null``."""
    args = typing.get_args(hint)
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        inner = [arg for arg in args if arg is not type(None)]
        return " or ".join(type_name(arg) for arg in inner) + (" or null" if type(None) in args else "")
    if typing.get_origin(hint) is list:
        return f"list[{type_name(args[0])}]"
    return getattr(hint, "__name__", str(hint))


def allowed(hint: Any, meta: dict) -> str:
    """The values a field accepts: its type, then its choices or range."""
    words = type_name(hint)
    if "choices" in meta:
        return f"{words}: " + " | ".join(str(choice) for choice in meta["choices"])
    if "min" in meta:
        return f"{words}, " + describe_range(meta).removeprefix("it must be ")
    return words


def fields_of(section: Any) -> list[tuple[dataclasses.Field, Any]]:
    """The fields of a config section (instance or class) with their resolved type hints."""
    cls = section if isinstance(section, type) else type(section)
    hints = typing.get_type_hints(cls)
    return [(field, hints[field.name]) for field in dataclasses.fields(cls)]


def yaml_value(value: Any) -> str:
    """One value as inline YAML (lists in flow style), as it would follow ``key:``."""
    dumped = yaml.safe_dump(value, default_flow_style=True, allow_unicode=True, width=10**9)
    return dumped.removesuffix("\n").removesuffix("\n...").strip()


def commented_yaml(cfg: Config) -> str:
    """The resolved config as a YAML template, each key after a comment with its help and allowed values."""
    lines = [f"# a seqapp template for the {cfg.task} task; every key may be left out (its default is used),",
             "# changed here, or overridden on the command line with --set section.key=value",
             f"task: {cfg.task}",
             f"description: {yaml_value(cfg.description)}"]
    for name in SECTIONS:
        section = getattr(cfg, name)
        lines.append(f"{name}:")
        for field, hint in fields_of(section):
            lines.append(f"  # {field.metadata.get('help', '')} [{allowed(hint, field.metadata)}]")
            value = yaml_value(getattr(section, field.name)).replace("\n", "\n  ")
            lines.append(f"  {field.name}: {value}")
    return "\n".join(lines) + "\n"


def cell(text: str) -> str:
    """Text made safe for a Markdown table cell."""
    return text.replace("|", "\\|").replace("\n", " ")


def markdown_table(cfg: Config) -> list[str]:
    """One task's settings: the value ``seqapp train TASK`` uses, the default when left out, allowed, help."""
    lines = [f"### `{cfg.task}`", "",
             f"| key | `seqapp train {cfg.task}` | left out | allowed | meaning |",
             "| --- | --- | --- | --- | --- |"]
    for name in SECTIONS:
        section = getattr(cfg, name)
        for field, hint in fields_of(section):
            value = getattr(section, field.name)
            default = field.default_factory() if field.default_factory is not dataclasses.MISSING else field.default
            left_out = "" if default == value else f"`{yaml_value(default)}`"
            lines.append(f"| `{name}.{field.name}` | `{cell(yaml_value(value))}` | {cell(left_out)} | "
                         f"{cell(allowed(hint, field.metadata))} | {cell(field.metadata.get('help', ''))} |")
    return lines + [""]


def settings_markdown() -> str:
    """The settings reference's generated body: one table per task, from its bundled template."""
    from seqapp.tasks import REGISTRY, load_config

    lines = [BEGIN, ""]
    for name in REGISTRY:
        lines += markdown_table(load_config(name))
    return "\n".join(lines + [END])


def readme_section(readme: str) -> str:
    """The generated part of a Markdown text such as docs/settings.md (between the markers), or ''."""
    start, end = readme.find(BEGIN), readme.find(END)
    return readme[start:end + len(END)] if start >= 0 and end > start else ""


def update_readme(path: Path) -> bool:
    """Rewrite the generated settings tables of the Markdown file at ``path``; True if it changed."""
    text = path.read_text(encoding="utf-8")
    old = readme_section(text)
    if not old:
        raise SystemExit(f"{path} has no '{BEGIN}' ... '{END}' section to fill")
    new_text = text.replace(old, settings_markdown())
    path.write_text(new_text, encoding="utf-8")
    return new_text != text


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else SETTINGS_DOC
    print(f"{target}: {'updated' if update_readme(target) else 'already up to date'}")
