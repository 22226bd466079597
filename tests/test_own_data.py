"""Your own data (the `dataset` task): every format and source runs `s3ft select` on a tiny model, and the
training rows carry the conversation before the answered turn, with the last assistant turn as gold."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from s3ft.artifacts import read_jsonl
from s3ft.cli import app
from s3ft.tasks.nq_open import NQOpen

SYSTEM = "You answer geography questions with the city name only."
EARLIER = [("I have a few questions about capitals.", "Sure, ask away.")]
CAPITALS = [("France", "Paris"), ("Japan", "Tokyo"), ("Kenya", "Nairobi"), ("Peru", "Lima"),
            ("Canada", "Ottawa"), ("Egypt", "Cairo"), ("Norway", "Oslo"), ("Chile", "Santiago")]


def conversations(system: bool, multi_turn: bool) -> list[dict]:
    """id, system prompt, earlier turns, question and answer of each row."""
    return [{"id": f"cap-{i}", "system": SYSTEM if system else None, "earlier": EARLIER if multi_turn else [],
             "question": f"What is the capital of {country}?", "answer": city}
            for i, (country, city) in enumerate(CAPITALS)]


def as_messages(c: dict) -> list[dict]:
    turns = [{"role": "system", "content": c["system"]}] if c["system"] else []
    for u, a in c["earlier"]:
        turns += [{"role": "user", "content": u}, {"role": "assistant", "content": a}]
    return turns + [{"role": "user", "content": c["question"]}, {"role": "assistant", "content": c["answer"]}]


def row(fmt: str, c: dict) -> dict:
    if fmt == "fields":
        return {"id": c["id"], "prompt": c["question"], "solution": c["answer"]}
    if fmt == "messages":
        return {"id": c["id"], "messages": as_messages(c)}
    if fmt == "sharegpt":
        who = {"system": "system", "user": "human", "assistant": "gpt"}
        return {"id": c["id"], "conversations": [{"from": who[m["role"]], "value": m["content"]} for m in as_messages(c)]}
    assert fmt == "alpaca"
    country = c["question"].removeprefix("What is the capital of ").removesuffix("?")
    return {"id": c["id"], "instruction": "What is the capital of this country?", "input": country,
            "output": c["answer"], **({"system": c["system"]} if c["system"] else {}),
            "history": [list(p) for p in c["earlier"]]}


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def run_select(tiny_model_dir, tmp_path: Path, task_args: str) -> Path:
    """`s3ft select` on a config in its own folder (relative paths resolve there), run from another folder."""
    cfg = tmp_path / "project" / "config.yaml"
    cfg.parent.mkdir(parents=True, exist_ok=True)
    cfg.write_text(f"methods: [sft, s3ft]\ndata:\n  task: dataset\n  task_args: {task_args}\n")
    out = tmp_path / "run"
    result = CliRunner().invoke(app, [
        "select", str(cfg), "-o", str(out), "--set", f"model.name_or_path={tiny_model_dir}",
        "--set", "model.dtype=float32", "--set", "generation.max_new_tokens=8", "--set", "generation.batch_size=4",
        "--set", "forgetting.enabled=false"])
    assert result.exit_code == 0, result.output
    return out


def check_targets(out: Path, convs: list[dict], expect_context, test_ids: list[str] | None = None) -> None:
    """Every training row of SFT and S3FT: the prompt is the context + the question with the short-answer
    instruction, the SFT target is the last assistant turn; S3FT's gold rows too (a random tiny model's own
    answers are rejected)."""
    by_id = {c["id"]: c for c in convs}
    if test_ids is None:  # held out from train: the split record names them
        test_ids = json.loads((out / "data" / "split.json").read_text())["test_ids"]
    sft = read_jsonl(out / "train_sft.jsonl")
    assert {r["id"] for r in sft} == set(by_id) - set(test_ids) and len(sft) == 6
    for r in sft:
        c = by_id[r["id"]]
        *context, user = r["messages"]
        assert context == expect_context(c)
        assert user["role"] == "user" and user["content"].endswith("\n" + NQOpen.instruction)
        assert r["target"] == c["answer"] and r["source"] == "gold"
    s3ft = {r["id"]: r for r in read_jsonl(out / "train_s3ft.jsonl")}
    assert {r["id"]: r["messages"] for r in sft} == {i: r["messages"] for i, r in s3ft.items()}
    assert all(r["target"] == by_id[i]["answer"] for i, r in s3ft.items() if r["source"] == "gold")
    data = {r["id"]: r for r in read_jsonl(out / "data" / "train.jsonl")}
    assert all(data[i]["gold"] == by_id[i]["answer"] for i in data)


def context_of(c: dict) -> list[dict]:
    return as_messages(c)[:-2]


@pytest.mark.parametrize("fmt,system,multi_turn", [
    ("messages", True, False),   # single turn with a system prompt
    ("messages", True, True),    # multi-turn: the earlier turns are context
    ("messages", False, True),
    ("sharegpt", True, True),
    ("alpaca", True, True),      # system and history
])
def test_chat_formats_keep_the_context_and_train_on_the_last_turn(tiny_model_dir, tmp_path, fmt, system, multi_turn):
    convs = conversations(system, multi_turn)
    write_jsonl(tmp_path / "project" / "data" / "rows.jsonl", [row(fmt, c) for c in convs])
    out = run_select(tiny_model_dir, tmp_path, f"{{train: data/rows.jsonl, answer_type: short, test_fraction: 0.25}}")
    check_targets(out, convs, context_of)
    if fmt == "alpaca":  # the input follows the instruction after a blank line
        first = read_jsonl(out / "train_sft.jsonl")[0]
        assert first["messages"][-1]["content"].startswith("What is the capital of this country?\n\n")


def test_fields_format_with_a_field_mapping(tiny_model_dir, tmp_path):
    convs = conversations(False, False)
    write_jsonl(tmp_path / "project" / "rows.jsonl", [row("fields", c) for c in convs])
    out = run_select(tiny_model_dir, tmp_path, "{train: rows.jsonl, format: fields, question_field: prompt, "
                                               "answer_field: solution, answer_type: short, test_fraction: 0.25}")
    check_targets(out, convs, lambda c: [])
    assert "context" not in read_jsonl(out / "data" / "train.jsonl")[0]  # single-turn rows read as before


def test_a_parquet_file(tiny_model_dir, tmp_path):
    import datasets
    convs = conversations(True, True)
    datasets.Dataset.from_list([row("messages", c) for c in convs]).to_parquet(str(tmp_path / "project" / "rows.parquet"))
    out = run_select(tiny_model_dir, tmp_path, "{train: rows.parquet, answer_type: short, test_fraction: 0.25}")
    check_targets(out, convs, context_of)


def test_a_dataset_by_name_and_split_through_load_dataset(tiny_model_dir, tmp_path):
    """A hub-style dataset folder with two configurations, read by `datasets.load_dataset(folder, name,
    split=...)` offline: train and test come from the named configuration's splits."""
    convs = conversations(True, True)
    repo = tmp_path / "project" / "capitals-repo"
    write_jsonl(repo / "chat" / "train.jsonl", [row("messages", c) for c in convs[:6]])
    write_jsonl(repo / "chat" / "eval.jsonl", [row("messages", c) for c in convs[6:]])
    write_jsonl(repo / "other" / "train.jsonl", [{"question": "unused", "answer": "unused"}])
    (repo / "README.md").write_text(
        "---\nconfigs:\n- config_name: chat\n  data_files:\n  - split: train\n    path: chat/train.jsonl\n"
        "  - split: validation\n    path: chat/eval.jsonl\n- config_name: other\n  data_files:\n"
        "  - split: train\n    path: other/train.jsonl\n---\n")
    out = run_select(tiny_model_dir, tmp_path, "{train: capitals-repo, test: capitals-repo, name: chat, "
                                               "test_split: validation, answer_type: short}")
    test_ids = [r["id"] for r in read_jsonl(out / "data" / "test.jsonl")]
    assert test_ids == ["cap-6", "cap-7"]
    check_targets(out, convs, context_of, test_ids)


# --- bad data: one line naming the key, the path resolved, the base folder and what was found --------------
def data_error(tmp_path: Path, task_args: str) -> str:
    cfg = tmp_path / "project" / "config.yaml"
    cfg.parent.mkdir(parents=True, exist_ok=True)
    cfg.write_text(f"data:\n  task: dataset\n  task_args: {task_args}\n")
    result = CliRunner().invoke(app, ["data", str(cfg), "-o", str(tmp_path / "run")])
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    return " ".join(result.output.split())


def test_a_missing_file_names_the_key_the_path_resolved_and_the_base_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # not the config's folder
    base = tmp_path / "project"
    assert f"data.task_args.train: {base}/data/chat.jsonl: not found ('data/chat.jsonl' resolved against {base})" \
        in data_error(tmp_path, "{train: data/chat.jsonl, answer_type: short}")


@pytest.mark.parametrize("turns,found", [
    ([{"role": "user", "content": "hi"}], "row 2: no assistant turn (roles: user)"),
    ([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}, {"role": "user", "content": "?"}],
     "row 2: 1 turn(s) after the last assistant turn (roles: user, assistant, user)"),
    ([{"role": "user", "content": "hi"}, {"role": "bot", "content": "hello"}],
     "row 2: turn 2 has role 'bot' (expected system, user or assistant)"),
])
def test_a_bad_row_says_what_it_found_and_where(tmp_path, turns, found):
    good = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}
    write_jsonl(tmp_path / "project" / "chat.jsonl", [good, {"messages": turns}])
    msg = data_error(tmp_path, "{train: chat.jsonl, answer_type: short}")
    assert f"data.task_args.train: {tmp_path}/project/chat.jsonl (resolved against {tmp_path}/project): {found}" in msg


def test_answer_type_is_required_and_checked_when_the_config_loads(tmp_path):
    assert "data.task_args.answer_type: required, one of number, short, free, code; got None" \
        in data_error(tmp_path, "{train: chat.jsonl}")
    assert "data.task_args.fromat: not an option of task 'dataset'" in data_error(
        tmp_path, "{train: chat.jsonl, answer_type: short, fromat: messages}")


def test_a_hub_id_reads_its_offline_mirror_under_the_data_dir(tmp_path):
    from s3ft.config import DataConfig
    from s3ft.tasks import get_task
    write_jsonl(tmp_path / "mirror" / "capitals" / "train.jsonl", [row("messages", c) for c in conversations(True, False)])
    write_jsonl(tmp_path / "mirror" / "capitals" / "test.jsonl", [row("messages", c) for c in conversations(True, True)])
    task = get_task(DataConfig(task="dataset", data_dir=str(tmp_path / "mirror"), task_args={
        "train": "someone/capitals", "test": "someone/capitals", "answer_type": "short"}))
    assert task.load("train")[0].context == [{"role": "system", "content": SYSTEM}]
    assert len(task.load("test")[0].context) == 3


def test_tasks_name_prints_the_answer_type_and_every_option_with_type_default_and_docstring():
    result = CliRunner().invoke(app, ["tasks", "dataset"])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "answer type: set by data.task_args.answer_type (number, short, free, code)" in out
    assert "  test_fraction: float = 0.2\n      Without `test`: the share of training rows held out" in out
    from s3ft.tasks import task_class
    from dataclasses import fields
    assert all(f"  {f.name}: " in out for f in fields(task_class("dataset").args_type))
    result = CliRunner().invoke(app, ["tasks", "nq_open"])
    assert "answer type: short" in result.output and "  test_size: int = 1000\n      Rows for test." in result.output


def test_docs_own_data_lists_every_option_of_the_dataset_task():
    from dataclasses import fields

    from s3ft.tasks import task_class
    doc = (Path(__file__).parents[1] / "docs" / "own-data.md").read_text()
    missing = [f.name for f in fields(task_class("dataset").args_type) if f"| `{f.name}` |" not in doc]
    assert not missing, f"docs/own-data.md lacks {missing}"


def test_the_worked_example_loads_as_the_docs_show_it():
    """examples/unit-conversions: the config in docs/own-data.md, its 40 conversations, a quarter held out."""
    from s3ft.config import load_config
    from s3ft.tasks import get_task
    root = Path(__file__).parents[1]
    cfg_path = root / "examples" / "unit-conversions" / "config.yaml"
    assert cfg_path.read_text() in (root / "docs" / "own-data.md").read_text()
    cfg = load_config(cfg_path)
    task = get_task(cfg.data)
    train, test = task.load("train"), task.load("test")
    assert (len(train), len(test)) == (30, 10)
    assert all(e.context[0]["role"] == "system" for e in train + test)
    assert sum(len(e.context) == 3 for e in train + test) == 12  # the two-turn conversations


def test_invalid_json_names_the_option_the_file_and_the_line(tmp_path):
    (tmp_path / "project").mkdir()
    (tmp_path / "project" / "chat.jsonl").write_text('{"messages": []}\n{broken\n')
    assert f"data.task_args.train: {tmp_path}/project/chat.jsonl:2: invalid JSON" in data_error(
        tmp_path, "{train: chat.jsonl, answer_type: short}")


def test_the_sharegpt_example_loads_with_both_kinds_of_system_prompt_and_its_two_turn_rows():
    """examples/world-facts: 40 ShareGPT conversations, system prompts as a field or a turn, 10 two-turn."""
    from s3ft.config import load_config
    from s3ft.tasks import get_task
    cfg = load_config(Path(__file__).parents[1] / "examples" / "world-facts" / "config.yaml")
    task = get_task(cfg.data)
    rows = task.load("train") + task.load("test")
    assert (len(task.load("train")), len(task.load("test"))) == (30, 10)
    assert sum(bool(e.context) and e.context[0]["role"] == "system" for e in rows) == 21
    assert sum(any(t["role"] == "assistant" for t in e.context) for e in rows) == 10
    berlin = next(e for e in rows if e.id == "geo-32")
    assert (berlin.context[-1]["content"], berlin.gold) == ("Berlin", "Spree")


def test_editing_the_data_after_a_run_stops_the_rerun_naming_the_stale_file_and_a_changed_row(tmp_path):
    """The fingerprints hold the config, not the file: an edited gold answer would otherwise leave every
    stage after the data stale without a word."""
    write_jsonl(tmp_path / "project" / "chat.jsonl", [row("messages", c) for c in conversations(False, False)])
    cfg = tmp_path / "project" / "config.yaml"
    cfg.write_text("data:\n  task: dataset\n  task_args: {train: chat.jsonl, answer_type: short, test_fraction: 0.25}\n")
    args = ["data", str(cfg), "-o", str(tmp_path / "run")]
    assert CliRunner().invoke(app, args).exit_code == 0
    kept = (tmp_path / "run" / "data" / "train.jsonl").read_bytes()
    assert CliRunner().invoke(app, args).exit_code == 0  # unchanged data: the rerun reuses it
    edited = conversations(False, False)
    edited[3]["answer"] = "Cusco"
    write_jsonl(tmp_path / "project" / "chat.jsonl", [row("messages", c) for c in edited])
    result = CliRunner().invoke(app, args)
    out = " ".join(result.output.split())
    assert result.exit_code == 2 and "Traceback" not in out, result.output
    assert "the task's data changed since this run directory was made (1 row added, removed or edited, " \
           "e.g. id 'cap-3')" in out and "/data/" in out
    assert (tmp_path / "run" / "data" / "train.jsonl").read_bytes() == kept  # nothing computed is lost
