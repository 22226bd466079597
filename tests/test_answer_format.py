"""One answer format for math targets (task_args.canonical_answer): canonical gold lines,
paraphrases accepted only with an explicit final-answer statement, and the answer-format mix
of each method's targets in the selection stats and the report."""

import json
from pathlib import Path

import pytest

from s3ft.artifacts import read_jsonl
from s3ft.backends import Generation, register_backend
from s3ft.config import DataConfig, load_config
from s3ft.errors import S3FTError
from s3ft.judges import get_judge
from s3ft.pipeline import run_pipeline
from s3ft.report import answer_format_table
from s3ft.tasks import get_task
from s3ft.tasks._math import answer_format, canonical_gold


def test_answer_format_names_the_explicit_statement_or_none():
    assert answer_format("2 + 3 = 5.\nThe answer is 5.") == "answer is"
    assert answer_format("2 + 3 = 5\n#### 5") == "####"
    assert answer_format("So we get $\\boxed{5}$.") == "boxed"
    assert answer_format("Adding 2 and 3 leaves 5") == "none"  # the judge's last-number fallback
    assert answer_format("no numbers at all") == "none"


def test_canonical_gold_replaces_the_hash_line():
    assert canonical_gold("Half of 48 is 24.\n#### 24", "24") == "Half of 48 is 24.\nThe answer is 24."
    assert canonical_gold("It costs 1,200 dollars.\n#### 1,200", "1200") == "It costs 1,200 dollars.\nThe answer is 1200."
    assert canonical_gold("No final line here.", "7") == "No final line here.\nThe answer is 7."


def test_gold_keeps_hash_line_by_default_and_gets_the_canonical_line_on_request():
    plain = get_task(DataConfig(task="arithmetic", train_limit=20)).load("train")
    canon = get_task(DataConfig(task="arithmetic", train_limit=20, task_args={"canonical_answer": True})).load("train")
    assert [e.id for e in plain] == [e.id for e in canon]
    judge = get_judge("math")
    for p, c in zip(plain, canon):
        assert answer_format(p.gold) == "####" and answer_format(c.gold) == "answer is"
        assert c.gold == p.gold.rsplit("\n####", 1)[0] + f"\nThe answer is {p.meta['answer']}."
        assert judge.judge([c.to_dict()], [c.gold])[0].correct


def test_canonical_answer_must_be_a_boolean():
    with pytest.raises(S3FTError, match="data.task_args.canonical_answer: expected bool"):
        get_task(DataConfig(task="gsm8k", task_args={"canonical_answer": "yes"}))


@register_backend("scripted-formats")
class ScriptedFormatsBackend:
    """Row n: own answer right (in \\boxed{}) for n % 3 == 0, else wrong; paraphrase right with
    "The answer is N." for n % 3 == 1, right only by its last number for n % 3 == 2."""

    def __init__(self, model_path, model_cfg, gen_cfg, adapter=None):
        self.answers = {e.id: e.meta["answer"] for e in get_task(DataConfig(task="arithmetic")).load("train")}

    def generate(self, requests, max_new_tokens, stop=(), stop_regex=None):
        for r in requests:
            n, a = int(r.id.rsplit("-", 1)[-1]), self.answers.get(r.id, "0")
            steps = " First I add up what there was, then I take away what was used, step by step,"
            if not r.prefill:
                text = f"{steps} so the total is \\boxed{{{a}}}." if n % 3 == 0 else "The answer is -1."
            elif n % 3 == 1:
                text = f"{steps} and the result is {a}.\nThe answer is {a}."
            else:
                text = f"{steps} which leaves {a}"
            yield [Generation(r.id, text, "stop", 10, 20)]

    def close(self):
        pass


def selection(run_overrides, *extra):
    cfg = load_config(None, run_overrides + ["generation.backend=scripted-formats", "methods=[sft, s3ft]", *extra])
    run_pipeline(cfg, until="select")
    run = Path(cfg.output_dir)
    return run, {m: json.loads((run / f"train_{m}.stats.json").read_text()) for m in ("sft", "s3ft")}


def n_of(row: dict) -> int:
    return int(row["id"].rsplit("-", 1)[-1])


def test_default_accepts_last_number_paraphrases_and_reports_the_format_mix(run_overrides):
    run, stats = selection(run_overrides)
    rows = read_jsonl(run / "train_s3ft.jsonl")
    assert {r["id"]: r["source"] for r in rows} == {r["id"]: "self" if n_of(r) % 3 == 0 else "paraphrase" for r in rows}
    s3ft = stats["s3ft"]
    assert s3ft["answer_formats_by_source"]["self"] == {"boxed": sum(n_of(r) % 3 == 0 for r in rows)}
    assert s3ft["answer_formats_by_source"]["paraphrase"] == {"answer is": sum(n_of(r) % 3 == 1 for r in rows),
                                                               "none": sum(n_of(r) % 3 == 2 for r in rows)}
    assert sum(s3ft["answer_formats"].values()) == len(rows)
    assert stats["sft"]["answer_formats"] == {"####": len(rows)}
    inputs = json.loads((run / "paraphrases_verdicts.meta.json").read_text())["inputs"]
    assert "target_rule" not in inputs["prefilter"]  # the default keeps earlier runs' fingerprints


def test_canonical_answer_rejects_paraphrases_without_a_statement_and_unifies_gold(run_overrides):
    run, stats = selection(run_overrides, "data.task_args={canonical_answer: true}")
    rows = read_jsonl(run / "train_s3ft.jsonl")
    expected = {0: "self", 1: "paraphrase", 2: "gold"}
    assert {r["id"]: r["source"] for r in rows} == {r["id"]: expected[n_of(r) % 3] for r in rows}
    assert {r["reason"] for r in rows if r["source"] == "gold"} == \
        {"paraphrase rejected: filtered: no explicit final-answer statement"}
    by_source = stats["s3ft"]["answer_formats_by_source"]
    assert set(by_source["paraphrase"]) == {"answer is"} and set(by_source["gold"]) == {"answer is"}
    assert stats["sft"]["answer_formats"] == {"answer is": len(rows)}
    assert all(r["target"].endswith(".") and "####" not in r["target"] for r in read_jsonl(run / "train_sft.jsonl"))


def test_report_table_has_a_row_per_method_and_source():
    table = answer_format_table({"s3ft": {"self": {"boxed": 3}, "paraphrase": {"none": 2, "answer is": 1}},
                                 "sft": {"gold": {"####": 6}}})
    assert table[0] == "| method | target | answer is | #### | boxed | none |"
    assert table[2:] == ["| s3ft | self | 0 | 0 | 3 | 0 |", "| s3ft | paraphrase | 1 | 0 | 0 | 2 |",
                         "| sft | gold | 0 | 6 | 0 | 0 |"]


def test_report_has_the_format_table_only_when_a_task_reports_formats():
    from s3ft.report import render_markdown
    s = {"task": "arithmetic", "model": "m", "in_domain": {"base": 0.5}, "in_domain_ci95": {"base": [0.2, 0.8]},
         "in_domain_n": {"base": 8}, "target_mix_by_method": {}, "gold_reasons_by_method": {},
         "cost": {"stages": {}, "total_wall_s": 1.0}}
    assert "## Answer formats" not in render_markdown(s, 0.5)
    md = render_markdown({**s, "answer_formats_by_method": {"sft": {"gold": {"####": 8}}}}, 0.5)
    assert "## Answer formats of the training targets" in md and "| sft | gold | 8 |" in md
