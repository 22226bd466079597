"""The forgetting meter: its statistics, its measures on constructed and planted cases, its
controls, its stage in the pipeline, `s3ft compare` and `s3ft sweep` on top of it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from s3ft.cli import app
from s3ft.compare.command import CompareOptions, compare
from s3ft.forgetting import drift, likelihood
from s3ft.forgetting.records import Estimate
from s3ft.config import ModelConfig, load_config
from s3ft.errors import S3FTError
from s3ft.pipeline import run_pipeline
from s3ft.stats import hierarchical_bootstrap
from s3ft.layout import seed_independent
from s3ft.sweep import run_sweep

# ----------------------------------------------------------------------------- statistics


def test_ratio_bootstrap_ci_covers_the_true_mean_about_95_percent_of_the_time():
    rng = np.random.default_rng(0)
    covered = 0
    for rep in range(200):
        tokens = rng.integers(5, 60, size=80).astype(float)
        per_token = rng.normal(0.3, 1.0, size=80)  # the true token-weighted mean is 0.3
        num = per_token * tokens
        _, lo, hi = hierarchical_bootstrap([(num, tokens)], iters=400, seed=rep)
        covered += lo <= 0.3 <= hi
    assert 0.88 <= covered / 200 <= 0.99, covered


def test_hierarchical_bootstrap_pools_seeds_and_widens_with_seed_variance():
    rng = np.random.default_rng(1)
    same = [(rng.normal(0.5, 0.2, 100), np.ones(100)) for _ in range(3)]
    apart = [(rng.normal(mu, 0.2, 100), np.ones(100)) for mu in (0.2, 0.5, 0.8)]
    v_same, lo_s, hi_s = hierarchical_bootstrap(same, iters=2000, seed=0)
    v_apart, lo_a, hi_a = hierarchical_bootstrap(apart, iters=2000, seed=0)
    assert v_apart == pytest.approx(np.mean([n.mean() for n, _ in apart]))  # the mean of the seeds' means
    assert hi_a - lo_a > 3 * (hi_s - lo_s)  # seeds that disagree make the pooled CI much wider
    assert lo_a < 0.5 < hi_a
    with pytest.raises(ValueError):
        hierarchical_bootstrap([(np.ones(3), np.ones(2))])


def test_estimate_of_identical_models_is_exactly_zero():
    e = Estimate.pooled([([0.0] * 20, [7.0] * 20)])
    assert (e.value, e.ci95, e.items, e.seeds) == (0.0, (0.0, 0.0), 20, 1) and not e.excludes_zero


# ----------------------------------------------------------------------------- likelihood deltas


def test_choice_stats_log_prob_of_correct_and_margin():
    lp, margin = likelihood.choice_stats([-1.0, -2.0, -3.0], [0])
    assert lp == pytest.approx(-1.0 - np.log(np.exp(-1) + np.exp(-2) + np.exp(-3)))
    assert margin == pytest.approx(1.0)
    # several right answers (TruthfulQA MC2): the probability mass on them, best right vs best wrong
    lp2, margin2 = likelihood.choice_stats([-1.0, -2.0, -0.5], [0, 1])
    assert np.exp(lp2) == pytest.approx((np.exp(-1) + np.exp(-2)) / (np.exp(-1) + np.exp(-2) + np.exp(-0.5)))
    assert margin2 == pytest.approx(-0.5)
    with pytest.raises(ValueError):
        likelihood.choice_stats([-1.0, -2.0], [0, 1])  # no wrong choice


def test_likelihood_deltas_see_a_planted_shift_that_accuracy_misses():
    rng = np.random.default_rng(3)
    base, tuned = [], []
    for i in range(150):
        lls = list(rng.normal(-5, 1, 4))
        lls[0] = max(lls) + 2.0  # the base model is right, with a clear margin
        shifted = list(lls)
        shifted[0] -= 0.8  # the tuned model is less sure, still right: accuracy unchanged
        base.append({"doc_id": i, "lls": lls, "gold": [0], "score": 1.0})
        tuned.append({"doc_id": i, "lls": shifted, "gold": [0], "score": 1.0})
    pairs = likelihood.paired_items("arc_easy", base, tuned)
    margin = Estimate.pooled([pairs["margin"]])
    logp = Estimate.pooled([pairs["logp_correct"]])
    assert margin.value == pytest.approx(-0.8) and margin.ci95[1] < 0
    assert logp.value < 0 and logp.ci95[1] < 0
    same = likelihood.paired_items("arc_easy", base, base)
    assert Estimate.pooled([same["margin"]]).ci95 == (0.0, 0.0)
    with pytest.raises(S3FTError, match="different items"):
        likelihood.paired_items("arc_easy", base, tuned[:-1])


# ----------------------------------------------------------------------------- drift on the tiny model


def _lora(model_dir: Path, out: Path, scale: float) -> str:
    """A LoRA adapter whose B matrices are `scale`-sized noise (0: the identity, like an untrained adapter)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM
    torch.manual_seed(0)
    peft = get_peft_model(AutoModelForCausalLM.from_pretrained(model_dir),
                          LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", task_type="CAUSAL_LM"))
    with torch.no_grad():
        for name, p in peft.named_parameters():
            if "lora_B" in name:
                p.normal_(0, scale) if scale else p.zero_()
    peft.save_pretrained(out)
    return str(out)


def test_drift_reads_zero_for_base_and_untrained_adapter_and_grows_with_the_perturbation(tiny_model_dir, tmp_path):
    cfg = ModelConfig(name_or_path=str(tiny_model_dir), dtype="float32", device="cpu")
    scorer = drift.DriftScorer(str(tiny_model_dir), cfg, batch_size=3)
    texts = drift.load_text_probe(None, 6)
    items = [drift.ProbeItem(t["id"], "text", drift.encode_text(scorer.tok, t["text"], 64)) for t in texts]
    adapters = {"base": None, "untrained": _lora(tiny_model_dir, tmp_path / "zero", 0.0),
                "small": _lora(tiny_model_dir, tmp_path / "small", 0.05),
                "large": _lora(tiny_model_dir, tmp_path / "large", 0.5)}
    rows: dict[str, list] = {k: [] for k in adapters}
    for _, part in scorer.score(items, adapters):
        for k, r in part.items():
            rows[k].extend(r)
    kl = {k: Estimate.pooled([drift.paired_items(r)["text_nll_delta"]]) for k, r in rows.items()}
    resp = {k: sum(x.kl for x in r) / sum(x.tokens for x in r) for k, r in rows.items()}
    assert all(r.tokens == len(it.encoded[0]) - 1 for r, it in zip(sorted(rows["base"], key=lambda r: r.id),
                                                                  sorted(items, key=lambda i: i.id)))
    assert resp["base"] == 0.0 and kl["base"].ci95 == (0.0, 0.0)
    assert resp["untrained"] < 1e-6 and abs(kl["untrained"].value) < 1e-5
    assert 0 < resp["small"] < resp["large"]  # the KL grows with the size of the change
    # scoring each item alone gives the same numbers as batched with others (padding does not leak)
    alone = next(iter(scorer.score(items[:1], {"large": adapters["large"]})))[1]["large"][0]
    batched = next(r for r in rows["large"] if r.id == items[0].id)
    assert alone.kl == pytest.approx(batched.kl, rel=1e-4) and alone.nll == pytest.approx(batched.nll, rel=1e-4)


def test_probe_files_give_clear_errors(tmp_path):
    bad = tmp_path / "text.jsonl"
    bad.write_text('{"id": "a", "text": "fine"}\n{"id": "b"}\n')
    with pytest.raises(S3FTError, match=r"text.jsonl:2: needs a non-empty string field 'text'"):
        drift.load_text_probe(str(bad), None)
    bad.write_text('{"id": "a", "text": "x"}\n{"id": "a", "text": "y"}\n')
    with pytest.raises(S3FTError, match=r"text.jsonl:2: duplicate id 'a'"):
        drift.load_text_probe(str(bad), None)
    with pytest.raises(S3FTError, match="probe file not found"):
        drift.load_prompt_probe(str(tmp_path / "nope.jsonl"), None)
    assert len(drift.load_text_probe(None, None)) == 128 and len(drift.load_prompt_probe(None, None)) == 64


def test_forgetting_config_errors_name_the_key(run_overrides):
    with pytest.raises(S3FTError, match=r"forgetting.controls: unknown control 'nul'"):
        load_config(None, run_overrides + ["forgetting.controls=[nul]"])
    with pytest.raises(S3FTError, match=r"forgetting.text_file: /nope.jsonl: file not found"):
        load_config(None, run_overrides + ["forgetting.text_file=/nope.jsonl"])
    with pytest.raises(S3FTError, match=r"forgetting.prompts_limit: must be >= 1"):
        load_config(None, run_overrides + ["forgetting.prompts_limit=0"])


# ----------------------------------------------------------------------------- the stage, compare, sweep

METER = ["forgetting.enabled=true", "forgetting.text_limit=10", "forgetting.prompts_limit=6",
         "forgetting.max_new_tokens=24", "forgetting.controls=[untrained, planted]",
         "forgetting.planted_lr_scale=50", "forgetting.benchmarks=[arc_easy]",
         "forgetting.benchmark_data_dir=builtin", "forgetting.benchmark_limit=16", "methods=[sft, s3ft]"]


@pytest.fixture(scope="module")
def metered(tiny_model_dir, tmp_path_factory):
    """A tiny run with the meter on (both controls, the shipped ARC-Easy probe) and its summary."""
    root = tmp_path_factory.mktemp("meter")
    overrides = [f"model.name_or_path={tiny_model_dir}", "model.dtype=float32", f"output_dir={root / 'run'}",
                 "data.task=arithmetic", "data.train_limit=12", "data.test_limit=8",
                 "generation.max_new_tokens=12", "generation.batch_size=8", "train.epochs=2", "train.batch_size=4",
                 "train.max_length=256", "train.learning_rate=0.001"] + METER
    summary = run_pipeline(load_config(None, overrides))
    return root / "run", summary, overrides


def test_meter_stages_have_their_cost_and_estimate_in_the_summary(metered):
    _, summary, _ = metered
    cost, rows = summary["cost"]["stages"], summary["estimate"]["stages"]
    for stage in ("generate:probe_responses", "train:control-planted", "forgetting"):
        assert cost[stage]["peak_rss_gib"] > 0, stage
        assert rows[stage]["est_peak_rss_gib"] > 0 and rows[stage]["peak_rss_gib"] == cost[stage]["peak_rss_gib"]
    responses = rows["generate:probe_responses"]  # every response assumed to run to max_new_tokens
    assert responses["est_tokens"] == 6 * 24 >= responses["tokens"] > 0


def test_meter_stage_reads_zero_on_controls_and_clearly_above_zero_on_the_planted_case(metered):
    run, summary, _ = metered
    models = summary["forgetting"]["models"]
    assert set(models) == {"base", "sft", "s3ft", "control-untrained", "control-planted"}
    for key in ("drift/text_nll_delta", "drift/response_kl", "drift/response_nll_delta", "probe/arc_easy/accuracy",
                "probe/arc_easy/logp_correct", "probe/arc_easy/margin"):
        assert models["base"][key]["value"] == 0.0 and models["base"][key]["ci95"] == [0.0, 0.0], key
        assert abs(models["control-untrained"][key]["value"]) < 1e-5, key
        lo, hi = models["control-untrained"][key]["ci95"]
        assert lo <= 1e-5 and hi >= -1e-5, key  # the CI covers 0
    planted = models["control-planted"]
    assert planted["drift/response_kl"]["ci95"][0] > 0  # clearly above 0
    assert planted["drift/response_kl"]["value"] > models["sft"]["drift/response_kl"]["value"]
    # a random tiny model has little to forget: general text moves, within a CI that may touch 0
    assert planted["drift/text_nll_delta"]["value"] > abs(models["sft"]["drift/text_nll_delta"]["value"])
    assert models["sft"]["probe/arc_easy/logp_correct"]["items"] == 16
    # the artifacts the summary came from: one row per probe item and model
    assert len((run / "forgetting" / "drift_sft.jsonl").read_text().splitlines()) == 10 + 6
    assert (run / "adapters" / "control-planted" / "model" / "adapter_config.json").is_file()
    md = (run / "report.md").read_text()
    assert "## Forgetting" in md and "| control-planted |" in md


def test_meter_stage_resumes_without_recomputing(metered):
    run, summary, overrides = metered
    drift_file = run / "forgetting" / "drift_s3ft.jsonl"
    lines = drift_file.read_text().splitlines()
    drift_file.write_text("\n".join(lines[:5]) + "\n" + lines[5][:20])  # as if killed mid-write
    again = run_pipeline(load_config(None, overrides))
    now = drift_file.read_text().splitlines()
    assert now[:5] == lines[:5]  # finished rows are kept as they were
    before = {json.loads(x)["id"]: json.loads(x) for x in lines}
    after = {json.loads(x)["id"]: json.loads(x) for x in now}
    assert before.keys() == after.keys() and len(now) == len(lines)  # the torn and missing rows, once each
    for k, r in after.items():  # recomputed in other batches: equal up to float rounding
        assert r["tokens"] == before[k]["tokens"] and r["kl"] == pytest.approx(before[k]["kl"], rel=1e-2, abs=1e-6)
        assert r["nll"] == pytest.approx(before[k]["nll"], rel=1e-5)
    for key, est in again["forgetting"]["models"]["s3ft"].items():
        assert est["value"] == pytest.approx(summary["forgetting"]["models"]["s3ft"][key]["value"], rel=1e-2, abs=1e-6)


def test_compare_on_a_metered_run_writes_the_meter_controls_and_the_plot(metered, tmp_path):
    run, summary, _ = metered
    result = CliRunner().invoke(app, ["compare", str(run), "--no-general", "-o", str(tmp_path / "out"),
                                      "--audit-judge", "none"])
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "out" / "compare.json").read_text())
    assert data["controls"] == ["control-untrained", "control-planted"]
    pooled = data["pooled"]
    assert pooled["sft"]["drift/response_kl"] == summary["forgetting"]["models"]["sft"]["drift/response_kl"]
    assert "in_domain/accuracy" in pooled["s3ft"] and pooled["control-planted"]["drift/response_kl"]["ci95"][0] > 0
    html = (tmp_path / "out" / "report.html").read_text()
    assert "Gain vs forgetting" in html or "gain vs forgetting" in html.lower()
    assert (tmp_path / "out" / "plots" / "gain_vs_forgetting.png").read_bytes()[:4] == b"\x89PNG"


def test_compare_without_meter_or_adapters_errors_naming_the_path(metered, tmp_path):
    run, _, _ = metered
    bare = tmp_path / "bare"
    shutil.copytree(run, bare, ignore=shutil.ignore_patterns("forgetting", "adapters"))
    result = CliRunner().invoke(app, ["compare", str(bare), "--no-general"])
    assert result.exit_code == 2 and "no forgetting measurements for base, sft, s3ft" in result.output
    assert f"s3ft forgetting {bare}/config.json" in result.output and "Traceback" not in result.output
    result = CliRunner().invoke(app, ["compare", str(bare), "--no-forgetting", "--benchmarks", "arc_easy",
                                      "--data-dir", str(Path(drift.PACKAGE_DATA) / "probe"), "--limit", "4"])
    assert result.exit_code == 2 and f"no adapter for sft ({bare}/adapters/sft/model missing)" in result.output


def test_sweep_reuses_seed_independent_artifacts_and_pools_seeds(tiny_model_dir, tmp_path):
    overrides = [f"model.name_or_path={tiny_model_dir}", "model.dtype=float32", f"output_dir={tmp_path / 'sw'}",
                 "data.task=arithmetic", "data.train_limit=8", "data.test_limit=8", "generation.max_new_tokens=12",
                 "generation.batch_size=8", "train.epochs=1", "train.batch_size=4", "train.max_length=256",
                 "forgetting.text_limit=6", "forgetting.prompts_limit=4", "forgetting.max_new_tokens=16",
                 "methods=[sft]"]
    dirs = run_sweep(None, overrides, [0, 1])
    assert [d.name for d in dirs] == ["seed0", "seed1"]
    for name in ("answers.jsonl", "eval/base.jsonl", "forgetting/probe_responses.jsonl", "forgetting/drift_base.jsonl"):
        assert (dirs[0] / name).read_bytes() == (dirs[1] / name).read_bytes(), name
    # the seed changes the adapter, and nothing upstream of it
    a0 = (dirs[0] / "adapters/sft/model/adapter_model.safetensors").read_bytes()
    assert a0 != (dirs[1] / "adapters/sft/model/adapter_model.safetensors").read_bytes()
    assert any(p.startswith("answers") for p in seed_independent())
    data = compare(dirs, None, tmp_path / "out", CompareOptions(audit_judge=None, nll=False), progress=lambda m: None)
    kl = data["pooled"]["sft"]["drift/response_kl"]
    assert kl["seeds"] == 2 and kl["value"] == pytest.approx(np.mean(
        [data["per_run"][d.name]["sft"]["measures"]["drift/response_kl"]["value"] for d in dirs]))
    md = (tmp_path / "out" / "report.md").read_text()
    assert "Forgetting, 2 runs pooled" in md and "## Forgetting: seed1" in md
    # runs of another model are not seeds of this one
    cfg = json.loads((dirs[1] / "config.json").read_text())
    cfg["model"]["name_or_path"] = "other-model"
    (dirs[1] / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(S3FTError, match=r"model.name_or_path is 'other-model'"):
        compare(dirs, None, tmp_path / "out2", CompareOptions(audit_judge=None), progress=lambda m: None)
