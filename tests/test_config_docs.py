"""Specification of the config you can see: `s3ft config schema` (docs/config.md, generated from the
config dataclasses) and `s3ft config show` (the resolved config, each value with where it came from)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml
from typer.testing import CliRunner

from s3ft.cli import app
from s3ft.config import RunConfig, load_config, to_dict
from s3ft.config_docs import REGENERATE, leaves, render_schema, sections, show

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


def test_docs_config_md_is_what_the_dataclasses_generate():
    committed = (ROOT / "docs" / "config.md").read_text(encoding="utf-8")
    assert committed == render_schema(), f"docs/config.md is stale: regenerate it with `{REGENERATE}`"


def test_cli_schema_prints_the_reference():
    result = runner.invoke(app, ["config", "schema"])
    assert result.exit_code == 0, result.output
    assert result.output == render_schema()


def test_schema_lists_every_key_with_type_default_and_docstring():
    text = render_schema()
    for key in leaves(to_dict(RunConfig())):  # a section whose default is None (judge.endpoint) is a heading
        assert f"| `{key}` |" in text or f"## `{key}`" in text, f"{key} missing from the reference"
    assert ("| `train.lora_r` | int | `8` | LoRA rank: the inner dimension of each adapter's two low-rank "
            "matrices. |") in text
    assert "| `data.train_limit` | int \\| None | `null` |" in text  # the union's bar escaped in the table
    assert "## `generation.endpoint`" in text and "## `opsd`" in text
    assert "## `judge.args` of `code`" in text and "| `judge.args.timeout_s` | float | `10.0` |" in text


def test_every_config_key_has_a_docstring():
    undocumented = [k.name for s in sections() for k in s.keys if not k.doc]
    assert not undocumented, f"config keys without a docstring (write one under the field): {undocumented}"


@dataclass
class _ReplayLike:
    """A section added later."""

    samples: int = 64
    """Replay samples drawn once."""
    weight: float = 0.0
    """KL weight; 0 turns it off."""


@dataclass
class _TrainLike:
    epochs: float = 2.0
    """Passes over the targets."""
    replay: _ReplayLike = field(default_factory=_ReplayLike)
    """Self-generated replay."""


def test_a_section_added_to_the_dataclasses_appears_with_no_edit():
    secs = {s.name: s for s in sections(_TrainLike, "train.")}
    assert [k.name for k in secs["train"].keys] == ["train.epochs"]
    replay = secs["train.replay"]
    assert replay.doc == "Self-generated replay."
    assert [(k.name, k.type, k.default, k.doc) for k in replay.keys] == [
        ("train.replay.samples", "int", 64, "Replay samples drawn once."),
        ("train.replay.weight", "float", 0.0, "KL weight; 0 turns it off.")]


def write_config(tmp_path: Path) -> Path:
    p = tmp_path / "c.yaml"
    p.write_text("methods: [sft, ssr]\ndata:\n  task: gsm8k\n  train_limit: 10\n"
                 "train:\n  lora_r: 4\n  epochs: 1\n")
    return p


def origins(text: str) -> dict[str, str]:
    """{dotted key: origin comment} of `config show` output."""
    out, stack = {}, []
    for line in text.splitlines():
        indent = (len(line) - len(line.lstrip())) // 2
        key = line.strip().split(":", 1)[0]
        stack[indent:] = [key]
        if "#" in line:
            out[".".join(stack)] = line.rsplit("# ", 1)[1]
    return out


def test_show_says_where_each_value_came_from(tmp_path, monkeypatch):
    monkeypatch.setenv("S3FT_DATA_DIR", str(tmp_path / "mirror"))
    p = write_config(tmp_path)
    got = origins(show(p, ["train.lora_r=16", "generation.max_new_tokens=64"]))
    assert got["methods"] == f"{p}:1"
    assert got["data.train_limit"] == f"{p}:4"
    assert got["train.epochs"] == f"{p}:7"
    assert got["train.lora_r"] == "--set"  # the override beats the file's line 6
    assert got["generation.max_new_tokens"] == "--set"
    assert got["data.data_dir"] == "env S3FT_DATA_DIR"
    assert got["train.lora_alpha"] == "default" and got["forgetting.enabled"] == "default"


def test_show_is_yaml_that_loads_back_to_the_same_config(tmp_path):
    p = write_config(tmp_path)
    text = show(p, ["data.task_args={canonical_answer: true}"])
    resolved = load_config(p, ["data.task_args={canonical_answer: true}"])
    assert yaml.safe_load(text) == to_dict(resolved)
    again = tmp_path / "again.yaml"
    again.write_text(text)
    assert load_config(again) == resolved


def test_cli_show_names_flags_and_fails_in_one_line(tmp_path):
    p = write_config(tmp_path)
    result = runner.invoke(app, ["config", "show", str(p), "--data-dir", str(tmp_path), "-o", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    got = origins(result.output)
    assert got["data.data_dir"] == "--data-dir" and got["output_dir"] == "--output"
    bad = runner.invoke(app, ["config", "show", str(p), "--set", "train.lora_rank=4"])
    assert bad.exit_code == 2
    assert "unknown key 'lora_rank'" in bad.output and "--set" in bad.output


SHIPPED = sorted([*(ROOT / "configs").glob("*.yaml"), *(ROOT / "src" / "s3ft" / "configs").glob("*.yaml")])


def test_every_shipped_config_shows_and_loads_back_the_same(tmp_path):
    assert SHIPPED
    for path in SHIPPED:
        text = show(path)
        again = tmp_path / path.name
        again.write_text(text)
        assert load_config(again) == load_config(path), f"{path}: config show does not load back the same"
        assert f"# {path}:" in text  # at least one value is attributed to its file and line
