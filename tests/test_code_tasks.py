"""MBPP and HumanEval tasks and the `code` judge: loading, prompts, gold passes, opt-in,
and the S3FT target mix through the pipeline with a scripted backend."""

import json
import os
import warnings
from pathlib import Path

import pytest

from s3ft.artifacts import read_jsonl
from s3ft.backends import Generation, register_backend
from s3ft.config import DataConfig, load_config
from s3ft.errors import S3FTError
from s3ft.judges import get_judge
from s3ft.judges.code import CodeJudge
from s3ft.judges.code_exec import extract_code
from s3ft.pipeline import run_pipeline
from s3ft.strategies import paraphrase_problem
from s3ft.tasks import get_task


def shared_data_dir() -> Path:
    path = Path(os.environ.get("S3FT_DATA_DIR") or Path(__file__).parents[2] / "shared" / "data")
    assert (path / "mbpp" / "train.jsonl").exists(), (
        f"{path / 'mbpp' / 'train.jsonl'} is missing: these tests run real MBPP reference solutions; "
        "set S3FT_DATA_DIR to the offline data directory (see .ci/run)")
    return path


def _mbpp_row(task_id: int) -> dict:
    k = task_id % 100
    # A long, commented reference: a one-line solution has far fewer words than this gold.
    code = (f"def add_{k}(x):\r\n\t# add the constant {k} to the argument and return the sum to the caller\r\n"
            f"\tresult = x + {k}\r\n\t# the sum is the answer that the tests expect for every input value\r\n"
            "\treturn result")
    return {"task_id": task_id, "text": f"Write a function to add {k} to a number.", "code": code,
            "test_list": [f"assert add_{k}(1) == {1 + k}", f"assert add_{k}(-{k}) == 0"],
            "test_setup_code": "", "challenge_test_list": []}


@pytest.fixture
def mbpp_dir(tmp_path) -> Path:
    root = tmp_path / "data"
    (root / "mbpp").mkdir(parents=True)
    for split, ids in (("train", range(601, 613)), ("test", range(11, 15))):
        with open(root / "mbpp" / f"{split}.jsonl", "w") as f:
            for i in ids:
                f.write(json.dumps(_mbpp_row(i)) + "\n")
    return root


@pytest.fixture
def allow_exec(monkeypatch):
    monkeypatch.setenv("S3FT_ALLOW_CODE_EXEC", "1")


def test_mbpp_loads_local_hub_schema(mbpp_dir):
    task = get_task(DataConfig(task="mbpp", data_dir=str(mbpp_dir)))
    train, test = task.load("train"), task.load("test")
    assert [e.id for e in train] == [f"mbpp-{i}" for i in range(601, 613)] and len(test) == 4
    ex = train[0]
    assert "Write a function to add 1 to a number." in ex.question
    assert "Your code should pass these tests:\n\nassert add_1(1) == 2\nassert add_1(-1) == 0" in ex.question
    assert ex.gold.startswith("```python\ndef add_1(x):\n") and ex.gold.endswith("\n```") and "\r" not in ex.gold
    user = task.messages(ex)[-1]["content"]
    assert "```python" in user and "assert add_1(1) == 2" in user
    para = task.paraphrase_messages(ex)
    assert "reference solution" in para[0]["content"] and ex.gold in para[1]["content"]
    assert task.paraphrase_prefill == "```python\n" and task.judge == "code"


def test_mbpp_real_reference_solutions_pass(allow_exec):
    task = get_task(DataConfig(task="mbpp", data_dir=str(shared_data_dir())))
    rows = task.load("train")
    picked = rows[:6] + [e for e in rows if e.meta["task_id"] == 927]  # 927 has test_setup_code
    verdicts = get_judge("code").judge([e.to_dict() for e in picked], [e.gold for e in picked])
    assert [v.reason for v in verdicts] == ["passed"] * len(picked), [(e.id, v) for e, v in zip(picked, verdicts)]
    # and a plausible but wrong solution fails with the reason recorded
    first = next(e for e in picked if e.gold.split("\n")[1].startswith("def "))
    wrong = "```python\n" + first.gold.split("\n")[1] + "\n    return None\n```"
    v = get_judge("code").judge([first.to_dict()], [wrong])[0]
    assert not v.correct and v.reason.startswith(("failed assertion", "exception")), v


def test_code_judge_is_opt_in(monkeypatch):
    monkeypatch.delenv("S3FT_ALLOW_CODE_EXEC", raising=False)
    with pytest.raises(S3FTError, match="S3FT_ALLOW_CODE_EXEC=1") as err:
        get_judge("code")
    assert "isolation in force" in str(err.value)
    monkeypatch.setenv("S3FT_ALLOW_CODE_EXEC", "0")
    with pytest.raises(S3FTError):
        CodeJudge()
    assert CodeJudge(allow=True).workers == 2
    monkeypatch.setenv("S3FT_CODE_WORKERS", "3")
    assert CodeJudge(allow=True).workers == 3


def test_code_judge_reasons(mbpp_dir, allow_exec):
    ex = get_task(DataConfig(task="mbpp", data_dir=str(mbpp_dir))).load("train")[2].to_dict()  # add_3
    responses = ["Here you go:\n```python\ndef add_3(x): return x + 3\n```\nIt adds three.",
                 "```python\ndef add_3(x):\n    return x + 4\n```",
                 "def add_3(x): return x + 3",  # no fenced block
                 "```python\ndef add_3(x) return x\n```",
                 "```python\ndef add_3(x):\n    while True: pass\n```"]
    judge = CodeJudge(allow=True, timeout_s=2)
    v = judge.judge([ex] * len(responses), responses)
    assert v[0].correct and v[0].reason == "passed" and v[0].extracted == "def add_3(x): return x + 3"
    assert not v[1].correct and v[1].reason.startswith("failed assertion")
    assert (v[2].correct, v[2].reason) == (False, "no code block found")
    assert v[3].reason.startswith("syntax error")
    assert v[4].reason == "timeout"


def test_short_code_paraphrase_survives_the_filter(mbpp_dir):
    task = get_task(DataConfig(task="mbpp", data_dir=str(mbpp_dir)))
    gold = task.load("train")[2].gold
    para = task.paraphrase_prefill + "def add_3(x): return x + 3\n```"
    ratio, min_words = task.paraphrase_limits
    assert paraphrase_problem(para, gold, task.final_answer_line(para), task.reference_phrases,
                              ratio, min_words, task.paraphrase_prefill) is None
    # the generic limits would have thrown this correct solution away
    assert paraphrase_problem(para, gold, task.final_answer_line(para), task.reference_phrases,
                              0.3, 8, task.paraphrase_prefill) is not None
    # talking about the reference is still rejected
    bad = para.replace("return", "# same as the reference solution\n    return")
    assert "mentions the reference" in paraphrase_problem(bad, gold, bad, task.reference_phrases, ratio, min_words)


def test_humaneval_split_and_gold(allow_exec):
    task = get_task(DataConfig(task="humaneval"))
    train, test = task.load("train"), task.load("test")
    assert (len(train), len(test)) == (131, 33)
    assert not {e.id for e in train} & {e.id for e in test}
    assert [e.id for e in get_task(DataConfig(task="humaneval")).load("test")] == [e.id for e in test]
    other = get_task(DataConfig(task="humaneval", task_args={"split_seed": 1})).load("test")
    assert {e.id for e in other} != {e.id for e in test}
    with pytest.raises(S3FTError, match="data.task_args.bogus: not an option of task"):
        get_task(DataConfig(task="humaneval", task_args={"bogus": 1}))
    ex = next(e for e in train + test if e.id == "HumanEval-0")
    assert "def has_close_elements(numbers: List[float], threshold: float) -> bool:" in ex.question
    judge = get_judge("code")
    body = ("    return any(abs(a - b) < threshold for i, a in enumerate(numbers)\n"
            "               for j, b in enumerate(numbers) if i != j)\n")
    full_no_imports = "def has_close_elements(numbers, threshold):\n" + body
    responses = [ex.gold, f"```python\n{full_no_imports}```", f"```python\n{body}```",
                 "```python\ndef has_close_elements(numbers, threshold):\n    return False\n```"]
    v = judge.judge([ex.to_dict()] * 4, responses)
    assert [x.correct for x in v] == [True, True, True, False], v
    sample = train[:5]
    assert all(x.correct for x in judge.judge([e.to_dict() for e in sample], [e.gold for e in sample]))


# --- through the pipeline -------------------------------------------------------------
@register_backend("scripted-code")
class ScriptedCodeBackend:
    """plan[id] says which tier should win: 'self' -> the answer passes; 'paraphrase' -> the
    answer fails and the paraphrase (the reference, echoed) passes; 'gold' -> both fail."""
    plan: dict = {}
    solutions: dict = {}

    def __init__(self, model_path, model_cfg, gen_cfg, adapter=None):
        pass

    def generate(self, requests, max_new_tokens, stop=(), stop_regex=None):
        for r in requests:
            tier = self.plan.get(r.id, "gold")
            wrong = "def not_the_function():\n    return None\n"
            if r.prefill:  # paraphrase: continue the ```python fence
                text = (self.solutions[r.id] if tier == "paraphrase" else wrong) + "```"
            else:
                code = self.solutions[r.id] if tier == "self" else wrong
                text = f"Here is my solution.\n```python\n{code}```\n"
            yield [Generation(r.id, text, "stop", 10, 20)]

    def close(self):
        pass


def _check_tiers(cfg, solutions=None):
    task = get_task(cfg.data)
    train = task.load("train")
    ScriptedCodeBackend.solutions = solutions or {e.id: extract_code(e.gold) + "\n" for e in train}
    ScriptedCodeBackend.plan = {e.id: ("self", "paraphrase", "gold")[i % 3] for i, e in enumerate(train)}
    run_pipeline(cfg, until="select")
    run = Path(cfg.output_dir)
    rows = read_jsonl(run / "train_s3ft.jsonl")
    assert {r["id"]: r["source"] for r in rows} == ScriptedCodeBackend.plan
    assert {r["source"] for r in rows} == {"self", "paraphrase", "gold"}
    for r in rows:
        if r["source"] == "paraphrase":
            assert r["target"].startswith("```python\n") and r["reason"] == "passed"
        if r["source"] == "gold":
            assert "NameError" in r["reason"] or "failed" in r["reason"], r
    stats = json.loads((run / "train_s3ft.stats.json").read_text())
    assert sum(stats["target_mix"].values()) == len(rows)
    return rows


def test_mbpp_selection_tiers_through_the_pipeline(run_overrides, mbpp_dir, allow_exec):
    cfg = load_config(None, run_overrides + ["generation.backend=scripted-code", "methods=[s3ft]",
                                             "data.task=mbpp", f"data.data_dir={mbpp_dir}"])
    rows = _check_tiers(cfg, {f"mbpp-{i}": f"def add_{i % 100}(x): return x + {i % 100}\n" for i in range(601, 613)})
    # one-line solutions, far shorter than the commented reference, were kept as paraphrases
    assert any(len(r["target"].split()) < 0.3 * len(_mbpp_row(601)["code"].split())
               for r in rows if r["source"] == "paraphrase")


def test_humaneval_selection_tiers_through_the_pipeline(run_overrides, allow_exec):
    cfg = load_config(None, run_overrides + ["generation.backend=scripted-code", "methods=[s3ft]",
                                             "data.task=humaneval"])
    _check_tiers(cfg)


@pytest.mark.parametrize("isolation", ["bwrap", "unshare", "none"])
def test_a_token_in_the_home_directory_never_reaches_a_run_artifact(run_overrides, mbpp_dir, allow_exec, tmp_path,
                                                                    monkeypatch, isolation):
    """Solutions that read a planted token from the user's home directory and raise it, name a class
    after it, print it or exit with it: no file of the run holds it, in any mode. Under bubblewrap
    the home directory is not there at all; elsewhere reasons keep kind and location, and only
    redacted, truncated program text."""
    from s3ft.judges import code_exec
    home = tmp_path / "home"
    home.mkdir()
    token = "hf_" + os.urandom(16).hex()
    (home / ".token").write_text(token)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("S3FT_CODE_EXEC_ISOLATION", isolation)
    monkeypatch.setattr(code_exec, "_chosen", {})
    read = f"t = open({str(home / '.token')!r}).read()\n"
    steal = [read + "raise Exception(t)\n", read + "raise Exception('x ' + t + ' y')\n",
             read + "raise type(t, (Exception,), {})()\n", read + "import sys\nsys.exit(t)\n",
             read + "import sys\nprint(t)\nsys.stderr.write(t)\nraise ValueError(t[:20], t[20:])\n",
             "def add_{k}(x):\n    " + read.strip() + "\n    raise KeyError(t)\n",
             "def add_{k}(x):\n    " + read.strip() + "\n    return t\n"]
    ids = [f"mbpp-{i}" for i in range(601, 613)]
    solutions = {i: steal[n % len(steal)].replace("{k}", str(int(i[5:]) % 100)) for n, i in enumerate(ids)}
    ScriptedCodeBackend.solutions = solutions
    ScriptedCodeBackend.plan = {i: "self" for i in ids}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the opt-ins say what they give up
        cfg = load_config(None, run_overrides + ["generation.backend=scripted-code", "methods=[s3ft]",
                                                 "data.task=mbpp", f"data.data_dir={mbpp_dir}"])
        run_pipeline(cfg, until="select")
    run = Path(cfg.output_dir)
    verdict_files = sorted(run.rglob("*_verdicts.jsonl"))
    assert verdict_files, sorted(p.name for p in run.rglob("*"))
    reasons = [r["reason"] for f in verdict_files for r in read_jsonl(f)]
    assert reasons and not any(r == "passed" for r in reasons[:len(ids)]), reasons
    for path in run.rglob("*"):
        if path.is_file():
            assert token.encode() not in path.read_bytes(), path
            assert token[3:19].encode() not in path.read_bytes(), path  # nor a piece of it
