"""`s3ft run --dry-run`: exact prompt-token counts, step arithmetic, a timing probe, no files written."""

import json
import math
from pathlib import Path

import pytest
from transformers import AutoTokenizer
from typer.testing import CliRunner

from s3ft.config import load_config
from s3ft.cost import estimate, format_estimate
from s3ft.tasks import get_task


def _prompt_tokens(tok, messages_list, prefill=""):
    texts = [tok.apply_chat_template(m, add_generation_prompt=True, tokenize=False) + prefill for m in messages_list]
    return sum(len(tok(t, add_special_tokens=False)["input_ids"]) for t in texts)


def test_prompt_tokens_are_exact(run_overrides, tiny_model_dir):
    cfg = load_config(None, run_overrides + ["methods=[sft, s3ft]"])
    est = estimate(cfg, probe=False)
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    task = get_task(cfg.data)
    train, test = task.load("train"), task.load("test")
    st = est["stages"]
    assert st["generate:answers"]["rows"] == 12
    assert st["generate:answers"]["prompt_tokens"] == _prompt_tokens(tok, [task.messages(e) for e in train])
    assert st["generate:paraphrases"]["prompt_tokens"] == _prompt_tokens(
        tok, [task.paraphrase_messages(e) for e in train], task.paraphrase_prefill)
    assert st["evaluate"]["rows"] == 8 * 3 and st["evaluate"]["models"] == ["base", "sft", "s3ft"]
    assert st["evaluate"]["prompt_tokens"] == 3 * _prompt_tokens(tok, [task.messages(e) for e in test])
    assert st["generate:answers"]["output_tokens_max"] == 12 * 12
    assert st["generate:answers"]["output_tokens_expected"] <= 12 * 12
    assert st["judge"]["rows"] == 12 + 12 + 24
    assert est["probe"] is None and est["total_est_s"] is None and st["train:sft"]["est_s"] is None
    json.dumps(est)
    assert not Path(cfg.output_dir).exists()  # nothing written into the run directory


@pytest.mark.parametrize("methods,rows,upper", [("[sft]", 0, False), ("[sft, s3ft]", 12, True),
                                                ("[sdft]", 12, False)])
def test_paraphrase_rows(run_overrides, methods, rows, upper):
    est = estimate(load_config(None, run_overrides + [f"methods={methods}"]), probe=False)
    paras = est["stages"]["generate:paraphrases"]
    assert paras["rows"] == rows and paras["upper_bound"] is upper
    assert paras["prompt_tokens"] > 0 if rows else paras["prompt_tokens"] == 0


def test_train_steps_and_tokens_match_the_trainer(run_overrides, tiny_model_dir, tmp_path):
    cfg = load_config(None, run_overrides + ["methods=[sft]", "train.batch_size=4", "train.grad_accum=2",
                                             "train.epochs=1", "train.max_length=120", "train.save_steps=100"])
    est = estimate(cfg, probe=False)
    t = est["stages"]["train:sft"]
    assert t["steps"] == math.ceil(12 / (4 * 2)) == 2
    # the trainer, on sft's targets (gold), counts the same tokens (cut at max_length) and steps
    from s3ft.train import train
    task = get_task(cfg.data)
    rows = [{"messages": task.messages(e), "target": e.gold} for e in task.load("train")]
    stats = train(str(tiny_model_dir), cfg.model, cfg.train, rows, tmp_path / "adapter")
    assert stats["tokens"] == t["tokens"] and stats["steps"] == t["steps"]
    assert 112 * 12 < t["tokens"] < 120 * 12  # rows run 112-136 tokens: some are cut


def test_probe_measures_time(run_overrides):
    est = estimate(load_config(None, run_overrides + ["methods=[sft, s3ft]"]), probe=True)
    p = est["probe"]
    assert p["prefill_tok_s"] > 0 and p["decode_tok_s"] > 0 and [b for b, _ in p["decode_step_s"]] == [1, 4]
    for name in ("generate:answers", "generate:paraphrases", "train:sft", "train:s3ft", "evaluate"):
        s = est["stages"][name]
        assert s["est_s"] > 0, name
        assert s.get("est_s_max", s["est_s"]) >= s["est_s"]
    assert est["total_est_s"] > 0 and est["untimed"] == []
    assert "measured on cpu" in format_estimate(est)
    json.dumps(est)


def test_cli_dry_run_prints_and_writes_nothing(run_overrides, tmp_path):
    from s3ft.cli import app
    config = tmp_path / "c.yaml"
    config.write_text("methods: [sft, s3ft]\n")
    args = ["run", str(config), "--dry-run", "--no-probe"]
    for o in run_overrides:
        args += ["--set", o]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    for word in ("generate:answers", "generate:paraphrases (<=)", "train:s3ft", "evaluate", "total",
                 "time not measured"):
        assert word in result.output, word
    run_dir = tmp_path / "run"
    assert not run_dir.exists() or not any(run_dir.iterdir())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.yaml"]

    bad = CliRunner().invoke(app, args + ["--set", "data.task=nope"])
    assert bad.exit_code == 2 and "unknown task 'nope'" in bad.output


def test_estimate_for_nonzero_work_is_never_zero_however_fast_the_machine(run_overrides, monkeypatch):
    import s3ft.cost
    # what the probe reports on a machine far faster than any real one: every stage takes microseconds
    fast = {"device": "cpu", "dtype": "float32", "batch": 4, "load_s": 0.0, "prefill_tok_s": 1e9,
            "decode_step_s": [[1, 1e-9], [4, 1e-9]], "decode_tok_s": 4e9, "probe_s": 0.0}
    monkeypatch.setattr(s3ft.cost, "_probe", lambda *args: fast)
    est = estimate(load_config(None, run_overrides + ["methods=[sft, s3ft]"]), probe=True)
    for name in ("generate:answers", "generate:paraphrases", "train:sft", "train:s3ft", "evaluate"):
        assert est["stages"][name]["est_s"] > 0, name
    assert est["total_est_s"] > 0
