"""A strategy is one registration: what it needs, the sources it emits and its function. A toy
strategy registered in this file alone runs through selection, the run's report and `s3ft compare`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from s3ft.artifacts import read_jsonl
from s3ft.cli import app
from s3ft.config import load_config
from s3ft.errors import S3FTError
from s3ft.pipeline import run_pipeline
from s3ft.strategies import (STRATEGIES, Needs, Reason, Target, TrainingRecord, needs_paraphrase, register_strategy,
                             source_groups)


@pytest.fixture
def registered():
    """Register strategies for one test; unregistered afterwards, so other tests see only the built-in ones."""
    names: list[str] = []

    def register(name: str, fn, **declared):
        register_strategy(name, **declared)(fn)
        names.append(name)
    yield register
    for name in names:
        STRATEGIES.pop(name, None)


def row_number(rec: TrainingRecord) -> int:
    return int(rec.id.rsplit("-", 1)[-1])


def first_half(rec: TrainingRecord) -> Target:
    """Toy: the model's own answer on even rows (judged or not), gold on odd rows."""
    if row_number(rec) % 2 == 0:
        return Target(rec.answer.text, "toy", Reason("even row", rec.answer.reason))
    return Target(rec.gold, "gold", Reason("odd row"))


TOY = {"needs": Needs(own_answer=True), "sources": {"toy": "toy", "gold": "gold"}}


def test_a_toy_strategy_runs_through_selection_report_and_compare(registered, run_overrides, tmp_path):
    registered("first_half", first_half, **TOY)
    cfg = load_config(None, run_overrides + ["methods=[first_half]"])
    summary = run_pipeline(cfg)
    run = Path(cfg.output_dir)

    # selection: the toy's choice per row, its reasons as text, its kind counted in the stats
    answers = {g["id"]: g["text"] for g in read_jsonl(run / "answers.jsonl")}
    gold = {e["id"]: e["gold"] for e in read_jsonl(run / "data/train.jsonl")}
    rows = read_jsonl(run / "train_first_half.jsonl")
    assert len(rows) == 12
    for r in rows:
        even = int(r["id"].rsplit("-", 1)[-1]) % 2 == 0
        assert (r["source"], r["target"]) == (("toy", answers[r["id"]]) if even else ("gold", gold[r["id"]]))
        assert r["reason"].startswith("even row: ") if even else r["reason"] == "odd row"
    stats = json.loads((run / "train_first_half.stats.json").read_text())
    assert stats["target_mix"] == {"toy": 6, "gold": 6} and stats["gold_reasons"] == {"odd row": 6}
    assert not (run / "paraphrases.jsonl").exists()  # it declares no paraphrase need

    # the run's report: a target-mix column for the toy's display group, named by its label
    assert summary["target_mix"] == {"self": 0, "paraphrase": 0, "toy": 6, "gold": 6}
    md = (run / "report.md").read_text()
    assert "| method | self | paraphrase/rewrite | toy | gold |\n|---|---:|---:|---:|---:|\n| first_half | 0 | 0 | 6 | 6 |" in md
    assert "- **first_half**: odd row (6)" in md

    # `s3ft compare`: the same column, and the toy's targets as their own group of the NLL histogram
    out = tmp_path / "cmp"
    result = CliRunner().invoke(app, ["compare", str(run), "--no-general", "--no-forgetting", "--audit-size", "4",
                                      "--output", str(out)])
    assert result.exit_code == 0, result.output
    cmp_md = (out / "report.md").read_text()
    assert "| run | method | self | paraphrase/rewrite | toy | gold | rows |" in cmp_md
    assert "| run | first_half | 0 | 0 | 6 | 6 | 12 |" in cmp_md
    data = json.loads((out / "compare.json").read_text())
    assert list(data["logprob_histogram"]["run"]) == ["gold", "toy", "paraphrase", "own answer"]
    assert len(data["logprob_histogram"]["run"]["toy"]) == stats["target_mix"]["toy"]  # one per row
    assert set(data["per_run"]["run"]["first_half"]["nll"]["by_source"]) == {"toy", "gold"}


def test_unregistered_strategies_leave_the_built_in_groups():
    assert source_groups() == {"own answer": ["self"], "paraphrase": ["paraphrase", "rewrite"], "gold": ["gold"]}


def test_needs_paraphrase_follows_the_declared_need(registered):
    registered("rewrite_all", lambda rec: Target(rec.gold, "gold", Reason("gold")),
               needs=Needs(own_answer=False, paraphrase="every_row"), sources={"gold": "gold"})
    registered("fix_failures", lambda rec: Target(rec.gold, "gold", Reason("gold")),
               needs=Needs(paraphrase="failed_rows"), sources={"gold": "gold"})
    assert needs_paraphrase(["sft", "rewrite_all"], answer_correct=True)
    assert needs_paraphrase(["fix_failures"], answer_correct=False)
    assert not needs_paraphrase(["fix_failures", "ssr"], answer_correct=True)
    with pytest.raises(S3FTError, match="methods: unknown strategy 'nope'"):
        needs_paraphrase(["nope"], answer_correct=True)


def test_a_strategy_may_emit_only_its_declared_sources(registered):
    registered("sloppy", lambda rec: Target(rec.gold, "memo", Reason("gold")), sources={"gold": "gold"})
    rec = TrainingRecord.from_dict({"id": "r-1", "gold": "4", "answer": {"text": "5", "correct": False,
                                                                        "reason": "wrong answer"}})
    with pytest.raises(S3FTError, match="strategy 'sloppy': emitted source 'memo', which it does not declare"):
        STRATEGIES["sloppy"](rec)
    registered("stringly", lambda rec: (rec.gold, "gold", "gold"), sources={"gold": "gold"})
    with pytest.raises(S3FTError, match="strategy 'stringly': returned .* not a Target"):
        STRATEGIES["stringly"](rec)


def test_registration_refuses_bad_declarations(registered):
    with pytest.raises(S3FTError, match="source 'rewrite' in group 'rewrites', but strategy 'sdft' counts it in "
                                        "'paraphrase'"):
        registered("clash", first_half, sources={"rewrite": "rewrites"})
    with pytest.raises(S3FTError, match="needs.paraphrase must be one of none, failed_rows, every_row"):
        registered("typo", first_half, needs=Needs(paraphrase="failed"), sources={"gold": "gold"})
    assert not {"clash", "typo"} & set(STRATEGIES)


def legacy_kind(reason: str) -> str:
    """How selection statistics grouped reasons before reasons carried their kind (parsing the text)."""
    head = reason.split(":")
    return ":".join(head[:2]).strip() if head[0].endswith("rejected") else head[0]


@pytest.mark.parametrize("why", [
    "wrong answer (boxed): 12 != 10", "no final answer found", "truncated: hit max_new_tokens",
    "filtered: too short: 3 words vs 12 in the gold answer", "filtered: mentions the reference ('reference answer')",
    "judged incorrect by llm: 'off by one: 11'", "syntax error: ", "exception: ", "no paraphrase", "no rewrite",
    "", " ", "padded :x", "a\nb: c\n", "killed: SIGKILL"])
@pytest.mark.parametrize("tier", ["own answer", "paraphrase", "rewrite"])
def test_a_rejection_keeps_its_text_and_the_kind_statistics_counted(tier, why):
    reason = Reason.rejected(tier, why)
    assert reason == f"{tier} rejected: {why}" and json.dumps(reason) == json.dumps(f"{tier} rejected: {why}")
    assert reason.kind == legacy_kind(reason)
