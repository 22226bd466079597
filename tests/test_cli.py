"""Bad input ends in one clear line naming the file, line or key; exit code 2; no traceback."""

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from s3ft.cli import app

runner = CliRunner()
CONFIG = Path(__file__).parents[1] / "src/s3ft/configs/demo.yaml"


def invoke(args):
    result = runner.invoke(app, args)
    return result.exit_code, result.output


@pytest.fixture
def cfg_file(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text(f"output_dir: {tmp_path / 'run'}\n")
    return p


def test_bad_set_key(cfg_file):
    code, out = invoke(["run", str(cfg_file), "--set", "train.lora_rnk=3"])
    assert code == 2 and "unknown key 'lora_rnk'" in out and "Traceback" not in out


def test_unknown_task(cfg_file):
    code, out = invoke(["data", str(cfg_file), "--set", "data.task=nope"])
    assert code == 2 and "unknown task 'nope'" in out


def test_unknown_strategy(cfg_file):
    code, out = invoke(["data", str(cfg_file), "--set", "methods=[sft, nope]"])
    assert code == 2 and "unknown strategy 'nope'" in out


def test_malformed_jsonl_names_file_and_line(cfg_file, tmp_path):
    data = tmp_path / "mine.jsonl"
    data.write_text(json.dumps({"question": "q", "answer": "#### 1"}) + "\n{broken\n")
    code, out = invoke(["data", str(cfg_file), "--set", "data.task=jsonl",
                        "--set", f"data.task_args={{train: {data}, test: {data}}}"])
    assert code == 2 and "mine.jsonl:2: invalid JSON" in out and "Traceback" not in out


def test_missing_data_dir_file(cfg_file, tmp_path):
    code, out = invoke(["data", str(cfg_file), "--set", "data.task=gsm8k", "--data-dir", str(tmp_path / "none")])
    assert code == 2 and "gsm8k/train.jsonl: not found" in out


def test_missing_config_file(tmp_path):
    code, out = invoke(["run", str(tmp_path / "nope.yaml")])
    assert code == 2 and "nope.yaml: config file not found" in out


def test_lists_registries():
    code, out = invoke(["tasks"])
    assert code == 0 and "arithmetic" in out and "s3ft" in out and "hf" in out


# --- bad input through the CLI: one line naming the key, file or line; exit 2; nothing made or lost ----------
def sets(overrides):
    return [x for o in overrides for x in ("--set", o)]


@pytest.mark.parametrize("yaml_text,line,message", [
    ("data:\n  train_limit: -1\n", 2, "data.train_limit: must be >= 1, got -1"),
    ("data:\n  train_limit: 0\n", 2, "data.train_limit: must be >= 1, got 0"),
    ("methods: [sft]\ntrain:\n  lora_r: 4\n  epochs: 0\n", 4, "train.epochs: must be > 0, got 0.0"),
    ("generation:\n  max_new_tokens: -5\n", 2, "generation.max_new_tokens: must be >= 1, got -5"),
    ("train:\n  learning_rate: -0.001\n", 2, "train.learning_rate: must be >= 0, got -0.001"),
    ("train:\n  batch_size: 0\n", 2, "train.batch_size: must be >= 1, got 0"),
    ("train:\n  lora_r: 0\n", 2, "train.lora_r: must be >= 1, got 0"),
    ("eval:\n  max_new_tokens: 0\n", 2, "eval.max_new_tokens: must be >= 1, got 0"),
])
def test_out_of_range_value_in_file_names_file_line_and_key(tmp_path, yaml_text, line, message):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"output_dir: {tmp_path / 'run'}\n" + yaml_text)
    code, out = invoke(["run", str(cfg), "--dry-run", "--no-probe"])
    assert code == 2 and f"{cfg}:{line + 1}: {message}" in " ".join(out.split()), out
    assert not (tmp_path / "run").exists()


def test_out_of_range_value_from_set_blames_set(cfg_file):
    code, out = invoke(["run", str(cfg_file), "--dry-run", "--no-probe", "--set", "train.epochs=-1"])
    assert code == 2 and "error: --set: train.epochs: must be > 0, got -1.0" in out


def test_unknown_strategy_from_set_blames_set_not_the_file(cfg_file):
    code, out = invoke(["data", str(cfg_file), "--set", "methods=[sft, foo]"])
    assert code == 2 and "error: --set: methods: unknown strategy 'foo'" in out and str(cfg_file) not in out


def test_unknown_judge_names_judge_name(cfg_file, tmp_path):
    cfg_file.write_text(cfg_file.read_text() + "judge:\n  name: nope\n")
    code, out = invoke(["data", str(cfg_file)])
    assert code == 2 and f"error: {cfg_file}:3: judge.name: unknown judge 'nope'" in " ".join(out.split())
    assert not (tmp_path / "run").exists()
