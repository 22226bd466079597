"""The config you can see: every key with its docstring, type and default (`s3ft config schema`,
docs/config.md), and a resolved config with where each value came from (`s3ft config show`).

Both read the config dataclasses themselves (a section is a field whose type is a dataclass), so a
section or key added there appears here with no edit. Field docstrings are the string literal
under each field, read from the class's source as TRL-style configs write them.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .checks import load_checked_config
from .config import SECTIONS, RunConfig, parse_overrides, to_dict
from .config import _key_lines as key_lines, _leaves as leaves  # shared with load_config's error origins
from .judges import judge_class, judge_names
from .tasks import field_docs, task_class, task_names

REGENERATE = "s3ft config schema > docs/config.md"
"""The command that rewrites the generated reference."""


@dataclass(frozen=True)
class Key:
    """One config key of the reference."""

    name: str
    """Dotted key, e.g. `train.lora_r`."""
    type: str
    """Its type as the config dataclass declares it, e.g. `int | None`."""
    default: Any
    """Its default value."""
    doc: str
    """The field's docstring, on one line ("" when it has none)."""


@dataclass(frozen=True)
class Section:
    """A group of keys: a config section (a dataclass field of a dataclass), or a judge's `args`."""

    name: str
    """Dotted name, e.g. `generation.endpoint`; "" for the top level."""
    doc: str
    """The section's docstring (of its field, else of its class), on one line."""
    keys: list[Key]
    title: str = ""
    """The heading, where it is not the name (a judge's args: "`judge.args` of `code`")."""


# --- reading the dataclasses ---------------------------------------------------
def one_line(doc: str | None) -> str:
    """A docstring as one line of text (paragraphs joined), for a table cell or a comment."""
    return " ".join(inspect.cleandoc(doc or "").split())


def class_doc(cls: type) -> str:
    """A class's own docstring on one line; "" for the signature `dataclass` writes where there is none."""
    doc = cls.__dict__.get("__doc__") or ""
    return "" if doc.startswith(f"{cls.__name__}(") else one_line(doc)


def section_type(tp: Any) -> type | None:
    """The dataclass a field's type names (also inside `X | None`), or None for a plain key."""
    if dataclasses.is_dataclass(tp):
        return tp
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(tp) if dataclasses.is_dataclass(a)]
        return inner[0] if inner else None
    return None


def type_name(tp: Any) -> str:
    """`int`, `str | None`, `list`, `any`: the type as a reader of a YAML file needs it."""
    if tp is Any:
        return "any"
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return " | ".join("None" if a is type(None) else type_name(a) for a in typing.get_args(tp))
    if typing.get_origin(tp) is typing.Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    return getattr(tp, "__name__", str(tp))


def default_of(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def sections(cls: type = RunConfig, prefix: str = "", doc: str = "") -> list[Section]:
    """Every section of a config dataclass, depth first, each with its plain keys."""
    hints, docs = typing.get_type_hints(cls), field_docs(cls)
    keys, nested = [], []
    for f in dataclasses.fields(cls):
        if cls is RunConfig and f.name == "sections":  # the registered sections, each listed below as its own
            continue
        name = f"{prefix}{f.name}"
        sub = section_type(hints[f.name])
        if sub is not None:
            nested += sections(sub, name + ".", docs.get(f.name) or class_doc(sub))
        else:
            keys.append(Key(name, type_name(hints[f.name]), default_of(f), docs.get(f.name, "")))
    if cls is RunConfig:  # sections that methods register (`config.register_section`), after the core ones
        for name, sub in SECTIONS.items():
            nested += sections(sub, f"{prefix}{name}.", class_doc(sub))
    return [Section(prefix.rstrip("."), doc, keys), *nested]


def _args_sections(names: list[str], args_type_of, key: str, choose: str) -> list[Section]:
    """`key` (`data.task_args`, `judge.args`) of each registered name whose args dataclass has fields;
    `choose`: the config line that picks the name (`data: {task: ...}`)."""
    out = []
    for name in names:
        args_type = args_type_of(name)
        if dataclasses.fields(args_type):
            top, *nested = sections(args_type, f"{key}.", f"`{choose.format(name=name)}`: {class_doc(args_type)}")
            out += [dataclasses.replace(top, title=f"`{key}` of `{name}`"), *nested]
    return out


def task_args_sections() -> list[Section]:
    """`data.task_args` of each registered task that takes options, from its args dataclass."""
    return _args_sections(task_names(), lambda n: task_class(n).args_type, "data.task_args",
                          "data: {{task: {name}}}")


def judge_args_sections() -> list[Section]:
    """`judge.args` of each registered judge that takes options, from its args dataclass."""
    return _args_sections(judge_names(), lambda n: judge_class(n).args_type, "judge.args",
                          "judge: {{name: {name}}}")


# --- the reference (docs/config.md) -------------------------------------------
def yaml_value(value: Any) -> str:
    """A value as it is written in a YAML config, on one line."""
    text = yaml.safe_dump(value, default_flow_style=True, width=float("inf"), allow_unicode=True).strip()
    return text[:-3].strip() if text.endswith("\n...") or text.endswith("...") else text


def cell(text: str) -> str:
    """Text for a Markdown table cell."""
    return text.replace("|", "\\|")


def render_schema() -> str:
    """docs/config.md: every key of every section with its type, default and docstring."""
    lines = ["# Config reference", "",
             f"Generated from the config dataclasses by `{REGENERATE}`; do not edit by hand "
             "(`tests/test_config_docs.py` fails when this file differs from what the code generates).",
             "`s3ft config show CONFIG [--set key=value ...]` prints a config resolved, each value with where it "
             "came from (file and line, `--set`, the environment, or the default).", "",
             "A config is YAML whose sections are the headings below; a key not listed here, or a value of the "
             "wrong type, is an error naming the file, line and key.", ""]
    for sec in [*sections(), *task_args_sections(), *judge_args_sections()]:
        if not sec.keys:
            continue
        lines += [f"## {sec.title or (f'`{sec.name}`' if sec.name else 'Top level')}", ""]
        if sec.doc:
            lines += [sec.doc, ""]
        lines += ["| key | type | default | what |", "|---|---|---|---|"]
        for k in sec.keys:
            lines.append(f"| `{k.name}` | {cell(k.type)} | `{cell(yaml_value(k.default))}` | {cell(k.doc)} |")
        lines.append("")
    return "\n".join(lines)


# --- a resolved config with its origins ----------------------------------------
@dataclass
class Provenance:
    """Where each key's value came from: a flag, `--set`, `file:line`, the environment or the default."""

    path: Path | None
    lines: dict[str, int]
    set_keys: dict[str, str]
    """Dotted key set on the command line -> how (`--set`, or the flag that set it, e.g. `--data-dir`)."""

    def __call__(self, key: str) -> str:
        if key in self.set_keys:
            return self.set_keys[key]
        if key in self.lines:
            return f"{self.path}:{self.lines[key]}"
        if key == "data.data_dir" and os.environ.get("S3FT_DATA_DIR"):
            return "env S3FT_DATA_DIR"
        return "default"


def resolve(path: str | Path | None, overrides: list[str] | None = None,
            flags: dict[str, str] | None = None) -> tuple[RunConfig, Provenance]:
    """The config as a run would load it, and where each value came from. `flags`: {override text: the flag
    that made it}, e.g. {"data.data_dir=/data": "--data-dir"}."""
    cfg = load_checked_config(path, overrides)
    set_keys: dict[str, str] = {}
    for item in overrides or []:
        for key in leaves(parse_overrides([item])):
            set_keys[key] = (flags or {}).get(item, "--set")
    lines = key_lines(Path(path).read_text(encoding="utf-8")) if path is not None else {}
    return cfg, Provenance(Path(path) if path is not None else None, lines, set_keys)


def render_resolved(cfg: RunConfig, origin: Provenance) -> str:
    """The config as YAML, every value followed by a comment saying where it came from."""
    rows: list[tuple[str, str | None]] = []  # (YAML text, origin or None for a section line)

    def walk(tree: dict, prefix: str, indent: str) -> None:
        for k, v in tree.items():
            key = f"{prefix}{k}"
            if isinstance(v, dict) and v:
                rows.append((f"{indent}{k}:", None))
                walk(v, key + ".", indent + "  ")
            else:
                rows.append((f"{indent}{k}: {yaml_value(v)}", origin(key)))

    walk(to_dict(cfg), "", "")
    width = max(len(text) for text, src in rows if src is not None) + 2
    return "\n".join(text if src is None else f"{text.ljust(width)}# {src}" for text, src in rows) + "\n"


def show(path: str | Path | None, overrides: list[str] | None = None, flags: dict[str, str] | None = None) -> str:
    """`s3ft config show`: the resolved config as YAML, each value with where it came from."""
    return render_resolved(*resolve(path, overrides, flags))
