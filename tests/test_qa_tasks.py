"""SQuAD 2.0 / unanswerable tasks and the `qa` judge: split by article, prompts, judge edge
cases, abstention metrics, and the S3FT target mix through the pipeline."""

import json
import os
from pathlib import Path

import pytest

from s3ft.artifacts import read_jsonl
from s3ft.backends import Generation, register_backend
from s3ft.config import DataConfig, load_config
from s3ft.errors import S3FTError
from s3ft.judges import get_judge
from s3ft.judges.qa import QAJudge, abstains, f1_score, normalize
from s3ft.pipeline import Run, run_pipeline, stage_data, stage_evaluate
from s3ft.strategies import paraphrase_problem
from s3ft.tasks import get_task
from s3ft.tasks.unanswerable import abstention_metrics

TITLES = ["Normans", "Amazon", "Oxygen", "Victoria", "Rhine"]


@pytest.fixture
def squad_dir(tmp_path) -> Path:
    """5 articles x 4 questions (2 answerable, 2 not), in the hub schema."""
    root = tmp_path / "data"
    (root / "squad_v2").mkdir(parents=True)
    with open(root / "squad_v2" / "validation.jsonl", "w") as f:
        for t, title in enumerate(TITLES):
            context = f"The {title} article says that the number of this article is {t} and its colour is blue."
            for q in range(4):
                ok = q < 2
                answers = ({"text": [str(t), f"{t}", "number " + str(t)], "answer_start": [1, 1, 1]} if q == 0 else
                           {"text": ["blue"], "answer_start": [1]} if q == 1 else {"text": [], "answer_start": []})
                question = (f"What is the number of the {title} article?" if q == 0 else
                            f"What colour is the {title} article?" if q == 1 else f"Who wrote the {title} article {q}?")
                f.write(json.dumps({"id": f"{title}-{q}", "title": title, "context": context,
                                    "question": question, "answers": answers}) + "\n")
                assert ok == bool(answers["text"])
    return root


def test_squad_loads_and_splits_by_title(squad_dir):
    task = get_task(DataConfig(task="squad_v2", data_dir=str(squad_dir)))
    train, test = task.load("train"), task.load("test")
    assert len(train) + len(test) == 20 and len(test) >= 4
    assert not {e.meta["title"] for e in train} & {e.meta["title"] for e in test}
    ex = next(e for e in train + test if e.id == "squad-Normans-0")
    assert ex.question.startswith("Context:\nThe Normans article says") and "Question: What is the number" in ex.question
    assert ex.gold == "0" and ex.meta["answers"] == ["0", "number 0"] and ex.meta["answerable"]
    unans = next(e for e in train + test if e.id == "squad-Normans-2")
    assert unans.gold == "unanswerable" and unans.meta == {"answers": [], "answerable": False, "title": "Normans"}
    user = task.messages(ex)[-1]["content"]
    assert "Context:" in user and 'reply exactly "unanswerable"' in user
    assert "Reference answer:\n0" in task.paraphrase_messages(ex)[1]["content"]
    # another split seed gives another split; the same seed, the same one
    again = get_task(DataConfig(task="squad_v2", data_dir=str(squad_dir))).load("test")
    assert [e.id for e in again] == [e.id for e in test]
    with pytest.raises(S3FTError, match="data.task_args.test_frac: not an option of task"):
        get_task(DataConfig(task="squad_v2", data_dir=str(squad_dir), task_args={"test_frac": 0.5}))


def test_real_squad_split_has_no_title_on_both_sides():
    data = Path(os.environ.get("S3FT_DATA_DIR") or Path(__file__).parents[2] / "shared" / "data")
    assert (data / "squad_v2" / "validation.jsonl").exists(), (
        f"{data / 'squad_v2' / 'validation.jsonl'} is missing: set S3FT_DATA_DIR to the offline data directory")
    task = get_task(DataConfig(task="unanswerable", data_dir=str(data)))
    train, test = task.load("train"), task.load("test")
    tr_titles, te_titles = {e.meta["title"] for e in train}, {e.meta["title"] for e in test}
    assert not tr_titles & te_titles and len(tr_titles | te_titles) == 13
    assert 0.2 <= len(test) / (len(train) + len(test)) < 0.4
    assert {e.meta["answerable"] for e in test} == {True, False}


def test_normalisation_and_f1():
    assert normalize("The  Eiffel Tower!") == "eiffel tower"
    assert normalize("An apple, a pear.") == "apple pear"
    assert f1_score("10th and 11th", "10th and 11th centuries") == pytest.approx(2 * 0.75 / 1.75)
    assert f1_score("nothing", "France") == 0.0


def ex(answers, answerable=None):
    return {"id": "x", "gold": answers[0] if answers else "unanswerable",
            "meta": {"answers": answers, "answerable": bool(answers) if answerable is None else answerable}}


def test_qa_judge_answerable():
    j = get_judge("qa")
    gold = ex(["10th and 11th centuries", "in the 10th and 11th centuries"])
    cases = {
        "The 10th and 11th Centuries.": (True, "exact match"),
        "Answer: in the 10th and 11th centuries\nBecause the text says so.": (True, "exact match"),
        "10th and 11th": (True, "f1 0.86 >= 0.5"),
        "the 10th century": (False, "wrong answer: f1 0.33 < 0.5 (gold '10th and 11th centuries')"),
        "unanswerable": (False, "abstained on an answerable question"),
        "The context does not mention when.": (False, "abstained on an answerable question"),
        "": (False, "empty response"),
    }
    for resp, (ok, reason) in cases.items():
        v = j.judge([gold], [resp])[0]
        assert (v.correct, v.reason) == (ok, reason), (resp, v)
    assert not QAJudge(f1_threshold=0.9).judge([gold], ["10th and 11th"])[0].correct
    # a short sentence containing the answer counts; a long one that merely mentions it does not
    france = ex(["France"])
    v = j.judge([france], ["Normandy is located in France."])[0]
    assert v.correct and v.reason == "short answer contains gold 'France'"
    long = "Normandy is a region that has been ruled by many, including England, Germany, Spain and France over time."
    assert not j.judge([france], [long])[0].correct
    v = j.judge([ex(["Dublin"])], ["D'Olier Street in Cork City, not D'Olier Street in Dublin."])[0]
    assert not v.correct and v.reason.startswith("wrong answer"), v  # seen from SmolLM2 on SQuAD
    v = j.judge([ex(["Afrikaans"])], ['The answer to the question is: "Afrikaans"\nIt is spoken there.'])[0]
    assert (v.correct, v.reason, v.extracted) == (True, "exact match", '"Afrikaans"')


def test_qa_judge_unanswerable():
    j = get_judge("qa")
    q = ex([])
    for resp in ["unanswerable", "Unanswerable.", "This question cannot be answered from the context.",
                 "The passage does not mention who wrote it.", "It is not mentioned in the context.",
                 "There is no answer in the text.", "I don't know."]:
        v = j.judge([q], [resp])[0]
        assert v.correct and v.reason == "abstained on an unanswerable question", (resp, v)
    v = j.judge([q], ["William the Conqueror"])[0]
    assert (v.correct, v.reason) == (False, "answered an unanswerable question")
    assert not abstains("France") and not abstains("The Normans gave their name to Normandy.")


def test_short_qa_paraphrase_survives_the_filter(squad_dir):
    task = get_task(DataConfig(task="squad_v2", data_dir=str(squad_dir)))
    ratio, min_words = task.paraphrase_limits
    for text, gold in (("France.", "France"), ("Unanswerable", "unanswerable")):
        assert paraphrase_problem(text, gold, task.final_answer_line(text), task.reference_phrases,
                                  ratio, min_words) is None
    text = "The reference answer says France."
    assert paraphrase_problem(text, "France", text, task.reference_phrases, ratio, min_words)


def test_abstention_metrics():
    # 4 unanswerable (abstains on 3), 4 answerable (abstains on 1, answers 2 of the other 3 right)
    exs = [ex([])] * 4 + [ex(["blue"])] * 4
    responses = ["unanswerable"] * 3 + ["blue"] + ["unanswerable", "blue", "Blue.", "red"]
    verdicts = [v.to_dict() for v in get_judge("qa").judge(exs, responses)]
    m = abstention_metrics(exs, verdicts, responses)
    assert m["accuracy"] == 5 / 8 and m["answer_accuracy"] == 2 / 4
    assert m["abstention_precision"] == 3 / 4 and m["abstention_recall"] == 3 / 4
    assert m["abstention_f1"] == pytest.approx(0.75) and m["abstain_rate"] == 0.5
    assert (m["n"], m["n_answerable"], m["n_unanswerable"], m["n_abstained"]) == (8, 4, 4, 4)
    none = abstention_metrics(exs[4:], verdicts[4:], ["red"] * 4)
    assert none["abstention_precision"] is None and none["abstention_recall"] is None and none["abstention_f1"] is None
    with pytest.raises(ValueError):
        abstention_metrics(exs, verdicts[:2], responses)


# --- through the pipeline -------------------------------------------------------------
@register_backend("scripted-qa")
class ScriptedQABackend:
    """plan[id]: 'self' -> the answer is right; 'paraphrase' -> the answer is wrong, the
    paraphrase right; 'gold' -> both wrong. Wrong = abstaining on an answerable question,
    answering an unanswerable one."""
    plan: dict = {}
    gold: dict = {}

    def __init__(self, model_path, model_cfg, gen_cfg, adapter=None):
        pass

    def generate(self, requests, max_new_tokens, stop=(), stop_regex=None):
        for r in requests:
            tier, gold = self.plan.get(r.id, "self"), self.gold[r.id]
            right = "The context does not say." if gold == "unanswerable" else f"It is {gold}."
            wrong = "Paris" if gold == "unanswerable" else "unanswerable"
            ok = tier == ("paraphrase" if r.prefill or "Reference answer" in r.messages[-1]["content"] else "self")
            yield [Generation(r.id, right if ok else wrong, "stop", 10, 5)]

    def close(self):
        pass


@pytest.mark.parametrize("task", ["squad_v2", "unanswerable"])
def test_qa_selection_tiers_through_the_pipeline(run_overrides, squad_dir, task):
    cfg = load_config(None, run_overrides + ["generation.backend=scripted-qa", "methods=[s3ft]",
                                             f"data.task={task}", f"data.data_dir={squad_dir}"])
    train = get_task(cfg.data).load("train")
    ScriptedQABackend.gold = {e.id: e.gold for e in get_task(cfg.data).load("train") + get_task(cfg.data).load("test")}
    ScriptedQABackend.plan = {e.id: ("self", "paraphrase", "gold")[i % 3] for i, e in enumerate(train)}
    run_pipeline(cfg, until="select")
    run = Path(cfg.output_dir)
    rows = read_jsonl(run / "train_s3ft.jsonl")
    assert {r["id"]: r["source"] for r in rows} == ScriptedQABackend.plan
    assert {r["source"] for r in rows} == {"self", "paraphrase", "gold"}
    reasons = {r["reason"] for r in rows if r["source"] == "gold"}
    assert reasons <= {"paraphrase rejected: abstained on an answerable question",
                       "paraphrase rejected: answered an unanswerable question"}, reasons
    # evaluation of the base model: abstention metrics for the unanswerable task only
    r = Run(cfg)
    metrics = stage_evaluate(r, "base", stage_data(r)["test"], None)
    assert metrics["accuracy"] == 1.0
    saved = json.loads((run / "eval" / "base.metrics.json").read_text())
    if task == "unanswerable":
        assert saved["task_metrics"]["abstention"]["abstention_recall"] == 1.0
        assert saved["task_metrics"]["abstention"]["answer_accuracy"] == 1.0
    else:
        assert "task_metrics" not in saved


def test_task_metrics_reach_the_report():
    from s3ft.report import _flat, render_markdown
    flat = _flat({"abstention": {"abstention_recall": 0.5, "n": 8}})
    assert flat == {"abstention.abstention_recall": 0.5, "abstention.n": 8}
    s = {"task": "unanswerable", "model": "m", "in_domain": {"base": 0.5}, "in_domain_ci95": {"base": [0.2, 0.8]},
         "in_domain_n": {"base": 8}, "task_metrics": {"base": flat}, "target_mix_by_method": {},
         "gold_reasons_by_method": {}, "cost": {"stages": {}, "total_wall_s": 1.0}}
    md = render_markdown(s, 0.5)
    assert "## Task metrics" in md and "| base | 0.500 | 8 |" in md
