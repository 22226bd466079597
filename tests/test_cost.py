"""`s3ft run --dry-run`: exact prompt-token counts, step arithmetic, a probe of real generations and training
steps, the backend's schedule, the forgetting meter's requests, no files written into the run directory; the
estimate beside a run's cost."""

import json
import math
from pathlib import Path

import pytest
from transformers import AutoTokenizer
from typer.testing import CliRunner

from s3ft.config import load_config
from s3ft.cost import _train_stage, against_cost, estimate, estimate_path, format_estimate, simulate_generation
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
    plan = stats["memory_plan"]  # the dry run predicts the micro-batches training chooses
    assert (plan["micro_batch"], plan["grad_accum"]) == (t["micro_batch"], t["grad_accum"])
    assert plan["predicted_gib"]["peak"] == t["peak_rss_gib"] > 0
    assert 112 * 12 < t["tokens"] < 120 * 12  # rows run 112-136 tokens: some are cut


def test_probe_measures_time_and_real_output_lengths(run_overrides, tmp_path, monkeypatch):
    monkeypatch.setenv("S3FT_CACHE", str(tmp_path / "cache"))
    cfg = load_config(None, run_overrides + ["methods=[sft, s3ft]"])
    est = estimate(cfg, probe=True)
    p = est["probe"]
    assert p["prefill_tok_s"] > 0 and p["decode_tok_s"] > 0 and [b for b, _ in p["decode_step_s"]] == [1, 4]
    g = p["generation"]
    assert g["rows"] == 8 and len(g["answer_tokens"]) == len(g["paraphrase_tokens"]) == 8
    assert all(0 < n <= 12 for n in g["answer_tokens"]) and 0 <= g["answer_accepted"] <= 1 and g["scale"] > 0
    # expected output tokens follow the probe's generations, not the gold answers
    answers = est["stages"]["generate:answers"]
    assert answers["output_tokens_expected"] == sum(g["answer_tokens"][i % 8] for i in range(12))
    assert p["train"]["token_s"] > 0 and p["train"]["step_s"] >= 0 and p["train"]["steps"] == 3
    for name in ("generate:answers", "generate:paraphrases", "train:sft", "train:s3ft", "evaluate"):
        s = est["stages"][name]
        assert s["est_s"] > 0, name
        assert s.get("est_s_max", s["est_s"]) >= s["est_s"]
    assert est["total_est_s"] > 0 and est["untimed"] == []
    assert "measured on cpu" in format_estimate(est)
    json.dumps(est)
    assert json.loads(estimate_path(cfg).read_text())["total_est_s"] == est["total_est_s"]  # kept for the run
    assert not Path(cfg.output_dir).exists()


def test_simulated_schedule_follows_the_backend():
    step = lambda width: 1.0 + width  # noqa: E731 - seconds per decode step at a width
    prompts, outputs = [10, 10, 10, 10], [3, 5, 9, 2]  # 2, 4, 8, 1 decode steps after the prefilled token
    prefill = 4 * 10 / 40.0  # one batch of 4 rows, 10 tokens each, at 40 tok/s
    # without compaction the batch decodes until its longest row: 8 steps at width 4
    assert simulate_generation(prompts, outputs, 4, False, step, 40.0) == pytest.approx(prefill + 8 * 5)
    # with it, each call ends once a quarter has finished; the finished rows leave
    # steps: 1 at width 4 (row of 1 done), 1 more at width 3 (2 done), 2 at width 2, 4 at width 1
    assert simulate_generation(prompts, outputs, 4, True, step, 40.0) == pytest.approx(
        prefill + 1 * 5 + 1 * 4 + 2 * 3 + 4 * 2)
    # batches of 2 without compaction: longest prompts first, each batch runs to its longest row
    two = simulate_generation([30, 20, 10, 5], [9, 2, 5, 3], 2, False, step, 10.0)
    assert two == pytest.approx(2 * 30 / 10 + 8 * 3 + 2 * 10 / 10 + 4 * 3)


def test_training_time_counts_tokens_and_fixed_step_costs(run_overrides):
    cfg = load_config(None, run_overrides + ["methods=[sft]", "train.batch_size=2", "train.memory_budget_gib=100"])
    probe = {"train": {"token_s": 0.01, "step_s": 0.5}}
    stage = _train_stage(cfg, cfg.model.name_or_path, [100, 60, 80, 80], 2, probe, 1)
    # micro-batches of 2 rows padded to their longest: 2 x 100 + 2 x 80 tokens, and 2 optimizer steps
    assert stage["est_s"] == pytest.approx(360 * 0.01 + 2 * 0.5)
    fast = _train_stage(cfg, cfg.model.name_or_path, [10], 1, {"train": {"token_s": 1e-6, "step_s": 0.0}}, 1)
    assert fast["est_s"] > 0  # small but real work is not shown as free


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


FAST_PROBE = {"device": "cpu", "dtype": "float32", "batch": 4, "load_s": 0.0, "prefill_tok_s": 1e9,
              "decode_step_s": [[1, 1e-9], [4, 1e-9]], "decode_tok_s": 4e9, "probe_s": 0.0,
              "generation": {"rows": 2, "answer_tokens": [5, 9], "answer_accepted": 0.5, "answer_s": 0.0,
                             "scale": 1.0, "paraphrase_tokens": [7, 3], "paraphrase_accepted": 0.5,
                             "paraphrase_s": 0.0, "prefill_tokens": 2},
              "train": {"micro_batch": 4, "steps": 3, "token_s": 1e-9, "step_s": 0.0, "tokens_per_s": 1e9}}
"""What the probe reports on a machine far faster than any real one: every stage takes microseconds."""


def test_estimate_for_nonzero_work_is_never_zero_however_fast_the_machine(run_overrides, monkeypatch, tmp_path):
    import s3ft.cost
    monkeypatch.setenv("S3FT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(s3ft.cost, "_probe", lambda *args: FAST_PROBE)
    est = estimate(load_config(None, run_overrides + ["methods=[sft, s3ft]"]), probe=True)
    for name in ("generate:answers", "generate:paraphrases", "train:sft", "train:s3ft", "evaluate"):
        assert est["stages"][name]["est_s"] > 0, name
    assert est["total_est_s"] > 0


def test_forgetting_meter_is_priced_from_its_requests(run_overrides, monkeypatch, tmp_path):
    import s3ft.cost
    monkeypatch.setenv("S3FT_CACHE", str(tmp_path / "cache"))
    meter = ["forgetting.enabled=true", "forgetting.text_limit=5", "forgetting.prompts_limit=3",
             "forgetting.max_new_tokens=20", "forgetting.controls=[untrained, planted]"]
    cfg = load_config(None, run_overrides + ["methods=[sft]"] + meter)
    st = estimate(cfg, probe=False)["stages"]
    responses = st["generate:probe_responses"]
    assert responses["rows"] == 3 and responses["output_tokens_expected"] == responses["output_tokens_max"] == 60
    assert st["train:control-planted"]["tokens"] == st["train:sft"]["tokens"] > 0  # gold targets, like sft
    # 5 passages and 3 (prompt, response) pairs, scored by the base model and by sft and both controls
    forgetting = st["forgetting"]
    assert forgetting["rows"] == 4 and "5 passages + 3 responses, scored 4 times" in forgetting["note"]
    assert forgetting["scored_tokens"] > 4 * (3 * 20) and forgetting["peak_rss_gib"] > 0
    assert "forgetting" not in estimate(load_config(None, run_overrides + ["methods=[sft]"]), probe=False)["stages"]

    monkeypatch.setattr(s3ft.cost, "_probe", lambda *args: {**FAST_PROBE, "prefill_tok_s": 1000.0})
    est = estimate(load_config(None, run_overrides + ["methods=[sft]", "forgetting.benchmarks=[arc_easy]"] + meter),
                   probe=True)
    assert est["stages"]["forgetting"]["est_s"] == pytest.approx(
        round(est["stages"]["forgetting"]["scored_tokens"] / 1000.0, 1))
    assert est["stages"]["generate:probe_responses"]["est_s"] > 0 and est["stages"]["train:control-planted"]["est_s"]
    assert any(u.startswith("forgetting: lm-eval probe (arc_easy)") for u in est["untimed"])
    assert "forgetting: 5 passages + 3 responses" in format_estimate(est)


def test_estimate_vs_actual_pairs_each_stage_with_its_estimate():
    est = {"source": "dry-run", "total_est_s": 30.0, "stages": {
        "generate:answers": {"est_s": 10.0, "output_tokens_expected": 100, "peak_rss_gib": 2.0},
        "train:sft": {"est_s": 8.0, "tokens": 500, "peak_rss_gib": 3.0},
        "forgetting": {"est_s": 4.0, "scored_tokens": 900, "peak_rss_gib": 2.5},
        "evaluate": {"per_model": {"base": {"est_s": 5.0, "output_tokens_expected": 40, "peak_rss_gib": 2.0}}}}}
    cost = {name: {"wall_s": w, "tokens": n, "rows": 1, "peak_rss_gib": 1.5, "reused": name == "train:sft"}
            for name, w, n in [("generate:answers", 15.0, 120), ("judge:answers_verdicts", 1.0, 0),
                               ("train:sft", 4.0, 500), ("generate:base", 5.0, 44), ("forgetting", 2.0, 0)]}
    rows = against_cost(est, cost)["stages"]
    assert set(rows) == {"generate:answers", "train:sft", "generate:base", "forgetting"}  # judging is not priced
    assert rows["generate:answers"] == {"est_s": 10.0, "wall_s": 15.0, "time_ratio": 1.5, "est_tokens": 100,
                                        "tokens": 120, "est_peak_rss_gib": 2.0, "peak_rss_gib": 1.5, "reused": False}
    assert rows["train:sft"]["time_ratio"] == 0.5 and rows["train:sft"]["reused"]
    assert rows["generate:base"]["est_tokens"] == 40  # an evaluated model's generation: its own estimate
    assert rows["forgetting"]["est_tokens"] is None  # scoring generates no tokens


def test_run_summary_puts_the_estimate_beside_the_cost(run_overrides, tmp_path, monkeypatch):
    import shutil

    from s3ft.pipeline import run_pipeline
    monkeypatch.setenv("S3FT_CACHE", str(tmp_path / "cache"))
    cfg = load_config(None, run_overrides + ["methods=[sft]"])
    summary = run_pipeline(cfg)  # no dry run before it: counted after the run, no times
    est = summary["estimate"]
    assert est["source"].startswith("counted")
    train = est["stages"]["train:sft"]
    assert train["est_tokens"] == train["tokens"] > 0 and train["est_s"] is None
    assert train["est_peak_rss_gib"] > 0 and train["peak_rss_gib"] > 0
    assert {"generate:answers", "generate:base", "generate:sft"} <= est["stages"].keys()
    assert "Estimated vs actual" in (Path(cfg.output_dir) / "report.md").read_text()

    # after a dry run of the same config, its timed estimate is the one compared
    shutil.rmtree(cfg.output_dir)
    dry = estimate(cfg, probe=True)
    summary = run_pipeline(cfg)
    est = summary["estimate"]
    assert est["source"] == "dry-run" and est["total_est_s"] == dry["total_est_s"]
    answers = est["stages"]["generate:answers"]
    assert answers["est_s"] > 0 and answers["wall_s"] > 0 and answers["time_ratio"] > 0


def test_a_failing_estimate_never_loses_the_run_summary(run_overrides, tmp_path, monkeypatch):
    import s3ft.cost
    from s3ft.pipeline import run_pipeline
    monkeypatch.setenv("S3FT_CACHE", str(tmp_path / "cache"))

    def broken(*args, **kwargs):
        raise OSError("tokenizer gone")
    monkeypatch.setattr(s3ft.cost, "estimate", broken)
    cfg = load_config(None, run_overrides + ["methods=[sft]", "eval.base=false"])
    summary = run_pipeline(cfg)
    assert summary["estimate"] is None and "train:sft" in summary["cost"]["stages"]
    assert json.loads((Path(cfg.output_dir) / "summary.json").read_text())["in_domain"].keys() == {"sft"}
