"""Specification of the Python API: what `import s3ft` exports, `s3ft.run`, `s3ft.select`."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import s3ft
from s3ft.api import config_of


def test_import_s3ft_exports_the_documented_names_without_loading_torch():
    code = ("import sys, s3ft; names = [getattr(s3ft, n) for n in s3ft.__all__]; "
            "print(sorted(s3ft.__all__)); print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.splitlines()
    assert {"load_config", "run", "select", "RunConfig", "TrainingRecord", "Target"} <= set(eval(out[0]))
    assert out[1] == "False"  # torch loads when a run loads a model, not with `import s3ft`
    for name in ("load_config", "run", "select"):
        assert getattr(s3ft, name).__doc__, f"s3ft.{name} has no docstring"
    with pytest.raises(AttributeError):
        s3ft.no_such_name


def test_keyword_overrides_set_the_keys_they_name_and_keep_the_others(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("methods: [sft]\ntrain:\n  lora_r: 4\n  epochs: 3\n")
    cfg = config_of(p, ["data.train_limit=16"], output_dir="runs/x", train={"lora_r": 16},
                    methods=["sft", "ssr"])
    assert (cfg.train.lora_r, cfg.train.epochs, cfg.data.train_limit) == (16, 3.0, 16)
    assert cfg.output_dir == "runs/x" and cfg.methods == ["sft", "ssr"]
    again = config_of(cfg, generation={"max_new_tokens": 64})  # a RunConfig in, the same plus the override out
    assert again.train.lora_r == 16 and again.generation.max_new_tokens == 64
    with pytest.raises(s3ft.S3FTError, match=r"--set: train: unknown key 'lora_rank'"):
        config_of(p, train={"lora_rank": 8})


def test_run_on_the_tiny_model_returns_the_summary_it_writes(run_overrides, tmp_path):
    summary = s3ft.run({"data": {"task": "arithmetic"}}, run_overrides, methods=["sft", "s3ft"],
                       output_dir=str(tmp_path / "api-run"))
    written = json.loads((tmp_path / "api-run" / "summary.json").read_text())
    assert set(summary["in_domain"]) == {"base", "sft", "s3ft"} == set(written["in_domain"])
    assert summary["in_domain"] == written["in_domain"]
    assert sum(summary["target_mix_by_method"]["s3ft"].values()) == 12  # data.train_limit=12
    assert s3ft.run(None, run_overrides, until="select",
                    output_dir=str(tmp_path / "api-early")) == {}
    assert (tmp_path / "api-early" / "train_s3ft.jsonl").exists()


RECORDS = [
    {"id": "a", "question": "2+2?", "gold": "4", "answer": {"text": "It is 4.", "correct": True, "reason": "match"}},
    {"id": "b", "gold": "6", "answer": {"text": "5", "correct": False, "reason": "wrong answer: 5 != 6"},
     "paraphrase": {"text": "Three and three make 6.", "correct": True, "reason": "match"}},
    {"id": "c", "gold": "8", "answer": {"text": "9", "correct": False},
     "paraphrase": {"text": "9", "correct": False, "reason": "wrong answer: 9 != 8"}},
]


@pytest.mark.parametrize("method,expected", [
    ("sft", [("4", "gold"), ("6", "gold"), ("8", "gold")]),
    ("ssr", [("It is 4.", "self"), ("6", "gold"), ("8", "gold")]),
    ("s3ft", [("It is 4.", "self"), ("Three and three make 6.", "paraphrase"), ("8", "gold")]),
])
def test_select_on_records_takes_each_strategys_tiers(method, expected):
    rows = s3ft.select(RECORDS, method=method)
    assert [(r["target"], r["source"]) for r in rows] == expected
    assert [r["id"] for r in rows] == ["a", "b", "c"]
    if method == "s3ft":
        assert rows[2]["reason"] == "paraphrase rejected: wrong answer: 9 != 8"


def test_select_takes_typed_records_too():
    rec = s3ft.TrainingRecord("r1", "10", s3ft.Judged("ten", False, "wrong answer"),
                              s3ft.Judged("Five and five: 10.", True, "match"))
    assert s3ft.select([rec], method="s3ft") == [
        {"id": "r1", "target": "Five and five: 10.", "source": "paraphrase", "reason": "match"}]


def test_select_on_a_dataset_adds_target_columns():
    import datasets
    ds = datasets.Dataset.from_list([{**r, "paraphrase": r.get("paraphrase")} for r in RECORDS])
    out = s3ft.select(ds, method="s3ft")
    assert isinstance(out, datasets.Dataset) and len(out) == 3
    assert out["source"] == ["self", "paraphrase", "gold"]
    assert out["target"] == ["It is 4.", "Three and three make 6.", "8"]
    assert out["question"][0] == "2+2?"  # the dataset's own columns stay


@pytest.mark.parametrize("records,method,message", [
    ([{"id": "x", "answer": {"text": "1", "correct": True}}], "s3ft", r"records\[0\]: no 'gold'"),
    ([{"gold": "1", "answer": "1"}], "ssr", r"records\[0\]\.answer: expected a mapping with 'text' and 'correct'"),
    (RECORDS, "opsd", r"method 'opsd': chooses no targets"),
    (RECORDS, "magic", r"unknown strategy 'magic'"),
])
def test_select_errors_name_the_row_and_key(records, method, message):
    with pytest.raises(s3ft.S3FTError, match=message):
        s3ft.select(records, method=method)
