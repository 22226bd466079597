"""Bad input ends in one clear line naming the file, line or key; exit code 2; no traceback."""

import json

import pytest
from typer.testing import CliRunner

from s3ft.cli import app

runner = CliRunner()


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
