"""A method with a trainer of its own is one registration: its config section, its selection, its
trainer, what it sampled and its report lines. A toy method registered in this file alone runs
through `s3ft run` (its section from --set, its rows, its adapter, its cost), the forgetting meter
and `s3ft compare`, with nothing outside this file naming it."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

from s3ft import config as config_module
from s3ft.artifacts import read_jsonl
from s3ft.checks import load_checked_config
from s3ft.cli import app
from s3ft.errors import S3FTError
from s3ft.methods import METHODS, register_method
from s3ft.pipeline import run_pipeline
from s3ft.train import train as sft_train


@dataclass
class EchoConfig:
    """`echo:` section of the toy method."""

    repeat: int = 2
    """Times the gold answer is written into each target."""


def select_echo(task, train: list, cfg: EchoConfig) -> tuple[list[dict], dict]:
    rows = [{"id": e.id, "messages": task.messages(e), "target": " ".join([e.gold] * cfg.repeat),
             "source": "echo", "reason": f"gold x{cfg.repeat}"} for e in train]
    return rows, {"method": "echo", "rows": len(rows), "target_mix": {"echo": len(rows)},
                  "target_share": {"echo": 1.0}, "gold_reasons": {}}


def train_echo(model_path, model_cfg, train_cfg, cfg: EchoConfig, rows: list[dict], out_dir: Path) -> dict:
    """Its own trainer: SFT on its targets, counting the echoes it wrote."""
    stats = sft_train(model_path, model_cfg, train_cfg, rows, out_dir)
    return {**stats, "echoes": len(rows) * cfg.repeat}


def check_echo(cfg) -> list[tuple[str, str]]:
    return [("echo.repeat", f"must not exceed train.epochs x 10, got {cfg.echo.repeat}")] \
        if cfg.echo.repeat > cfg.train.epochs * 10 else []


@pytest.fixture
def echo():
    """The toy method, registered for one test and removed afterwards."""
    register_method("echo", config=EchoConfig, select=select_echo, train=train_echo, check=check_echo,
                    sampling_cost=lambda stats: {"echoes": stats["echoes"]} if "echoes" in stats else {},
                    cost_lines=lambda stages, name: [f"{name} wrote {stages[f'train:{name}']['echoes']} echoes."]
                    if f"train:{name}" in stages else [], ranges={"repeat": ">= 1"})
    yield
    METHODS.pop("echo")
    config_module.SECTIONS.pop("echo")
    config_module.RANGES.pop("echo.repeat")


def test_a_toy_method_runs_through_run_meter_and_compare(echo, run_overrides, tmp_path):
    overrides = [o for o in run_overrides if not o.startswith("forgetting.")] + [
        "methods=[echo]", "echo.repeat=3", "data.train_limit=8", "data.test_limit=4",
        "forgetting.text_limit=4", "forgetting.prompts_limit=2", "forgetting.max_new_tokens=8"]
    cfg = load_checked_config(None, overrides)
    assert cfg.echo.repeat == 3 and config_module.to_dict(cfg)["echo"] == {"repeat": 3}
    summary = run_pipeline(cfg)
    run = Path(cfg.output_dir)

    rows = read_jsonl(run / "train_echo.jsonl")
    gold = {e["id"]: e["gold"] for e in read_jsonl(run / "data/train.jsonl")}
    assert len(rows) == 8 and all(r["target"] == " ".join([gold[r["id"]]] * 3) for r in rows)
    meta = json.loads((run / "adapters/echo/train_meta.json").read_text())
    assert meta["done"] and meta["inputs"]["echo"] == {"repeat": 3} and meta["stats"]["echoes"] == 24
    assert (run / "adapters/echo/model/adapter_config.json").is_file()
    assert set(summary["in_domain"]) == {"base", "echo"}
    assert summary["cost"]["stages"]["train:echo"]["echoes"] == 24
    assert "echo wrote 24 echoes." in (run / "report.md").read_text()
    assert "echo" in summary["forgetting"]["models"]  # the meter measured its adapter

    out = tmp_path / "cmp"
    result = CliRunner().invoke(app, ["compare", str(run), "--no-general", "--audit-judge", "exact", "-o", str(out)])
    assert result.exit_code == 0, result.output
    data = json.loads((out / "compare.json").read_text())
    assert data["methods"] == ["base", "echo"]
    block = data["per_run"]["run"]["echo"]
    assert block["target_mix"] == {"echo": 8} and "drift/text_nll_delta" in block["measures"]
    assert set(block["nll"]["by_source"]) == {"echo"}  # its targets, scored under the base model


def test_a_method_section_is_checked_like_any_other(echo, tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("methods: [echo]\necho:\n  repeat: 0\n")
    with pytest.raises(S3FTError, match=r"c.yaml:3: echo.repeat: must be >= 1, got 0"):
        load_checked_config(p)
    p.write_text("methods: [echo]\ntrain:\n  epochs: 1\necho:\n  repeat: 11\n")
    with pytest.raises(S3FTError, match=r"c.yaml:5: echo.repeat: must not exceed train.epochs x 10, got 11"):
        load_checked_config(p)
    with pytest.raises(S3FTError, match=r"--set: echo: unknown key 'times'"):
        load_checked_config(None, ["echo.times=2"])


def test_an_unregistered_method_is_unknown_and_its_section_too():
    with pytest.raises(S3FTError, match="methods: unknown strategy 'echo'"):
        load_checked_config(None, ["methods=[echo]"])
    with pytest.raises(S3FTError, match="unknown key 'echo'"):
        load_checked_config(None, ["echo.repeat=2"])
