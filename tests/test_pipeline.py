"""The whole pipeline on a tiny random model, plus resume after crashes (incl. kill -9)."""

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from s3ft.artifacts import read_jsonl
from s3ft.backends import BACKENDS, Generation, register_backend
from s3ft.backends.hf import HFBackend
from s3ft.config import load_config
from s3ft.errors import S3FTError
from s3ft.pipeline import run_pipeline


def test_end_to_end_every_stage(run_overrides, tmp_path):
    cfg = load_config(None, run_overrides + ["methods=[sft, ssr, s3ft, sdft]"])
    summary = run_pipeline(cfg)
    run = Path(cfg.output_dir)
    assert set(summary["in_domain"]) == {"base", "sft", "ssr", "s3ft", "sdft"}
    assert all(0.0 <= a <= 1.0 for a in summary["in_domain"].values())
    assert sum(summary["target_mix"].values()) == 12
    for name in ["data/train.jsonl", "answers.jsonl", "answers_verdicts.jsonl", "paraphrases.jsonl",
                 "paraphrases_verdicts.jsonl", "train_s3ft.jsonl", "eval/base.jsonl", "eval/s3ft_verdicts.jsonl",
                 "summary.json", "report.md"]:
        assert (run / name).exists(), name
    assert (run / "adapters/s3ft/model/adapter_config.json").exists()
    rows = read_jsonl(run / "train_s3ft.jsonl")
    assert all(r["source"] in {"self", "paraphrase", "gold"} and r["reason"] for r in rows)
    # a random model only babbles: every answer is cut at max_new_tokens and never accepted
    verdicts = read_jsonl(run / "answers_verdicts.jsonl")
    gens = {g["id"]: g for g in read_jsonl(run / "answers.jsonl")}
    assert all(not v["correct"] for v in verdicts if gens[v["id"]]["finish_reason"] == "length")
    assert "| s3ft |" in (run / "report.md").read_text()


@register_backend("scripted")
class ScriptedBackend:
    """Answers correctly for even-numbered rows, paraphrases correctly for rows divisible by 3."""
    calls: list = []

    def __init__(self, model_path, model_cfg, gen_cfg, adapter=None):
        from s3ft.config import DataConfig
        from s3ft.tasks import get_task
        self.answers = {e.id: e.meta["answer"] for e in get_task(DataConfig(task="arithmetic")).load("train")}

    def generate(self, requests, max_new_tokens, stop=(), stop_regex=None):
        for r in requests:
            ScriptedBackend.calls.append(r.id)
            n = int(r.id.rsplit("-", 1)[-1])
            para = bool(r.prefill)
            ok = (n % 3 == 0) if para else (n % 2 == 0)
            answer = self.answers.get(r.id, "0") if ok else "-1"
            text = f" First I add the numbers carefully, then I subtract what was given away. The answer is {answer}."
            yield [Generation(r.id, text, "stop", 10, 20)]

    def close(self):
        pass


def test_selection_tiers_through_the_pipeline(run_overrides):
    cfg = load_config(None, run_overrides + ["generation.backend=scripted", "methods=[s3ft, ssr]",
                                             "data.task_args={n_train: 1000, n_test: 200}"])
    run_pipeline(cfg, until="select")
    run = Path(cfg.output_dir)
    rows = read_jsonl(run / "train_s3ft.jsonl")
    for r in rows:
        n = int(r["id"].rsplit("-", 1)[-1])
        expected = "self" if n % 2 == 0 else "paraphrase" if n % 3 == 0 else "gold"
        assert r["source"] == expected, r
    # paraphrases are asked for only where the own answer failed, with the prefill kept in the target
    paras = read_jsonl(run / "paraphrases.jsonl")
    assert {p["id"] for p in paras} == {r["id"] for r in rows if int(r["id"].rsplit("-", 1)[-1]) % 2}
    para_targets = [r["target"] for r in rows if r["source"] == "paraphrase"]
    assert all(t.startswith("Great! Let's think step by step.") for t in para_targets)
    ssr = {r["id"]: r["source"] for r in read_jsonl(run / "train_ssr.jsonl")}
    assert set(ssr.values()) <= {"self", "gold"}
    stats = json.loads((run / "train_s3ft.stats.json").read_text())
    assert sum(stats["target_mix"].values()) == len(rows)


class Crash(Exception):
    pass


def test_resume_after_crash_does_not_recompute(run_overrides, monkeypatch):
    cfg = load_config(None, run_overrides)
    calls, crash = [], [True]
    real = HFBackend._prefill_shared_prefix

    def flaky(self, batch_ids):
        calls.append(len(batch_ids))
        if len(calls) == 2 and crash[0]:
            crash[0] = False
            raise Crash  # dies once the first rows were written, as more prompts start
        return real(self, batch_ids)

    monkeypatch.setattr(HFBackend, "_prefill_shared_prefix", flaky)
    with pytest.raises(Crash):
        run_pipeline(cfg, until="generate")
    on_disk = read_jsonl(Path(cfg.output_dir) / "answers.jsonl")
    assert 0 < len(on_disk) < 12
    calls.clear()
    run_pipeline(cfg, until="generate")
    rows = read_jsonl(Path(cfg.output_dir) / "answers.jsonl")
    assert sum(calls) == 12 - len(on_disk)  # only the missing rows were generated
    assert sorted(r["id"] for r in rows) == sorted({r["id"] for r in rows}) and len(rows) == 12
    assert rows[:len(on_disk)] == on_disk  # finished rows untouched


def test_changed_prompt_is_not_silently_reused(run_overrides):
    run_pipeline(load_config(None, run_overrides), until="generate")
    with pytest.raises(S3FTError, match="answers.jsonl: made with different settings"):
        run_pipeline(load_config(None, run_overrides + ["generation.max_new_tokens=13"]), until="generate")
    with pytest.raises(S3FTError, match="data/train.jsonl: made with different settings"):
        run_pipeline(load_config(None, run_overrides + ["data.seed=5"]), until="generate")


def test_new_judge_version_is_not_silently_reused(run_overrides, monkeypatch):
    from s3ft.judges import JUDGES
    run_pipeline(load_config(None, run_overrides), until="judge")
    for cls in JUDGES.values():
        monkeypatch.setattr(cls, "version", 2, raising=False)
    with pytest.raises(S3FTError, match="answers_verdicts.jsonl: made with different settings"):
        run_pipeline(load_config(None, run_overrides), until="judge")


def test_kill_9_during_generation_loses_and_duplicates_nothing(run_overrides, tmp_path):
    overrides = [o for o in run_overrides if not o.startswith(("generation.batch_size", "data.train_limit",
                                                               "generation.max_new_tokens"))]
    overrides += ["generation.batch_size=2", "data.train_limit=40", "generation.max_new_tokens=64"]
    cmd = [sys.executable, "-m", "s3ft.cli", "generate"]
    cfg_path = tmp_path / "c.yaml"
    cfg_path.write_text("")
    cmd += [str(cfg_path)] + [x for o in overrides for x in ("--set", o)]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    answers = Path(load_config(None, overrides).output_dir) / "answers.jsonl"
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and (not answers.exists() or len(answers.read_text().splitlines()) < 4):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = read_jsonl(answers)
    assert 4 <= len(before) < 40, "kill landed after the stage finished; make the stage longer"
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    after = read_jsonl(answers)
    ids = [r["id"] for r in after]
    assert len(ids) == len(set(ids)) == 40
    assert after[:len(before)] == before


def test_resumed_run_reports_the_cost_of_stages_finished_before_it(run_overrides, monkeypatch):
    cfg = load_config(None, run_overrides + ["methods=[sft]"])
    real, calls = HFBackend._prefill_shared_prefix, []

    def crash_at_second_batch(self, batch_ids):
        calls.append(1)
        if len(calls) == 2:
            raise Crash
        return real(self, batch_ids)

    monkeypatch.setattr(HFBackend, "_prefill_shared_prefix", crash_at_second_batch)
    with pytest.raises(Crash):  # the first invocation dies part-way through generation
        run_pipeline(cfg)
    monkeypatch.setattr(HFBackend, "_prefill_shared_prefix", real)
    run_pipeline(cfg, until="judge")  # the second finishes generation and judging
    run = Path(cfg.output_dir)
    answers = json.loads((run / "answers.meta.json").read_text())["cost"]
    assert answers["rows"] == 12 and answers["tokens"] > 0 and answers["wall_s"] > 0  # both invocations' rows
    assert answers["peak_rss_gib"] > 0  # kept with the artifact, like its time

    stages = run_pipeline(cfg)["cost"]["stages"]  # the third trains and evaluates
    assert stages["generate:answers"] == {**answers, "reused": True}
    assert stages["judge:answers_verdicts"]["rows"] == 12 and stages["judge:answers_verdicts"]["reused"]
    assert stages["train:sft"]["rows"] == 12 and not stages["train:sft"]["reused"]
    assert {s for s, c in stages.items() if not c["reused"]} == {
        "train:sft", "generate:base", "judge:base_verdicts", "generate:sft", "judge:sft_verdicts"}
    assert all(c["peak_rss_gib"] > 0 for c in stages.values()), stages  # measured, or kept from before
    assert stages["train:sft"]["peak_rss_gib"] == json.loads((run / "adapters/sft/train_meta.json").read_text())[
        "cost"]["peak_rss_gib"]
    assert "| generate:answers |" in (run / "report.md").read_text()
    assert "peak RSS GiB" in (run / "report.md").read_text()


def test_a_changed_memory_budget_reuses_the_trained_adapter_other_training_settings_do_not(run_overrides):
    cfg = load_config(None, run_overrides + ["methods=[sft]"])
    run_pipeline(cfg, until="train")
    meta = Path(cfg.output_dir) / "adapters/sft/train_meta.json"
    made = meta.stat().st_mtime_ns
    # micro-batches change how a step is split, not what it computes: the adapter is kept
    run_pipeline(load_config(None, run_overrides + ["methods=[sft]", "train.memory_budget_gib=0.5"]), until="train")
    assert meta.stat().st_mtime_ns == made
    with pytest.raises(S3FTError, match="trained with different settings"):
        run_pipeline(load_config(None, run_overrides + ["methods=[sft]", "train.learning_rate=0.001"]), until="train")


def test_training_fingerprint_ignores_empty_and_logging_only_sft_args_and_follows_the_rest():
    from s3ft.artifacts import fingerprint
    from s3ft.pipeline import train_key
    demo = load_config(Path(__file__).parents[1] / "src" / "s3ft" / "configs" / "demo.yaml").train
    # What the demo's adapters were fingerprinted with before train.sft_args existed: runs made
    # then are not retrained.
    assert fingerprint(train_key(demo)) == "38df3f22071a3b58"
    logging_only = dataclasses.replace(demo, sft_args={"report_to": ["tensorboard"], "logging_steps": 1,
                                                       "push_to_hub": True, "hub_model_id": "me/adapter"})
    assert fingerprint(train_key(logging_only)) == fingerprint(train_key(demo))
    decayed = dataclasses.replace(demo, sft_args={"report_to": ["tensorboard"], "weight_decay": 0.1})
    assert train_key(decayed)["sft_args"] == {"weight_decay": 0.1}
    assert fingerprint(train_key(decayed)) != fingerprint(train_key(demo))
