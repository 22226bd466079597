"""Bad input ends in one clear line naming the file, line or key; exit code 2; no traceback."""

import json
import os
import subprocess
import sys
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
    ("train:\n  memory_budget_gib: 0\n", 2, "train.memory_budget_gib: must be > 0, got 0"),
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


@pytest.mark.parametrize("model,message", [
    ("/no/such/model", "model.name_or_path: /no/such/model: no such file or directory"),
    ("nobody/no-such-model", "model.name_or_path: 'nobody/no-such-model' is no local path and not in the hub cache, "
                             "and the hub is offline (HF_HUB_OFFLINE=1)"),
])
def test_missing_model_or_uncached_hub_id_offline_names_the_key(run_overrides, tmp_path, monkeypatch, model, message):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out_dir = tmp_path / "out"
    args = ["generate", str(CONFIG), "-o", str(out_dir)] + sets(run_overrides + [f"model.name_or_path={model}"])
    code, out = invoke(args)
    assert code == 2 and message in " ".join(out.split()) and "Traceback" not in out
    assert not out_dir.exists()


def test_output_dir_that_is_a_file_or_under_one_names_it(run_overrides, tmp_path):
    f = tmp_path / "taken"
    f.write_text("not a directory")
    for target in (f, f / "run"):
        code, out = invoke(["data", str(CONFIG), "-o", str(target)] + sets(run_overrides))
        assert code == 2 and f"output_dir: {f} is a file" in " ".join(out.split()), out
    assert f.read_text() == "not a directory"


@pytest.mark.parametrize("target", ["/proc/s3ft-run", "/sys/s3ft-run"])
def test_unwritable_output_dir_names_it(run_overrides, target):
    # Tests run as root, whom chmod does not stop: /proc and /sys refuse new directories even to root.
    code, out = invoke(["data", str(CONFIG), "-o", target] + sets(run_overrides))
    assert code == 2 and f"output_dir: cannot write to {target}:" in " ".join(out.split()), out


def test_failed_validation_leaves_no_run_dir_and_loses_nothing(cfg_file, tmp_path, run_overrides):
    run_dir = tmp_path / "run"
    code, out = invoke(["data", str(cfg_file), "--set", "data.task=gsm8k", "--data-dir", str(tmp_path / "none")])
    assert code == 2 and "gsm8k/train.jsonl: not found" in out
    assert not run_dir.exists()
    # a finished stage survives a later invocation with bad input
    assert invoke(["data", str(cfg_file)] + sets(run_overrides))[0] == 0
    before = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    code, out = invoke(["generate", str(cfg_file)] + sets(run_overrides + ["generation.max_new_tokens=0"]))
    assert code == 2 and "generation.max_new_tokens: must be >= 1" in out
    assert {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()} == before


# --- one process per run directory ---------------------------------------------------------------------------
HOLD_LOCK = ("import sys, time\nfrom s3ft.artifacts import RunLock\nRunLock(sys.argv[1])\n"
             "print('locked', flush=True)\ntime.sleep(600)\n")


def test_second_run_on_same_dir_fails_naming_holder_pid(run_overrides, tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(run_dir)], env=env, stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline() == "locked\n"
        code, out = invoke(["data", str(CONFIG), "-o", str(run_dir)] + sets(run_overrides))
        assert code == 2, out
        assert f"{run_dir}: in use by another s3ft process (pid {holder.pid})" in " ".join(out.split())
        assert not (run_dir / "data").exists()  # stopped before writing anything
    finally:
        holder.kill()  # SIGKILL: no chance to clean up
        holder.wait()
    # the dead holder's lock file is still there, with its PID, but its lock went with it
    assert (run_dir / ".s3ft.lock").read_text().strip() == str(holder.pid)
    code, out = invoke(["data", str(CONFIG), "-o", str(run_dir)] + sets(run_overrides))
    assert code == 0, out
    assert (run_dir / "data" / "train.jsonl").exists()


def test_duplicate_id_in_jsonl_task_names_file_line_and_id(cfg_file, tmp_path):
    data = tmp_path / "mine.jsonl"
    data.write_text("".join(json.dumps({"id": i, "question": f"q{n}", "answer": "#### 1"}) + "\n"
                            for n, i in enumerate(["a", "b", "a"])))
    code, out = invoke(["data", str(cfg_file), "--set", "data.task=jsonl",
                        "--set", f"data.task_args={{train: {data}, test: {data}}}"])
    assert code == 2 and "mine.jsonl:3: duplicate id 'a' (first on line 1)" in out
    assert not (tmp_path / "run").exists()
