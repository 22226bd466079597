"""Natural Questions (open): the seeded offline split and its record, the NQ-open exact-match
judge, short-answer prompts, and the task through the pipeline (scripted and tiny model)."""

import json
from pathlib import Path

import pytest

from s3ft.artifacts import read_jsonl
from s3ft.backends import Generation, register_backend, trim
from s3ft.config import DataConfig, load_config
from s3ft.errors import S3FTError
from s3ft.judges import get_judge
from s3ft.pipeline import run_pipeline
from s3ft.strategies import paraphrase_problem
from s3ft.tasks import get_task
from s3ft.tasks.nq_open import split_lines


def nq_row(i: int) -> dict:
    return {"question": f"who was the {i}th person on the moon", "answer": [f"The Person {i}", f"P. {i}"]}


@pytest.fixture
def nq_dir(tmp_path) -> Path:
    root = tmp_path / "data"
    (root / "nq_open").mkdir(parents=True)
    (root / "nq_open" / "validation.jsonl").write_text("".join(json.dumps(nq_row(i)) + "\n" for i in range(1, 21)))
    return root


def nq_task(data_dir, **args):
    return get_task(DataConfig(task="nq_open", data_dir=str(data_dir), task_args=args))


def test_offline_split_is_disjoint_seeded_and_sized(nq_dir):
    task = nq_task(nq_dir, train_size=10, test_size=5)
    train, test = task.load("train"), task.load("test")
    assert (len(train), len(test)) == (10, 5)
    assert not {e.id for e in train} & {e.id for e in test}
    assert not {e.question for e in train} & {e.question for e in test}
    again = nq_task(nq_dir, train_size=10, test_size=5)
    assert [e.id for e in again.load("test")] == [e.id for e in test]
    other = nq_task(nq_dir, train_size=10, test_size=5, split_seed=1)
    assert [e.id for e in other.load("test")] != [e.id for e in test]
    # train_size unset: every row not in test
    assert len(nq_task(nq_dir, test_size=5).load("train")) == 15
    # the id names the file line the row came from
    ex = train[0]
    line = int(ex.id.removeprefix("nq-val-"))
    assert ex.question == nq_row(line)["question"] + "?"
    assert ex.gold == f"The Person {line}" and ex.meta == {"answers": [f"The Person {line}", f"P. {line}"],
                                                           "answerable": True}


def test_split_lines_covers_each_row_at_most_once():
    train, test = split_lines(100, None, 30, "s")
    assert len(test) == 30 and len(train) == 70 and sorted(train + test) == list(range(100))
    with pytest.raises(ValueError):
        split_lines(100, 71, 30, "s")


def test_split_larger_than_the_file_is_an_error(nq_dir):
    with pytest.raises(S3FTError, match=r"16 train \+ 5 test rows does not fit .*validation.jsonl \(20 rows"):
        nq_task(nq_dir, train_size=16, test_size=5).load("train")
    with pytest.raises(S3FTError, match=r"20 test rows"):
        nq_task(nq_dir, test_size=20).load("test")  # nothing left to train on
    with pytest.raises(S3FTError, match="test_size: must be a positive whole number"):
        nq_task(nq_dir, test_size=0)
    with pytest.raises(S3FTError, match=r"data.task_args.n_test: not an option of task 'nq_open' \(known: train_size, test_size, split_seed\)"):
        nq_task(nq_dir, n_test=5)
    with pytest.raises(S3FTError, match="local file only"):
        get_task(DataConfig(task="nq_open", task_args={"test_size": 5}))


def test_bad_answer_field_names_file_and_line(tmp_path):
    (tmp_path / "nq_open").mkdir()
    rows = [nq_row(1), {"question": "q", "answer": "not a list"}, nq_row(3)]
    (tmp_path / "nq_open" / "validation.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    task = nq_task(tmp_path, train_size=2, test_size=1)
    with pytest.raises(S3FTError, match=r"validation.jsonl:2: field 'answer' must be a list of strings"):
        task.load("train") + task.load("test")


def test_exact_match_normalises_and_accepts_any_gold():
    judge = get_judge("nq_em")
    ex = {"gold": "14 December 1972 UTC", "meta": {"answers": ["14 December 1972 UTC", "December 1972", "The Moon"]}}
    cases = {"December 1972": True, "december, 1972.": True, "Moon": True, "an   moon!": True,
             "The answer is December 1972.": True, "Answer: the moon": True, "December 1972\nThat was Apollo 17.": True,
             "1972": False, "It was in December 1972, I think": False, "Mars": False, "": False}
    got = {r: v.correct for r, v in zip(cases, judge.judge([ex] * len(cases), list(cases)))}
    assert got == cases
    v = judge.judge([ex], ["december 1972"])[0]
    assert v.reason == "exact match of 'December 1972'" and v.extracted == "december 1972"
    assert not judge.judge([{"gold": "", "meta": {"answers": ["  "]}}], ["x"])[0].correct


def test_prompts_ask_for_a_short_phrase_and_short_paraphrases_pass_the_filter(nq_dir):
    task = nq_task(nq_dir, train_size=10, test_size=5)
    ex = task.load("train")[0]
    user = task.messages(ex)[-1]["content"]
    assert user.startswith(ex.question) and "short phrase only" in user
    para = task.paraphrase_messages(ex)
    assert "short phrase only" in para[0]["content"] and f"Reference answer:\n{ex.gold}" in para[1]["content"]
    # generation ends with the first non-empty line: what follows a right phrase is not kept
    assert trim("\nJack Lord\n\nJack Lord was born in 1850.", "length", (), task.answer_complete) == \
        ("\nJack Lord", "stop")
    ratio, min_words = task.paraphrase_limits
    assert paraphrase_problem("P. 3", ex.gold, "P. 3", task.reference_phrases, ratio, min_words) is None
    assert paraphrase_problem("The reference answer: P. 3", ex.gold, "", task.reference_phrases, ratio, min_words)


@register_backend("scripted-nq")
class ScriptedNQBackend:
    """Row line n: own answer right for even n; the paraphrase right (another alias) for n % 3 == 0."""
    def __init__(self, model_path, model_cfg, gen_cfg, adapter=None):
        pass

    def generate(self, requests, max_new_tokens, stop=(), stop_regex=None):
        for r in requests:
            n = int(r.id.removeprefix("nq-val-"))
            para = "Reference answer" in r.messages[-1]["content"]
            ok = n % 3 == 0 if para else n % 2 == 0
            text = (f"p. {n}" if para else f"The person {n}.") if ok else "Nobody"
            yield [Generation(r.id, text, "stop", 5, 3)]

    def close(self):
        pass


def test_tiers_and_split_record_through_the_pipeline(run_overrides, nq_dir):
    cfg = load_config(None, run_overrides + [
        "generation.backend=scripted-nq", "methods=[s3ft]", "data.task=nq_open", f"data.data_dir={nq_dir}",
        "data.task_args={train_size: 12, test_size: 6}"])
    run_pipeline(cfg, until="select")
    run = Path(cfg.output_dir)
    rows = read_jsonl(run / "train_s3ft.jsonl")
    line = lambda r: int(r["id"].removeprefix("nq-val-"))
    assert {r["id"]: r["source"] for r in rows} == {
        r["id"]: "self" if line(r) % 2 == 0 else "paraphrase" if line(r) % 3 == 0 else "gold" for r in rows}
    assert {r["source"] for r in rows} == {"self", "paraphrase", "gold"}
    split = json.loads((run / "data" / "split.json").read_text())
    assert split["rows"] == 20 and split["split_seed"] == 0 and split["source"].endswith("nq_open/validation.jsonl")
    assert len(split["train_lines"]) == 12 and len(split["test_lines"]) == 6
    assert not set(split["train_lines"]) & set(split["test_lines"])
    assert {line(r) for r in rows} <= set(split["train_lines"])  # train_limit samples from the train part
    assert {int(e["id"].removeprefix("nq-val-")) for e in read_jsonl(run / "data" / "test.jsonl")} <= \
        set(split["test_lines"])
    assert "answer_formats" not in json.loads((run / "train_s3ft.stats.json").read_text())


def test_smoke_config_runs_on_the_tiny_model(run_overrides, nq_dir, tmp_path):
    """The shipped config, with the tiny model: every stage through the report."""
    cfg = load_config(Path(__file__).parents[1] / "configs" / "nq_open-smollm2.yaml", run_overrides + [
        "data.task=nq_open", f"data.data_dir={nq_dir}", "data.task_args={train_size: 12, test_size: 6}",
        "data.train_limit=4", "data.test_limit=4", "methods=[sft, s3ft]"])
    summary = run_pipeline(cfg)
    assert set(summary["in_domain"]) == {"base", "sft", "s3ft"} and summary["in_domain_n"]["base"] == 4
    assert sum(summary["target_mix"].values()) == 4
    assert (Path(cfg.output_dir) / "data" / "split.json").is_file()


def test_listed_and_the_llm_judge_sees_every_gold_answer(nq_dir):
    from s3ft.judges.llm import judge_messages
    from s3ft.tasks import task_names
    assert "nq_open" in task_names()
    ex = nq_task(nq_dir, train_size=10, test_size=5).load("test")[0]
    user = judge_messages(ex.to_dict(), "P. 1")[-1]["content"]
    assert f"Reference answer:\n{ex.gold}\n(also accepted: {ex.meta['answers'][1]})" in user
