"""One plan for `s3ft run` and `s3ft run --dry-run`: the stages a run walks, and the estimate pricing the
very requests the run sends, so that a changed prompt moves both."""

import json
from pathlib import Path

import s3ft.plan
from s3ft.artifacts import read_jsonl
from s3ft.config import load_config
from s3ft.cost import estimate
from s3ft.pipeline import run_pipeline
from s3ft.plan import stages_until
from s3ft.tasks import get_task


def _priced(est: dict) -> dict[str, str]:
    """The requests' fingerprint of every generation stage the estimate prices, by stage name."""
    st = est["stages"]
    out = {name: s["requests"] for name, s in st.items() if name.startswith("generate:")}
    out.update({f"generate:{m}": s["requests"] for m, s in st["evaluate"]["per_model"].items()})
    return out


def _sent(run_dir: Path) -> dict[str, str]:
    """The requests' fingerprint each generation artifact of a run records, by stage name."""
    out = {}
    for meta in run_dir.rglob("*.meta.json"):
        inputs = json.loads(meta.read_text())["inputs"]
        if "requests" in inputs:
            out["generate:" + meta.name.removesuffix(".meta.json")] = inputs["requests"]
    return out


def test_a_changed_task_prompt_changes_the_priced_and_the_sent_requests_alike(run_overrides, monkeypatch, tmp_path):
    monkeypatch.setenv("S3FT_CACHE", str(tmp_path / "cache"))
    cfg = load_config(None, run_overrides + ["methods=[sft, sdft]"])  # sdft paraphrases every row: no upper bound
    before = _priced(estimate(cfg, probe=False))
    run_pipeline(load_config(None, run_overrides + ["methods=[sft, sdft]", f"output_dir={tmp_path / 'before'}"]),
                 until="paraphrase")
    assert _sent(tmp_path / "before") == {k: before[k] for k in ("generate:answers", "generate:paraphrases")}

    task = type(get_task(cfg.data))
    monkeypatch.setattr(task, "instruction", "Think it through, then say: The answer is N.")
    monkeypatch.setattr(task, "paraphrase_system", "Say the reference answer again in your own words.")
    est = estimate(cfg, probe=False)
    after = _priced(est)
    assert after.keys() == {"generate:answers", "generate:paraphrases", "generate:base", "generate:sft",
                            "generate:sdft"}
    assert all(after[k] != before[k] for k in after)
    run_pipeline(cfg, until="evaluate")
    run = Path(cfg.output_dir)
    assert _sent(run) == after
    # and token for token: the backend's count of every prompt it sent is the estimate's
    st = est["stages"]
    assert sum(r["prompt_tokens"] for r in read_jsonl(run / "answers.jsonl")) == st["generate:answers"]["prompt_tokens"]
    assert sum(r["prompt_tokens"] for r in read_jsonl(run / "paraphrases.jsonl")) \
        == st["generate:paraphrases"]["prompt_tokens"]
    assert sum(r["prompt_tokens"] for m in ("base", "sft", "sdft") for r in read_jsonl(run / f"eval/{m}.jsonl")) \
        == st["evaluate"]["prompt_tokens"]


def test_the_estimate_and_the_run_both_take_their_prompts_from_the_plan(run_overrides, monkeypatch, tmp_path):
    monkeypatch.setenv("S3FT_CACHE", str(tmp_path / "cache"))
    cfg = load_config(None, run_overrides + ["methods=[sft]"])
    plain = _priced(estimate(cfg, probe=False))["generate:answers"]
    built = s3ft.plan.answer_requests

    def briefed(task, rows):  # a request-building change that no task knows of
        reqs = built(task, rows)
        for r in reqs:
            r.messages = [{"role": "system", "content": "Be brief."}] + r.messages
        return reqs
    monkeypatch.setattr(s3ft.plan, "answer_requests", briefed)
    priced = _priced(estimate(cfg, probe=False))["generate:answers"]
    run_pipeline(cfg, until="generate")
    assert priced != plain
    assert _sent(Path(cfg.output_dir)) == {"generate:answers": priced}


def test_a_run_walks_the_stages_up_to_where_it_stops(run_overrides):
    cfg = load_config(None, run_overrides)  # the meter is off
    assert stages_until(cfg, "generate") == ["data", "generate"]
    assert stages_until(cfg, "train") == ["data", "generate", "judge", "paraphrase", "select", "train"]  # no samples: k = 1
    # evaluation ends with the report; the meter runs where it is on, or where it is asked for
    assert stages_until(cfg, "evaluate")[-2:] == ["evaluate", "report"]
    assert stages_until(cfg, "report")[-2:] == ["evaluate", "report"]
    assert stages_until(cfg, "forgetting")[-3:] == ["evaluate", "forgetting", "report"]
    on = load_config(None, run_overrides + ["forgetting.enabled=true"])
    assert stages_until(on, "report")[-3:] == ["evaluate", "forgetting", "report"]
    assert "forgetting" not in stages_until(on, "evaluate")
