"""Method-vs-method contrasts in `s3ft compare`: run directories built by hand with known per-item verdicts
and drift rows, so every expected difference, CI and verdict is known in advance."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from s3ft.cli import app
from s3ft.compare import CompareOptions, compare
from s3ft.compare.contrasts import contrast, parse_contrast, verdict
from s3ft.compare.records import Estimate
from s3ft.errors import S3FTError
from s3ft.stats import wilson_ci

N_TEST = 40
N_TEXT, N_RESP = 24, 16


def _jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def make_run(path: Path, right: dict[str, int], drift: dict[str, tuple[float, float]], seed: int = 0) -> Path:
    """A finished run: method m is right on test items 0..right[m]-1, and drifts by (text NLL, response KL)
    nats/token = drift[m] (each item's token count varies; the per-token means are exact)."""
    methods = [m for m in right if m != "base"]
    cfg = {"model": {"name_or_path": "toy-model"}, "data": {"task": "arithmetic"}, "methods": methods,
           "eval": {"base": True}, "forgetting": {"benchmarks": []}, "train": {"seed": seed}}
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps(cfg))
    ids = [f"t{i:02d}" for i in range(N_TEST)]
    _jsonl(path / "data" / "test.jsonl", [{"id": i} for i in ids])
    for m, k in right.items():
        _jsonl(path / "eval" / f"{m}_verdicts.jsonl", [{"id": i, "correct": n < k} for n, i in enumerate(ids)])
        (path / "eval" / f"{m}.metrics.json").write_text(json.dumps(
            {"accuracy": k / N_TEST, "ci95": list(wilson_ci(k, N_TEST)), "n": N_TEST, "correct": k}))
    for m, (text, kl) in drift.items():
        rows = []
        for j in range(N_TEXT + N_RESP):
            kind, tokens = ("text", 10 + j % 7) if j < N_TEXT else ("response", 5 + j % 4)
            base_nll = 2.0 * tokens
            shift = (text if kind == "text" else kl / 2) * tokens
            rows.append({"id": f"{kind}/{j}", "kind": kind, "tokens": tokens, "base_nll": base_nll,
                         "nll": base_nll + shift, "kl": 0.0 if kind == "text" else kl * tokens})
        rows.reverse() if m == "s3ft" else None  # files written in another order still pair item by item
        _jsonl(path / "forgetting" / f"drift_{m}.jsonl", rows)
    return path


RIGHT = {"base": 12, "sft": 10, "ssr": 10, "s3ft": 20}
DRIFT = {"base": (0.0, 0.0), "sft": (0.5, 0.2), "ssr": (0.5, 0.2), "s3ft": (0.1, 0.05)}
OPTS = dict(nll=False, audit_judge=None, bootstrap_iters=1000)


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    root = tmp_path_factory.mktemp("contrast")
    run = make_run(root / "seed0", RIGHT, DRIFT)
    data = compare([run], None, root / "out", CompareOptions(contrasts=["s3ft-ssr"], **OPTS), progress=lambda m: None)
    return root, data


def test_every_method_is_contrasted_with_sft_on_in_domain_and_every_drift_measure(toy):
    _, data = toy
    assert list(data["contrasts"]) == ["ssr-sft", "s3ft-sft", "s3ft-ssr"]
    c = data["contrasts"]["s3ft-sft"]
    assert (c["a"], c["b"], c["seeds"]) == ("s3ft", "sft", 1)
    assert set(c["measures"]) == {"in_domain/accuracy", "drift/text_nll_delta", "drift/response_kl",
                                  "drift/response_nll_delta"}
    # right on 10 more of 40 items: +25 points, every discordant item in its favour: CI excludes 0
    ind = c["measures"]["in_domain/accuracy"]
    assert ind["value"] == pytest.approx(0.25) and ind["ci95"][0] > 0.05 and ind["items"] == N_TEST
    assert c["measures"]["drift/text_nll_delta"]["value"] == pytest.approx(0.1 - 0.5)
    assert c["measures"]["drift/response_kl"]["value"] == pytest.approx(0.05 - 0.2)
    assert c["measures"]["drift/response_nll_delta"]["value"] == pytest.approx((0.05 - 0.2) / 2)
    assert c["measures"]["drift/response_kl"]["ci95"][1] < 0
    assert c["verdict"]["status"] == "supported" and not c["verdict"]["more_forgetting"]
    assert set(c["verdict"]["less_forgetting"]) == {"drift/text_nll_delta", "drift/response_kl",
                                                     "drift/response_nll_delta"}


def test_identical_methods_contrast_to_exactly_zero_and_stay_unresolved(toy):
    _, data = toy
    c = data["contrasts"]["ssr-sft"]
    for e in c["measures"].values():
        assert e["value"] == 0 and e["ci95"] == [0, 0]
    assert c["verdict"]["status"] == "unresolved"
    assert "CI covering 0" in c["verdict"]["sentence"]


def test_a_pair_asked_for_is_contrasted_too(toy):
    _, data = toy
    assert data["contrasts"]["s3ft-ssr"]["measures"]["in_domain/accuracy"]["value"] == pytest.approx(0.25)


def test_more_forgetting_contradicts_the_claim_whatever_the_gain(tmp_path):
    run = make_run(tmp_path / "r", {"base": 12, "sft": 10, "s3ft": 20},
                   {"base": (0, 0), "sft": (0.1, 0.05), "s3ft": (0.5, 0.2)})
    data = compare([run], None, tmp_path / "out", CompareOptions(**OPTS), progress=lambda m: None)
    v = data["contrasts"]["s3ft-sft"]["verdict"]
    assert v["status"] == "contradicted" and "drift/response_kl" in v["more_forgetting"]
    assert "forgets more than sft" in v["sentence"]


def test_seeds_are_pooled_item_by_item(tmp_path):
    """Seed 0: +25 points; seed 1: +5 points; pooled: their mean, with a CI that resamples the seeds."""
    runs = [make_run(tmp_path / "seed0", RIGHT, DRIFT, seed=0),
            make_run(tmp_path / "seed1", {**RIGHT, "s3ft": 12}, DRIFT, seed=1)]
    data = compare(runs, None, tmp_path / "out", CompareOptions(**OPTS), progress=lambda m: None)
    c = data["contrasts"]["s3ft-sft"]
    ind = c["measures"]["in_domain/accuracy"]
    assert c["seeds"] == 2 and ind["seeds"] == 2
    assert ind["value"] == pytest.approx((0.25 + 0.05) / 2)
    assert ind["ci95"][0] <= 0.05 + 1e-9 and ind["ci95"][1] >= 0.25 - 1e-9  # spans both seeds' effects
    assert c["measures"]["drift/text_nll_delta"]["value"] == pytest.approx(-0.4)


def test_report_and_cli_open_with_the_contrasts(toy, tmp_path):
    root, data = toy
    md = (root / "out" / "report.md").read_text()
    lines = md.splitlines()
    first_heading = next(i for i, line in enumerate(lines) if line.startswith("## "))
    assert lines[first_heading].startswith("## At a glance: each method against SFT")
    item = next(line for line in lines if line.startswith("- s3ft − sft"))
    assert "in-domain +25.0 pts [" in item and "response KL -0.150 [" in item and "Verdict: s3ft vs sft: supported" in item
    page = (root / "out" / "report.html").read_text()
    assert page.index("At a glance") < page.index("<table>") and "s3ft − sft: in-domain +25.0 pts" in page
    result = CliRunner().invoke(app, ["compare", str(root / "seed0"), "--no-general", "--no-nll", "--audit-judge",
                                      "none", "--contrast", "s3ft-ssr", "-o", str(tmp_path / "o")])
    assert result.exit_code == 0, result.output
    assert "s3ft − sft: in-domain +25.0 pts" in result.output and "s3ft − ssr:" in result.output
    assert "s3ft vs sft: supported" in result.output
    result = CliRunner().invoke(app, ["compare", str(root / "seed0"), "--no-general", "--contrast", "s3ft-dpo",
                                      "-o", str(tmp_path / "o2")])
    assert result.exit_code == 2 and "--contrast 's3ft-dpo'" in result.output


def test_parse_contrast_allows_hyphenated_names_and_rejects_unknown_ones():
    models = ["base", "sft", "s3ft", "control-planted"]
    assert parse_contrast("control-planted-sft", models) == ("control-planted", "sft")
    assert parse_contrast("s3ft-base", models) == ("s3ft", "base")
    with pytest.raises(S3FTError, match="two of the compared models"):
        parse_contrast("s3ft-s3ft", models)


def test_misaligned_items_are_an_error_not_a_silent_difference():
    pairs = {"r": {"a": {"drift/response_kl": ([1.0, 2.0], [3.0, 4.0])},
                   "b": {"drift/response_kl": ([1.0], [3.0])}}}
    with pytest.raises(S3FTError, match="r: drift/response_kl of a and b: .*not measured on the same items"):
        contrast(pairs, "a", "b")


def test_verdict_without_forgetting_measures_is_unresolved_even_with_a_gain():
    gain = Estimate(0.2, (0.1, 0.3), 40)
    assert verdict("s3ft", "sft", {"in_domain/accuracy": gain}).status == "unresolved"
    probe_drop = Estimate(-0.1, (-0.2, -0.05), 40)  # lower probe accuracy = more forgetting
    v = verdict("s3ft", "sft", {"in_domain/accuracy": gain, "probe/arc_easy/accuracy": probe_drop})
    assert v.status == "contradicted" and v.more_forgetting == ["probe/arc_easy/accuracy"]
