"""`s3ft compare`: statistics on constructed data, and a real comparison of a tiny pipeline run
(tiny random Llama, offline general benchmarks on a few hand-written rows), its numbers checked
against the metrics files, its HTML rendered in headless Chromium."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from s3ft.artifacts import read_jsonl
from s3ft.cli import app
from s3ft.compare.command import CompareOptions, compare
from s3ft.compare.runs import load_runs
from s3ft.compare.seeds import aggregate_seeds
from s3ft.compare.target_nll import target_nll
from s3ft.config import load_config
from s3ft.errors import S3FTError
from s3ft.forgetting.lm_eval_bridge import GeneralEvalConfig, evaluate_general
from s3ft.forgetting.targets import NLLScorer, encode_target
from s3ft.pipeline import run_pipeline
from s3ft.stats import mean_sd, paired_bootstrap_diff, stratified_paired_bootstrap

# ----------------------------------------------------------------------------- statistics


def test_paired_bootstrap_large_difference_is_on_the_expected_side():
    rng = np.random.default_rng(1)
    a = (rng.random(300) < 0.8).astype(float)
    b = (rng.random(300) < 0.3).astype(float)
    d, lo, hi = paired_bootstrap_diff(a, b)
    assert d == pytest.approx(a.mean() - b.mean())
    assert 0.3 < lo <= d <= hi < 0.7
    d2, lo2, hi2 = paired_bootstrap_diff(b, a)
    assert d2 == pytest.approx(-d) and hi2 < 0


def test_paired_bootstrap_identical_models_cover_zero():
    rng = np.random.default_rng(2)
    a = (rng.random(200) < 0.5).astype(float)
    assert paired_bootstrap_diff(a, a.copy()) == (0.0, 0.0, 0.0)
    # two models with the same accuracy that differ on some items: the CI still covers 0
    b = a.copy()
    flip = rng.choice(200, 20, replace=False)
    b[flip] = 1 - b[flip]
    d, lo, hi = paired_bootstrap_diff(a, b, iters=3000, seed=5)
    assert lo <= 0 <= hi and abs(d) < 0.1
    assert paired_bootstrap_diff(a, b, iters=3000, seed=5) == (d, lo, hi)  # seeded: reproducible


def test_stratified_bootstrap_is_the_mean_of_per_benchmark_differences():
    big = (np.ones(80), np.zeros(80))  # +1.0 on one benchmark
    none = (np.full(30, 0.5), np.full(30, 0.5))  # 0 on another
    d, lo, hi = stratified_paired_bootstrap([big, none])
    assert (d, lo, hi) == pytest.approx((0.5, 0.5, 0.5))
    with pytest.raises(ValueError):
        paired_bootstrap_diff(np.ones(5), np.zeros(3))


def test_seed_aggregation_mean_and_sd():
    def run(acc, delta, vals, drop):
        return {"in_domain": {"accuracy": acc, "delta": delta},
                "general": {"benchmarks": {"arc_easy": {"value": vals, "delta": None if delta is None else delta / 2}},
                            "avg_drop_pts": drop}}
    per_run = {"s0": {"base": run(0.2, None, 0.5, None), "s3ft": run(0.5, 0.3, 0.45, 5.0)},
               "s1": {"base": run(0.2, None, 0.5, None), "s3ft": run(0.7, 0.5, 0.47, 3.0)},
               "s2": {"base": run(0.2, None, 0.5, None)}}
    agg = aggregate_seeds(per_run, ["base", "s3ft"], ["arc_easy"])
    assert agg["s3ft"]["n_runs"] == 2 and agg["base"]["n_runs"] == 3
    assert agg["s3ft"]["in_domain_accuracy"]["mean"] == pytest.approx(0.6)
    assert agg["s3ft"]["in_domain_accuracy"]["sd"] == pytest.approx(np.std([0.5, 0.7], ddof=1))
    assert agg["s3ft"]["avg_drop_pts"] == pytest.approx({"mean": 4.0, "sd": np.sqrt(2), "n": 2})
    assert agg["s3ft"]["general"]["arc_easy"]["delta"]["mean"] == pytest.approx(0.2)
    assert agg["base"]["in_domain_accuracy"]["sd"] == pytest.approx(0, abs=1e-12) and agg["base"]["in_domain_delta"]["n"] == 0
    assert mean_sd([0.3]) == {"mean": 0.3, "sd": None, "n": 1}


# ----------------------------------------------------------------------------- NLL


def test_target_nll_matches_a_plain_forward_pass(tiny_model_dir):
    import torch
    scorer = NLLScorer(str(tiny_model_dir), {"name_or_path": str(tiny_model_dir), "dtype": "float32",
                                             "device": "cpu"}, batch_size=3)
    msgs = [[{"role": "user", "content": f"What is {i} + {i}?"}] for i in range(5)]
    targets = ["It is 2.", "The sum is " + "very " * 7 + "large.", "4", "Let me think. 3 + 3 = 6.\n#### 6", "8"]
    enc = [encode_target(scorer.tok, m, t) for m, t in zip(msgs, targets)]
    # the completion is the target plus the chat template's end of turn, as TRL trains it
    ids, p = enc[0]
    assert scorer.tok.decode(ids[p:]).startswith("It is 2.<|im_end|>")
    got = scorer.score(enc)
    with torch.inference_mode():
        for (ids, p), (nll, n) in zip(enc, got):
            logits = scorer.model(input_ids=torch.tensor([ids])).logits[0]
            lp = torch.log_softmax(logits.float(), -1)
            want = -lp[torch.arange(p - 1, len(ids) - 1), torch.tensor(ids[p:])].mean()
            assert n == len(ids) - p and nll == pytest.approx(float(want), rel=1e-4)


# ----------------------------------------------------------------------------- a real comparison


def _jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


@pytest.fixture(scope="module")
def bench_dir(tmp_path_factory) -> Path:
    """arc_easy and winogrande, 4 rows each, hub schema; no hellaswag (-> skipped)."""
    d = tmp_path_factory.mktemp("bench")
    _jsonl(d / "ai2_arc/ARC-Easy/test.jsonl",
           [{"id": f"q{i}", "question": f"Which number is {i}?",
             "choices": {"text": [str(i), str(i + 1), str(i + 2)], "label": ["A", "B", "C"]}, "answerKey": "A"}
            for i in range(4)])
    _jsonl(d / "winogrande/validation.jsonl", [
        {"sentence": "The cup fell off the table because _ was wobbly.", "option1": "the cup",
         "option2": "the table", "answer": "2"},
        {"sentence": "Ann thanked Sue because _ had helped.", "option1": "Ann", "option2": "Sue", "answer": "2"},
        {"sentence": "The ball broke the window because _ was fragile.", "option1": "the ball",
         "option2": "the window", "answer": "2"},
        {"sentence": "Tom gave Bob a gift because _ was kind.", "option1": "Tom", "option2": "Bob", "answer": "1"}])
    return d


def _general(bench_dir: Path) -> GeneralEvalConfig:
    return GeneralEvalConfig(tasks=["arc_easy", "winogrande", "hellaswag"], data_dir=str(bench_dir), batch_size=4,
                             device="cpu")


@pytest.fixture(scope="module")
def compared(tiny_model_dir, bench_dir, tmp_path_factory):
    """A real tiny pipeline run (sft + s3ft) and its comparison."""
    root = tmp_path_factory.mktemp("cmp")
    overrides = [f"model.name_or_path={tiny_model_dir}", "model.dtype=float32", f"output_dir={root / 'run'}",
                 "data.task=arithmetic", "data.train_limit=8", "data.test_limit=8", "methods=[sft, s3ft]",
                 "generation.max_new_tokens=12", "generation.batch_size=8",
                 "train.epochs=1", "train.batch_size=4", "train.max_length=256", "train.save_steps=50",
                 "forgetting.text_limit=6", "forgetting.prompts_limit=4", "forgetting.max_new_tokens=16"]
    run_pipeline(load_config(None, overrides))
    out = root / "out"
    data = compare([root / "run"], _general(bench_dir), out, CompareOptions(audit_judge="exact", audit_size=10),
                   progress=lambda m: None)
    return root / "run", out, data


def test_compare_numbers_equal_the_metrics_files(compared, tiny_model_dir, bench_dir):
    run, out, _ = compared
    data = json.loads((out / "compare.json").read_text())  # what the report shows, parsed back
    block = data["per_run"]["run"]
    assert data["methods"] == ["base", "sft", "s3ft"]
    # in-domain: exactly the numbers of eval/<method>.metrics.json, deltas paired over the same ids
    for m in ("base", "sft", "s3ft"):
        metrics = json.loads((run / "eval" / f"{m}.metrics.json").read_text())
        got = block[m]["in_domain"]
        assert (got["accuracy"], got["ci95"], got["n"], got["correct"]) == \
               (metrics["accuracy"], metrics["ci95"], metrics["n"], metrics["correct"])
        if m != "base":
            base = json.loads((run / "eval" / "base.metrics.json").read_text())
            assert got["delta"] == pytest.approx(metrics["accuracy"] - base["accuracy"])
            assert got["delta_ci95"][0] <= got["delta"] <= got["delta_ci95"][1] and got["n_paired"] == 8
    # general: exactly evaluate_general's values (same settings, same cache -> no recomputation)
    cfg = _general(bench_dir)
    base = evaluate_general(str(tiny_model_dir), None, cfg, out / "cache")
    assert data["general_settings"] == base["settings"]
    for m in ("base", "sft", "s3ft"):
        res = base if m == "base" else evaluate_general(str(tiny_model_dir), str(run / "adapters" / m / "model"),
                                                        cfg, out / "cache")
        deltas = []
        for t in ("arc_easy", "winogrande"):
            assert res["tasks"][t]["cached"] is True
            g = block[m]["general"]["benchmarks"][t]
            assert (g["value"], g["n"]) == (res["tasks"][t]["value"], res["tasks"][t]["n"]) and g["n"] == 4
            if m != "base":
                assert g["delta"] == pytest.approx(res["tasks"][t]["value"] - base["tasks"][t]["value"])
                assert g["delta_ci95"][0] <= g["delta"] + 1e-12 and g["delta"] <= g["delta_ci95"][1] + 1e-12
                deltas.append(g["delta"])
        if m != "base":
            gen = block[m]["general"]
            assert gen["avg_drop_pts"] == pytest.approx(-100 * sum(deltas) / 2)
            assert gen["avg_drop_over"] == ["arc_easy", "winogrande"]
    # missing benchmark data: skipped with the message naming the file
    assert "hellaswag/validation.jsonl" in data["skipped_benchmarks"]["hellaswag"]
    assert block["s3ft"]["general"]["benchmarks"]["hellaswag"]["skipped"]
    # one run: the aggregate is that run's numbers with no sd
    agg = data["aggregate"]["s3ft"]
    assert agg["in_domain_accuracy"] == {"mean": block["s3ft"]["in_domain"]["accuracy"], "sd": None, "n": 1}
    # the markdown shows those numbers
    md = (out / "report.md").read_text()
    for m in ("base", "sft", "s3ft"):
        assert f"| {m} | {100 * block[m]['in_domain']['accuracy']:.1f} [" in md
    assert f"{block['s3ft']['general']['avg_drop_pts']:+.1f} [" in md
    # target NLL cached per row in the run dir, target mix from the stats file
    rows = read_jsonl(run / "nll_s3ft.jsonl")
    assert len(rows) == 8 and all(r["tokens"] > 0 and r["nll"] > 0 for r in rows)
    assert block["s3ft"]["target_mix"] == json.loads((run / "train_s3ft.stats.json").read_text())["target_mix"]
    assert block["s3ft"]["nll"]["tokens"] == sum(r["tokens"] for r in rows)
    # judge audit: counts add up
    audit = data["judge_audit"]["run"]
    assert audit["second_judge"] == "exact" and sum(audit["counts"].values()) == audit["n"] <= 10


def test_report_html_is_self_contained(compared):
    _, out, _ = compared
    page = (out / "report.html").read_text()
    uris = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(uris) >= 4  # tradeoff, deltas, target mix, NLL (+ histogram)
    assert all(base64.b64decode(u)[:8] == b"\x89PNG\r\n\x1a\n" for u in uris)
    assert not re.search(r'(src|href)="(?!data:)', page)  # no external assets
    assert "<table>" in page and "s3ft" in page


def test_nll_cache_resumes_without_the_model(compared):
    run, _, _ = compared
    from s3ft.compare.runs import load_run
    r = load_run(run)

    def no_model():
        raise AssertionError("model loaded although every row is cached")
    res = target_nll(r, r.methods, no_model, lambda m: None)
    assert set(res) == {"sft", "s3ft"}


def test_a_target_scored_for_one_seed_is_not_scored_again_for_another(compared, tmp_path):
    run, _, _ = compared
    from s3ft.compare.runs import load_run
    other = tmp_path / "seed1"  # another seed trains on the same targets; its NLL cache is empty
    shutil.copytree(run, other, ignore=shutil.ignore_patterns("adapters", "nll_*"))
    memo: dict = {}
    target_nll(load_run(run), ["sft", "s3ft"], lambda: None, lambda m: None, memo)

    def no_model():
        raise AssertionError("model loaded although another seed scored every target")
    res = target_nll(load_run(other), ["sft", "s3ft"], no_model, lambda m: None, memo)
    assert read_jsonl(other / "nll_s3ft.jsonl") == read_jsonl(run / "nll_s3ft.jsonl")
    assert res == target_nll(load_run(run), ["sft", "s3ft"], no_model, lambda m: None)

    rows = read_jsonl(other / "train_sft.jsonl")  # an edited target is scored, not taken from the memo
    rows[0]["target"] += " Edited."
    (other / "train_sft.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(AssertionError, match="model loaded"):
        target_nll(load_run(other), ["sft"], no_model, lambda m: None, memo)


def test_mismatched_run_dirs_error_clearly(compared, tmp_path):
    run, _, _ = compared
    other = tmp_path / "other"
    shutil.copytree(run, other, ignore=shutil.ignore_patterns("adapters", "nll_*"))
    cfg = json.loads((other / "config.json").read_text())
    cfg["data"]["task"] = "gsm8k"
    (other / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(S3FTError, match=r"other: data\.task is 'gsm8k' but .*run \(the first run directory\)"):
        load_runs([run, other])
    result = CliRunner().invoke(app, ["compare", str(run), str(other), "--no-general", "--output",
                                      str(tmp_path / "o")])
    assert result.exit_code == 2 and "data.task is 'gsm8k'" in result.output
    assert "Traceback" not in result.output
    result = CliRunner().invoke(app, ["compare", str(tmp_path / "nope"), "--no-general"])
    assert result.exit_code == 2 and "not a directory" in result.output


def test_several_seeds_are_aggregated(compared, tmp_path):
    run, _, _ = compared
    other = tmp_path / "run_seed1"  # stands in for a second seed: same task/model, another train.seed
    shutil.copytree(run, other, ignore=shutil.ignore_patterns("adapters"))
    cfg = json.loads((other / "config.json").read_text())
    cfg["train"]["seed"] = 1
    (other / "config.json").write_text(json.dumps(cfg))
    data = compare([run, other], None, tmp_path / "out", CompareOptions(audit_judge=None), progress=lambda m: None)
    assert [r["seeds"]["train.seed"] for r in data["runs"]] == [0, 1]
    acc = data["per_run"]["run"]["s3ft"]["in_domain"]["accuracy"]
    agg = data["aggregate"]["s3ft"]
    assert agg["n_runs"] == 2 and agg["in_domain_accuracy"]["mean"] == pytest.approx(acc)
    assert agg["in_domain_accuracy"]["sd"] == pytest.approx(0, abs=1e-12)
    md = (tmp_path / "out" / "report.md").read_text()
    assert "## Mean ± sd over runs (seeds)" in md and "## Results: run_seed1" in md
    assert data["benchmarks"] == [] and data["general_settings"] is None


def test_report_renders_in_headless_chromium(compared, tmp_path):
    """The issue asks for a rendered check. CI installs it: `apt-get install -y chromium`."""
    _, out, _ = compared
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.fail("chromium not found on PATH: install it (Debian: `apt-get install -y chromium`) to run the "
                    "report screenshot test")
    shot = tmp_path / "shot.png"
    cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", f"--screenshot={shot}",
           "--window-size=1200,5000",  # tall: the headline and its tables come before the plots f"--user-data-dir={tmp_path / 'profile'}",
           (out / "report.html").resolve().as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert shot.is_file(), f"chromium wrote no screenshot (rc={proc.returncode}): {proc.stderr[-1500:]}"
    from PIL import Image
    img = Image.open(shot).convert("RGB")
    assert img.size == (1200, 5000)
    small = np.asarray(img.resize((300, 1250)))
    colours = len({tuple(p) for p in small.reshape(-1, 3)})
    not_white = (small.min(axis=2) < 235).mean()
    # text + tables + coloured plot bars: many distinct colours, far from a blank page
    assert colours > 200 and not_white > 0.05, (colours, not_white)
    # the plots' saturated colours are on screen (blue/red bars), not just black text
    saturated = ((small.max(axis=2).astype(int) - small.min(axis=2)) > 80).mean()
    assert saturated > 0.005, saturated
