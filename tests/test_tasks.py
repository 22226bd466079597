import json

import pytest

from s3ft.config import DataConfig
from s3ft.errors import S3FTError
from s3ft.judges import get_judge
from s3ft.tasks import get_task


def test_arithmetic_is_seeded_and_splits_do_not_overlap():
    a = get_task(DataConfig(task="arithmetic", task_args={"n_train": 50, "n_test": 20}))
    b = get_task(DataConfig(task="arithmetic", task_args={"n_train": 50, "n_test": 20}))
    train, test = a.load("train"), a.load("test")
    assert [e.question for e in train] == [e.question for e in b.load("train")]
    assert not {e.question for e in train} & {e.question for e in test}
    other = get_task(DataConfig(task="arithmetic", seed=1, task_args={"n_train": 50, "n_test": 20})).load("train")
    assert [e.question for e in other] != [e.question for e in train]


def test_arithmetic_gold_passes_its_own_judge():
    task = get_task(DataConfig(task="arithmetic", task_args={"n_train": 40, "n_test": 1}))
    rows = task.load("train")
    verdicts = get_judge("math").judge([e.to_dict() for e in rows], [e.gold for e in rows])
    assert all(v.correct for v in verdicts)
    assert all(e.gold.splitlines()[-1].startswith("#### ") for e in rows)


def test_limit_is_a_seeded_sample_not_a_prefix():
    cfg = DataConfig(task="arithmetic", train_limit=10, task_args={"n_train": 100, "n_test": 5})
    ids = [e.id for e in get_task(cfg).load("train")]
    assert len(ids) == 10 and ids != [f"arith-train-{i}" for i in range(10)]
    assert ids == [e.id for e in get_task(cfg).load("train")]


def write_gsm8k(root, rows):
    (root / "gsm8k").mkdir(parents=True, exist_ok=True)
    for split in ("train", "test"):
        (root / "gsm8k" / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_gsm8k_from_local_dir_strips_calculator_annotations(tmp_path):
    write_gsm8k(tmp_path, [{"question": "2 pens at $3?", "answer": "2*3=<<2*3=6>>6\n#### 6"}])
    ex = get_task(DataConfig(task="gsm8k", data_dir=str(tmp_path))).load("train")[0]
    assert ex.gold == "2*3=6\n#### 6" and ex.meta["answer"] == "6"


def test_gsm8k_missing_field_names_file_and_line(tmp_path):
    write_gsm8k(tmp_path, [{"question": "q", "answer": "#### 1"}, {"question": "q2"}])
    with pytest.raises(S3FTError, match=r"gsm8k/train.jsonl:2: missing field 'answer'"):
        get_task(DataConfig(task="gsm8k", data_dir=str(tmp_path))).load("train")


def test_gsm8k_empty_split(tmp_path):
    write_gsm8k(tmp_path, [])
    with pytest.raises(S3FTError, match="train split is empty"):
        get_task(DataConfig(task="gsm8k", data_dir=str(tmp_path))).load("train")


def test_jsonl_task_field_mapping(tmp_path):
    p = tmp_path / "mine.jsonl"
    p.write_text(json.dumps({"q": "1+1?", "sol": "1+1=2. The answer is 2.", "final": 2}) + "\n")
    task = get_task(DataConfig(task="jsonl", task_args={"train": str(p), "test": str(p), "question_field": "q",
                                                        "answer_field": "sol", "final_answer_field": "final"}))
    ex = task.load("test")[0]
    assert (ex.question, ex.meta["answer"]) == ("1+1?", "2")
    with pytest.raises(S3FTError, match="data.task_args.bogus: not an option of task"):
        get_task(DataConfig(task="jsonl", task_args={"bogus": 1}))


def test_unknown_task():
    with pytest.raises(S3FTError, match="unknown task 'nope'"):
        get_task(DataConfig(task="nope"))
