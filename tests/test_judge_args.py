"""Judge args. A judge added in one file, `length_judge`, registered here alone with a typed arg,
runs through the whole pipeline on the tiny model and its verdicts reach the report; its args are
checked when the config loads, with one-line errors naming `judge.args.<key>`. The built-in judges'
options (the LLM judge's, also in their older place; the code judge's limits) are args too."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from s3ft.artifacts import read_jsonl
from s3ft.backends import BACKENDS, Generation, register_backend
from s3ft.checks import load_checked_config as load_config
from s3ft.errors import S3FTError
from s3ft.judges import JUDGES, Judge, JudgeContext, Verdict, judge_args, register_judge
from s3ft.judges.code import CodeJudge, CodeJudgeArgs
from s3ft.pipeline import run_pipeline

WORDS = ["alpha", "beta", "gamma", "delta", "epsilon"]


@dataclass
class LengthJudgeArgs:
    """Options of the toy judge."""
    min_words: int = 3
    """Fewest words an accepted response has."""


class LengthJudge(Judge):
    """Accepts a response of at least `min_words` words, whatever it says."""
    built_with: list[JudgeContext] = []

    def __init__(self, min_words: int):
        self.min_words = min_words

    @classmethod
    def from_args(cls, args: LengthJudgeArgs, context: JudgeContext) -> LengthJudge:
        cls.built_with.append(context)
        return cls(args.min_words)

    def judge(self, examples: list[dict], responses: list[str]) -> list[Verdict]:
        out = []
        for r in responses:
            n = len(r.split())
            ok = n >= self.min_words
            out.append(Verdict(ok, f"long enough: {n} words" if ok else f"too short: {n} < {self.min_words} words"))
        return out


class WordsBackend:
    """Row `...-N` answers with N % 5 words and stops (the tiny model itself only babbles to the length cap,
    which no judge sees); the weights still come from the tiny model, which the run trains."""

    def __init__(self, model_path, model_cfg, gen_cfg, adapter=None):
        pass

    def generate(self, requests, max_new_tokens, stop=(), stop_regex=None):
        for r in requests:
            n = int(r.id.rsplit("-", 1)[-1]) % len(WORDS)
            yield [Generation(r.id, " ".join(WORDS[:n]), "stop", 10, n)]

    def close(self):
        pass


def words_in(row_id: str) -> int:
    return int(row_id.rsplit("-", 1)[-1]) % len(WORDS)


@pytest.fixture
def length_judge():
    register_judge("length_judge", args=LengthJudgeArgs)(LengthJudge)
    register_backend("words")(WordsBackend)
    LengthJudge.built_with.clear()
    yield
    del JUDGES["length_judge"], BACKENDS["words"]


def test_a_judge_registered_in_one_file_runs_through_the_pipeline_into_the_report(length_judge, run_overrides):
    cfg = load_config(None, run_overrides + ["methods=[ssr]", "generation.backend=words", "judge.name=length_judge",
                                             "judge.args={min_words: 3}"])
    summary = run_pipeline(cfg)
    run = Path(cfg.output_dir)
    context = LengthJudge.built_with[-1]
    assert context.run_dir == run and context.model == cfg.model and context.batch_size == 4
    verdicts = read_jsonl(run / "answers_verdicts.jsonl")
    assert len(verdicts) == 12
    for v in verdicts:
        n = words_in(v["id"])
        assert v["correct"] == (n >= 3)
        assert v["reason"] == (f"long enough: {n} words" if n >= 3 else f"too short: {n} < 3 words")
    # the ssr targets follow the toy verdicts, and the base model's accuracy is the toy judge's
    targets = {r["id"]: r["source"] for r in read_jsonl(run / "train_ssr.jsonl")}
    assert targets == {v["id"]: "self" if v["correct"] else "gold" for v in verdicts}
    test_ids = [e["id"] for e in read_jsonl(run / "data/test.jsonl")]
    expected = sum(words_in(i) >= 3 for i in test_ids) / len(test_ids)
    assert summary["in_domain"] == {"base": expected, "ssr": expected}
    report = (run / "report.md").read_text()
    assert f"| base | {100 * expected:.1f}% |" in report
    rejected = sum(not v["correct"] for v in verdicts)
    assert f"own answer rejected: too short ({rejected})" in report
    # the args are part of the verdicts' fingerprint: other args, other verdicts
    assert json.loads((run / "summary.json").read_text())["in_domain"]["base"] == expected
    with pytest.raises(S3FTError, match="answers_verdicts.jsonl: made with different settings"):
        run_pipeline(load_config(None, run_overrides + ["methods=[ssr]", "generation.backend=words",
                                                        "judge.name=length_judge", "judge.args={min_words: 4}"]),
                     until="judge")


@pytest.mark.parametrize("args,error", [
    ("colour: red", "judge.args.colour: not an option of judge 'length_judge' (known: min_words)"),
    ("min_words: many", "judge.args.min_words: expected int, got 'many'"),
    ("min_words: 2.5", "judge.args.min_words: expected int, got 2.5"),
])
def test_bad_judge_args_are_a_one_line_error_naming_file_line_and_key(length_judge, tmp_path, args, error):
    path = tmp_path / "c.yaml"
    path.write_text(f"data:\n  task: arithmetic\njudge:\n  name: length_judge\n  args:\n    {args}\n")
    with pytest.raises(S3FTError) as err:
        load_config(path)
    assert str(err.value) == f"{path}:6: {error}"
    # the same when the task names the judge, and from --set
    with pytest.raises(S3FTError) as err:
        load_config(None, ["data.task=jsonl", "data.task_args={judge: length_judge}", f"judge.args={{{args}}}"])
    assert str(err.value) == f"--set: {error}"


def test_good_judge_args_load_as_written(length_judge):
    cfg = load_config(None, ["judge.name=length_judge", "judge.args={min_words: 5}"])
    assert cfg.judge.args == {"min_words": 5}


def test_llm_options_in_their_older_place_read_as_judge_args():
    older = load_config(None, ["judge.name=llm", "judge.backend=openai", "judge.max_new_tokens=32",
                               "judge.endpoint={base_url: 'http://h:1/v1', timeout_s: 5}"])
    newer = load_config(None, ["judge.name=llm", "judge.args={backend: openai, max_new_tokens: 32, "
                                                 "endpoint: {base_url: 'http://h:1/v1', timeout_s: 5}}"])
    assert judge_args("llm", older.judge) == judge_args("llm", newer.judge)
    assert judge_args("llm", older.judge).endpoint.timeout_s == 5.0
    with pytest.raises(S3FTError, match=r"^--set: judge.max_new_tokens: must be >= 1, got 0$"):
        load_config(None, ["judge.name=llm", "judge.max_new_tokens=0"])  # named where it was written
    with pytest.raises(S3FTError, match=r"^--set: judge.backend: judge.args is set too; move it there"):
        load_config(None, ["judge.name=llm", "judge.backend=openai", "judge.args={max_new_tokens: 8}"])


def test_code_judge_limits_are_args_checked_when_the_config_loads(monkeypatch):
    cfg = load_config(None, ["data.task=mbpp", "judge.args={timeout_s: 3, memory_mb: 512}"])  # the task names it
    assert judge_args("code", cfg.judge) == CodeJudgeArgs(workers=2, timeout_s=3.0, memory_mb=512)
    with pytest.raises(S3FTError, match=r"^--set: judge.args.timeout_s: must be > 0, got 0.0$"):
        load_config(None, ["data.task=mbpp", "judge.args={timeout_s: 0}"])
    judge = CodeJudge(allow=True, **vars(judge_args("code", cfg.judge)))
    assert (judge.workers, judge.timeout_s, judge.memory_mb) == (2, 3.0, 512)
    monkeypatch.setenv("S3FT_CODE_TIMEOUT", "7")  # the environment overrides the config on this machine
    assert CodeJudge(allow=True, **vars(judge_args("code", cfg.judge))).timeout_s == 7.0
