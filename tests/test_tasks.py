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


# --- fixing the rows a study uses: data.train_rows / test_rows / test_exclude ---------------------------


def _arith(tmp_path=None, **data):
    return DataConfig(task="arithmetic", task_args={"n_train": 50, "n_test": 40}, **data)


def test_test_rows_keep_a_slice_of_the_source_before_test_limit_samples_from_it():
    every = get_task(_arith()).load("test")
    assert [e.id for e in get_task(_arith(test_rows="10:30")).load("test")] == [e.id for e in every[10:30]]
    sampled = get_task(_arith(test_rows="10:30", test_limit=5)).load("test")
    assert len(sampled) == 5 and {e.id for e in sampled} <= {e.id for e in every[10:30]}
    assert [e.id for e in get_task(_arith(train_rows="0:7")).load("train")] == \
        [e.id for e in get_task(_arith()).load("train")[:7]]


def test_test_exclude_leaves_out_listed_ids_given_as_lines_or_jsonl(tmp_path):
    every = get_task(_arith()).load("test")
    (tmp_path / "seen.txt").write_text(f"{every[0].id}\n\n{every[3].id}\n")
    (tmp_path / "seen.jsonl").write_text(json.dumps({"id": every[0].id, "question": "x"}) + "\n")
    kept = get_task(_arith(test_exclude=str(tmp_path / "seen.txt"))).load("test")
    assert [e.id for e in kept] == [e.id for i, e in enumerate(every) if i not in (0, 3)]
    kept = get_task(_arith(test_exclude=str(tmp_path / "seen.jsonl"), test_limit=39)).load("test")
    assert every[0].id not in {e.id for e in kept} and len(kept) == 39
    assert len(get_task(_arith(test_exclude=str(tmp_path / "seen.txt"))).load("train")) == 50  # test only


@pytest.mark.parametrize("spec", ["800:400", "a:b", "-1:500", "0:0", "1:200:300"])
def test_a_malformed_row_range_is_an_error_naming_the_key(tmp_path, spec):
    from s3ft.config import load_config
    with pytest.raises(S3FTError, match=r"^--set: data.test_rows: expected START:STOP"):
        load_config(None, ["data.task=arithmetic", f"data.test_rows={spec}"])


def test_an_unquoted_row_range_that_yaml_read_as_a_number_says_to_quote_it(tmp_path):
    from s3ft.config import load_config
    (tmp_path / "c.yaml").write_text("data:\n  task: arithmetic\n  test_rows: 10:30\n")
    with pytest.raises(S3FTError, match=r"c.yaml: data.test_rows: got the number 630; write START:STOP in quotes"):
        load_config(tmp_path / "c.yaml")


def test_a_row_range_past_the_split_and_a_missing_exclude_file_are_errors_naming_the_key(tmp_path):
    with pytest.raises(S3FTError, match=r"data.test_rows: 30:41 reaches past the test split's 40 rows"):
        get_task(_arith(test_rows="30:41")).load("test")
    cfg = _arith(test_exclude="seen.txt")
    cfg.base_dir = str(tmp_path)
    with pytest.raises(S3FTError, match=rf"data.test_exclude: {tmp_path}/seen.txt: not found"):
        get_task(cfg).load("test")


def test_unset_row_options_are_no_part_of_the_data_fingerprint_and_set_ones_are(tiny_model_dir, tmp_path):
    from s3ft.api import run
    base = ["data.task=arithmetic", "data.task_args={n_train: 20, n_test: 10}", f"model.name_or_path={tiny_model_dir}"]
    run(None, base + [f"output_dir={tmp_path / 'a'}"], until="data")
    run(None, base + [f"output_dir={tmp_path / 'b'}", 'data.test_rows="2:8"'], until="data")
    inputs = [json.loads((tmp_path / d / "data" / "test.meta.json").read_text())["inputs"]["data"] for d in "ab"]
    assert not {"train_rows", "test_rows", "test_exclude"} & set(inputs[0])
    assert inputs[1]["test_rows"] == "2:8"
    assert len((tmp_path / "b" / "data" / "test.jsonl").read_text().splitlines()) == 6
