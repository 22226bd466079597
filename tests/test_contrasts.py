"""Method-vs-method contrasts in `s3ft compare`: run directories built by hand with known per-item verdicts
and drift rows, so every expected difference, CI and verdict is known in advance."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from s3ft.cli import app
from s3ft.compare.command import CompareOptions, compare
from s3ft.compare.contrasts import contrast, parse_contrast, verdict
from s3ft.forgetting.records import Estimate
from s3ft.errors import S3FTError
from s3ft.stats import wilson_ci

N_TEST = 40
N_TEXT, N_RESP = 24, 16


def _jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def make_run(path: Path, right: dict[str, int], drift: dict[str, tuple[float, float]], seed: int = 0,
             variant: str | None = None) -> Path:
    """A finished run: method m is right on test items 0..right[m]-1, and drifts by (text NLL, response KL)
    nats/token = drift[m] (each item's token count varies; the per-token means are exact)."""
    methods = [m for m in right if m != "base"]
    cfg = {"model": {"name_or_path": "toy-model"}, "data": {"task": "arithmetic"}, "methods": methods,
           "eval": {"base": True}, "forgetting": {"benchmarks": []}, "train": {"seed": seed}, "variant": variant}
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


def test_a_variant_run_is_reported_beside_the_run_of_its_seeds_and_contrasted_with_sft(tmp_path):
    """`variant: +replay` (say, S3FT trained with replay in its own run directory): its S3FT is
    `s3ft+replay`, paired item by item with the SFT of the run that has the same seeds, pooled over seeds."""
    main = [make_run(tmp_path / f"seed{s}", RIGHT, DRIFT, seed=s) for s in (0, 1)]
    replay = {"base": 12, "s3ft": 16}
    variants = [make_run(tmp_path / "replay" / f"seed{s}", replay, {"base": (0, 0), "s3ft": (0.05, 0.01)}, seed=s,
                         variant="+replay") for s in (0, 1)]
    data = compare(main + variants, None, tmp_path / "out", CompareOptions(contrasts=["s3ft+replay-s3ft"], **OPTS),
                   progress=lambda m: None)
    assert data["methods"] == ["base", "sft", "ssr", "s3ft", "s3ft+replay"]
    assert list(data["per_run"]) == ["seed0", "seed1"]  # one block per seed, the variant's models inside it
    assert set(data["per_run"]["seed1"]) == {"base", "sft", "ssr", "s3ft", "s3ft+replay"}
    assert [r.get("reported_under") for r in data["runs"]] == [None, None, "seed0", "seed1"]
    c = data["contrasts"]["s3ft+replay-sft"]
    assert c["seeds"] == 2
    assert c["measures"]["in_domain/accuracy"]["value"] == pytest.approx((16 - 10) / N_TEST)
    assert c["measures"]["drift/text_nll_delta"]["value"] == pytest.approx(0.05 - 0.5)
    assert data["contrasts"]["s3ft+replay-s3ft"]["measures"]["drift/response_kl"]["value"] == pytest.approx(0.01 - 0.05)
    assert "s3ft+replay − sft (2 seeds pooled)" in (tmp_path / "out" / "report.md").read_text()


def test_a_variant_whose_base_model_answered_differently_is_an_error(tmp_path):
    main = make_run(tmp_path / "seed0", RIGHT, DRIFT)
    other = make_run(tmp_path / "v" / "seed0", {"base": 13, "s3ft": 16}, {"base": (0, 0), "s3ft": (0, 0)},
                     variant="+replay")
    with pytest.raises(S3FTError, match="base model's in-domain results differ from those of seed0"):
        compare([main, other], None, tmp_path / "out", CompareOptions(**OPTS), progress=lambda m: None)


def test_two_runs_of_one_seed_with_the_same_variant_are_an_error_naming_both(tmp_path):
    main = make_run(tmp_path / "seed0", RIGHT, DRIFT)
    a, b = (make_run(tmp_path / d / "seed0", {"base": 12, "s3ft": 16}, {"base": (0, 0), "s3ft": (0, 0)},
                     variant="+replay") for d in ("a", "b"))
    with pytest.raises(S3FTError, match=r"s3ft\+replay of seeds .* is also in .*a/seed0"):
        compare([main, a, b], None, tmp_path / "out", CompareOptions(**OPTS), progress=lambda m: None)


def test_report_and_cli_open_with_the_contrasts(toy, tmp_path):
    root, data = toy
    md = (root / "out" / "report.md").read_text()
    lines = md.splitlines()
    first_heading = next(i for i, line in enumerate(lines) if line.startswith("## "))
    assert lines[first_heading].startswith("## At a glance: each method against SFT")
    item = next(line for line in lines if line.startswith("- s3ft − sft"))
    assert "in-domain +25.0 pts [" in item and "response KL -0.150 [" in item
    assert "Verdict: s3ft vs sft: supported" in item
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


# ----------------------------------------------------------------------------- the run's own report


@pytest.fixture(scope="module")
def metered_run(tiny_model_dir, tmp_path_factory):
    from s3ft.config import load_config
    from s3ft.pipeline import run_pipeline
    root = tmp_path_factory.mktemp("runreport")
    overrides = [f"model.name_or_path={tiny_model_dir}", "model.dtype=float32", f"output_dir={root / 'run'}",
                 "data.task=arithmetic", "data.train_limit=8", "data.test_limit=8", "methods=[sft, s3ft]",
                 "generation.max_new_tokens=12", "generation.batch_size=8", "train.epochs=1", "train.batch_size=4",
                 "train.max_length=256", "forgetting.enabled=true", "forgetting.text_limit=6",
                 "forgetting.prompts_limit=4", "forgetting.max_new_tokens=12", "forgetting.controls=[]",
                 "forgetting.benchmarks=[arc_easy]", "forgetting.benchmark_data_dir=builtin",
                 "forgetting.benchmark_limit=8"]
    return root / "run", run_pipeline(load_config(None, overrides))


def test_run_report_opens_with_each_method_against_sft(metered_run):
    run, summary = metered_run
    c = summary["contrasts"]["s3ft-sft"]
    models = summary["forgetting"]["models"]
    # the same items as the meter's per-method estimates: the contrast is their difference
    for key in ("drift/text_nll_delta", "drift/response_kl", "drift/response_nll_delta", "probe/arc_easy/accuracy",
                "probe/arc_easy/logp_correct"):
        assert c["measures"][key]["value"] == pytest.approx(models["s3ft"][key]["value"] - models["sft"][key]["value"],
                                                            abs=1e-9), key
    ind = c["measures"]["in_domain/accuracy"]
    assert ind["value"] == pytest.approx(summary["in_domain"]["s3ft"] - summary["in_domain"]["sft"])
    assert ind["items"] == 8 and c["verdict"]["status"] in ("supported", "contradicted", "unresolved")
    saved = json.loads((run / "summary.json").read_text())
    assert saved["contrasts"] == json.loads(json.dumps(summary["contrasts"]))
    lines = (run / "report.md").read_text().splitlines()
    assert lines[2].startswith("## At a glance: each method against SFT")
    assert lines[4].startswith("- s3ft − sft: in-domain ") and "Verdict: s3ft vs sft: " in lines[4]
    assert "arc_easy logp_correct" in lines[4]
    md = "\n".join(lines)
    # the forgetting table has the headline's measures; its legend explains the probe it ran, no absent controls
    assert "| model | in-domain acc % | text NLL Δ | response NLL Δ | response KL |" in md
    assert "Probe: accuracy Δ" in md and "control-untrained" not in md


def test_run_contrasts_read_the_run_directory_item_by_item(metered_run, tmp_path):
    """The tiny model selects gold for S3FT as for SFT (identical adapters): shift S3FT's drift rows by a known
    amount and the contrast moves by exactly that."""
    import shutil
    from s3ft.compare.run_contrasts import run_contrasts
    run, summary = metered_run
    copy = tmp_path / "run"
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns("adapters"))
    rows = [json.loads(x) for x in (copy / "forgetting" / "drift_s3ft.jsonl").read_text().splitlines()]
    for r in rows:
        r["kl"] += 0.25 * r["tokens"] if r["kind"] == "response" else 0.0
    _jsonl(copy / "forgetting" / "drift_s3ft.jsonl", rows[::-1])
    before = summary["contrasts"]["s3ft-sft"]["measures"]
    from s3ft.config import load_config
    got = run_contrasts(copy, load_config(copy / "config.json"), ["base", "sft", "s3ft"])["s3ft-sft"]
    assert got["measures"]["drift/response_kl"]["value"] == pytest.approx(
        before["drift/response_kl"]["value"] + 0.25)
    assert got["measures"]["drift/text_nll_delta"]["value"] == pytest.approx(before["drift/text_nll_delta"]["value"])
    assert not any(k.startswith("probe/") for k in got["measures"])  # no model given: the probe is left out
    assert got["verdict"]["status"] == "contradicted" and got["verdict"]["more_forgetting"] == ["drift/response_kl"]


# ----------------------------------------------------------------------------- model text in report.md


HOSTILE = "<script>alert('x')</script> | a | b\nsecond line"


def test_model_text_is_escaped_in_markdown_tables_and_lists():
    from s3ft.mdtext import md_table, md_text
    table = md_table(["model", "answer"], [["s3ft", HOSTILE]])
    row = table.splitlines()[2]
    assert "<script>" not in table and "&lt;script&gt;" in row
    assert row.count(" | ") == 1 and row.startswith("| s3ft | ") and "\\| a \\| b second line" in row
    assert md_text("a < b & c\r\nd") == "a &lt; b &amp; c d"


def test_compare_report_md_escapes_an_answer_in_the_judge_audit(toy):
    from s3ft.compare.report import render_markdown
    _, data = toy
    audit = {"primary_judge": "math", "second_judge": "exact", "seed": 0, "requested": 1, "population": 1, "n": 1,
             "counts": {"both_accept": 0, "primary_only": 1, "second_only": 0, "both_reject": 0},
             "agreement": 0.0, "agreement_ci95": [0.0, 0.8], "selected_in_sample": 0, "selected_also_accepted": 0,
             "disagreements": [{"kind": "answer", "id": "t1", "primary": True, "primary_reason": "ok | fine",
                                "second": False, "second_reason": "<b>no</b>", "text_tail": HOSTILE}]}
    md = render_markdown({**data, "judge_audit": {"seed0": audit}}, {})
    assert "<script>" not in md and "<b>" not in md and "&lt;script&gt;" in md
    item = next(line for line in md.splitlines() if line.startswith("- answer t1"))
    assert "second line" in item  # the answer's line break did not end the list item


def test_run_report_md_escapes_model_text(metered_run):
    from s3ft.report import render_markdown
    _, summary = metered_run
    s = {**summary, "gold_reasons_by_method": {"s3ft": {HOSTILE: 2}},
         "task_metrics": {"s3ft": {"note|<i>": "<img src=x onerror=alert(1)>"}}}
    md = render_markdown(s, summary["in_domain"]["base"])
    assert "<script>" not in md and "<img" not in md and "<i>" not in md
    assert "&lt;script&gt;" in md and "note\\|&lt;i&gt;" in md


# ----------------------------------------------------------------------------- plots


def _boxes(fig):
    renderer = fig.canvas.get_renderer()
    return [(t.get_text(), t.get_window_extent(renderer)) for ax in fig.axes for t in ax.texts]


def test_crowded_gain_vs_forgetting_labels_hide_no_point_and_no_other_label():
    from s3ft.compare.plots import gain_vs_forgetting_figure
    est = lambda v, w=0.01: {"value": v, "ci95": [v - w, v + w], "items": 40, "seeds": 1}  # noqa: E731
    # sft and ssr at the very same place (the overprint seen in a real report), the rest a hair apart
    spots = {"base": (0.0, None), "sft": (0.10, 0.05), "ssr": (0.10, 0.05), "sdft": (0.101, 0.051),
             "s3ft": (0.099, 0.049), "control-untrained": (0.0005, None), "control-planted": (0.102, None)}
    pooled = {m: {"drift/response_kl": est(x), "drift/text_nll_delta": est(x / 2),
                  **({"in_domain/accuracy": est(y)} if y is not None else {})} for m, (x, y) in spots.items()}
    fig = gain_vs_forgetting_figure({"pooled": pooled})
    fig.tight_layout()  # as the PNG is saved: the layout does not move the labels onto each other
    boxes = _boxes(fig)
    assert sorted(t for t, _ in boxes) == sorted(list(spots) * 2)
    for ax in fig.axes:
        texts = [(t.get_text(), t.get_window_extent(fig.canvas.get_renderer())) for t in ax.texts]
        points = [ax.transData.transform((t.xy[0], t.xy[1])) for t in ax.texts]
        for i, (name, box) in enumerate(texts):
            for other, box2 in texts[i + 1:]:
                assert not box.overlaps(box2), (name, other)
            for px, py in points:
                assert not box.contains(px, py), (name, px, py)


def test_no_general_benchmarks_no_average_drop_plot_and_no_link_to_it(toy):
    root, data = toy
    from s3ft.compare.plots import make_plots
    assert "tradeoff" not in make_plots(data)
    assert not (root / "out" / "plots" / "tradeoff.png").exists()
    md = (root / "out" / "report.md").read_text()
    assert "average general drop" not in md and "no data for this plot" not in md
    assert "plots/gain_vs_forgetting.png" in md


# ----------------------------------------------------------------------------- the default judge audit


def test_default_audit_is_said_to_be_absent_when_no_second_judge_grades_worked_answers(toy, tmp_path):
    root, _ = toy  # arithmetic: graded by `math`, whose worked answers `exact` would reject wholesale
    data = compare([root / "seed0"], None, tmp_path / "out", CompareOptions(nll=False, bootstrap_iters=200),
                   progress=lambda m: None)
    assert data["judge_audit"] == {}
    why = data["judge_audit_skipped"]["seed0"]
    assert why.startswith("No judge audit") and "--audit-judge llm" in why and "`math`" in why
    md = (tmp_path / "out" / "report.md").read_text()
    assert "## Judge audit" in md and "No judge audit" in md


def test_default_audit_judge_of_an_exact_task_accepts_a_worked_answer(tmp_path):
    from s3ft.compare.audit import audit_judge_for
    from s3ft.compare.runs import RunDir
    from s3ft.judges import get_judge
    for split in ("train", "test"):
        _jsonl(tmp_path / f"{split}.jsonl", [{"question": "What is 5 + 7?", "answer": "12"}])
    from s3ft.config import load_config
    config = load_config(None, ["model.name_or_path=toy", "data.task=jsonl", f"data.task_args.train={tmp_path}/train.jsonl",
                                f"data.task_args.test={tmp_path}/test.jsonl", "data.task_args.judge=exact"])
    run = RunDir(tmp_path, config, "r", ["base"])
    name, why = audit_judge_for(run, "auto")
    assert (name, why) == ("math", None)
    example, worked = {"gold": "12", "meta": {"answer": "12"}}, "5 + 7 = 12.\nThe answer is 12."
    assert get_judge(name).judge([example], [worked])[0].correct
    assert not get_judge("exact").judge([example], [worked])[0].correct  # what the old default did
    assert audit_judge_for(run, "exact") == ("exact", None)  # asked for by name: used as asked


def test_run_report_without_sft_says_there_is_nothing_to_contrast(metered_run):
    from s3ft.report import render_markdown
    _, summary = metered_run
    md = render_markdown({**summary, "contrasts": {}}, summary["in_domain"]["base"])
    assert "At a glance" not in md and "this run has no `sft`" in md.splitlines()[2]
