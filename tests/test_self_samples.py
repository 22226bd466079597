"""Best-of-k own answers (`generation.self_samples`): sampled where the greedy answer failed, judged,
and the accepted sample the base model finds most likely taken as the own answer."""

import pytest

from s3ft.artifacts import read_jsonl
from s3ft.backends import BACKENDS, GenRequest, Generation, Sampling, register_backend
from s3ft.backends.hf import HFBackend
from s3ft.config import DataConfig, GenerationConfig, ModelConfig, load_config
from s3ft.errors import S3FTError
from s3ft.pipeline import run_pipeline
from s3ft.tasks import get_task


def row_number(request_id: str) -> int:
    return int(request_id.split("#")[0].rsplit("-", 1)[-1])


SAMPLES_RIGHT = {0: (), 1: (1, 3), 2: (2,)}


@register_backend("sampling_script")
class SamplingScript:
    """Greedy: right on rows divisible by 4. Samples of a row: right for j in {1, 3} when row % 3 == 1 (two
    compete), for j == 2 when row % 3 == 2, never when row % 3 == 0; worded differently for each j. Paraphrases: always right. Records the temperature of every call."""
    temperatures: list = []
    requests: list = []

    def __init__(self, model_path, model_cfg, gen_cfg, adapter=None):
        self.gen_cfg = gen_cfg
        self.answers = {e.id: e.meta["answer"] for e in get_task(DataConfig(task="arithmetic")).load("train")}

    def generate(self, requests, max_new_tokens, stop=(), stop_regex=None):
        SamplingScript.temperatures.append(self.gen_cfg.temperature)
        for r in requests:
            SamplingScript.requests.append(r.id)
            row_id, _, j = r.id.partition("#")
            n = row_number(r.id)
            if r.prefill:
                ok, words = True, "Restating the solution step by step, I add and subtract as the question says."
            elif j:
                ok, words = int(j) in SAMPLES_RIGHT[n % 3], "Let me think. " * int(j) + "I add the numbers, then subtract."
            else:
                ok, words = n % 4 == 0, "I add the numbers carefully, then subtract what was given away."
            answer = self.answers.get(row_id, "0") if ok else "-1"
            yield [Generation(r.id, f" {words} The answer is {answer}.", "stop", 10, 20)]

    def close(self):
        pass


@pytest.fixture
def scripted(run_overrides):
    SamplingScript.temperatures.clear()
    SamplingScript.requests.clear()
    yield run_overrides + ["generation.backend=sampling_script", "methods=[s3ft, ssr, sft]",
                           "data.task_args={n_train: 1000, n_test: 200}"]
    SamplingScript.temperatures.clear()


def test_failed_rows_get_k_minus_1_samples_and_an_accepted_one_becomes_the_own_answer(scripted):
    k = 4
    cfg = load_config(None, scripted + [f"generation.self_samples={k}", "generation.self_sample_temperature=0.9"])
    run_pipeline(cfg, until="select")
    run = cfg.output_dir
    answers = {r["id"]: r for r in read_jsonl(f"{run}/answers.jsonl")}
    failed = sorted(i for i in answers if row_number(i) % 4)
    samples = {s["id"]: s for s in read_jsonl(f"{run}/self_samples.jsonl")}
    assert sorted(samples) == sorted(f"{i}#{j}" for i in failed for j in range(1, k))
    # greedy calls at the config's temperature, sample calls at the sampling one; the backend is restored
    assert set(SamplingScript.temperatures) == {0.0, 0.9} and SamplingScript.temperatures[-1] == 0.0

    nll = {r["id"]: r["nll"] for r in read_jsonl(f"{run}/self_samples_nll.jsonl")}
    rows = {r["id"]: r for r in read_jsonl(f"{run}/train_s3ft.jsonl")}
    rescued = 0
    for i, r in rows.items():
        n = row_number(i)
        accepted = [f"{i}#{j}" for j in SAMPLES_RIGHT[n % 3]]
        if n % 4 == 0:
            assert r["source"] == "self" and r["target"] == answers[i]["text"]
        elif accepted:
            rescued += 1
            assert r["source"] == "self", r
            if len(accepted) > 1:  # competing samples: the lowest NLL under the base model wins
                best = min(accepted, key=nll.__getitem__)
                assert set(accepted) <= set(nll)
                assert r["target"] == samples[best]["text"] and r["reason"].startswith(f"sample {best[-1]} of 3:")
            else:
                assert r["target"] == samples[accepted[0]]["text"]
        else:
            assert r["source"] == "paraphrase", r
    assert rescued > 0 and any(row_number(i) % 3 == 0 and row_number(i) % 4 for i in rows)
    # only rows with no accepted own answer are paraphrased
    paraphrased = {p["id"] for p in read_jsonl(f"{run}/paraphrases.jsonl")}
    assert paraphrased == {i for i, r in rows.items() if r["source"] == "paraphrase"}
    ssr = {r["id"]: r for r in read_jsonl(f"{run}/train_ssr.jsonl")}
    assert all(ssr[i]["target"] == r["target"] for i, r in rows.items() if r["source"] == "self")
    import json
    stats = json.loads(open(f"{run}/train_s3ft.stats.json").read())
    assert stats["self_from_samples"] == rescued
    assert "self_from_samples" not in json.loads(open(f"{run}/train_sft.stats.json").read())


def test_one_self_sample_is_the_greedy_answer_alone(scripted):
    cfg = load_config(None, scripted)
    assert cfg.generation.self_samples == 1
    run_pipeline(cfg, until="select")
    assert not any("#" in r for r in SamplingScript.requests)
    assert set(SamplingScript.temperatures) == {0.0}
    import os
    assert not any(f.startswith("self_samples") for f in os.listdir(cfg.output_dir))


def test_self_samples_below_one_is_a_config_error(run_overrides):
    with pytest.raises(S3FTError, match="generation.self_samples"):
        load_config(None, run_overrides + ["generation.self_samples=0"])


def test_the_hf_backend_samples_repeated_prompts_independently(tiny_model_dir):
    backend = HFBackend(str(tiny_model_dir), ModelConfig(dtype="float32"), GenerationConfig(batch_size=8))
    prompt = [{"role": "user", "content": "Say something."}]
    requests = [GenRequest(f"q#{j}", prompt) for j in range(6)]
    texts = [g.text for batch in Sampling(backend, 1.0, 1.0).generate(requests, 8) for g in batch]
    assert len(set(texts)) > 1
    assert backend.gen_cfg.temperature == 0.0  # greedy again afterwards
    greedy = [g.text for batch in backend.generate(requests[:2], 8) for g in batch]
    assert greedy[0] == greedy[1]


def test_the_dry_run_prices_the_samples_from_the_same_plan(scripted):
    from s3ft.cost import estimate
    cfg = load_config(None, scripted + ["generation.self_samples=3"])
    stage = estimate(cfg, probe=False)["stages"]["generate:self_samples"]
    assert stage["rows"] == 12 * 2 and stage["upper_bound"]  # every row's 2 samples, before any verdict
    assert "generate:self_samples" not in estimate(load_config(None, scripted), probe=False)["stages"]


def test_a_sweep_reuses_the_samples_of_the_first_seed(tmp_path):
    from s3ft.sweep import reuse_seed_independent
    first, second = tmp_path / "seed0", tmp_path / "seed1"
    first.mkdir()
    for name in ("self_samples.jsonl", "self_samples.meta.json", "self_samples_verdicts.jsonl", "self_samples_nll.jsonl"):
        (first / name).write_text(name)
    (first / "train_s3ft.jsonl").write_text("depends on the selection, made again")
    copied = reuse_seed_independent(first, second)
    assert {"self_samples.jsonl", "self_samples_verdicts.jsonl", "self_samples_nll.jsonl"} <= set(copied)
    assert (second / "self_samples.meta.json").read_text() == "self_samples.meta.json"
    assert not (second / "train_s3ft.jsonl").exists()


def test_samples_are_their_own_stage_judging_makes_none(scripted):
    """`s3ft judge` judges the greedy answers only; the `samples` stage (`s3ft samples`) makes the samples."""
    from pathlib import Path
    from s3ft.plan import stages_until
    cfg = load_config(None, scripted + ["generation.self_samples=3"])
    assert stages_until(cfg, "select") == ["data", "generate", "judge", "samples", "paraphrase", "select"]
    run_pipeline(cfg, until="judge")
    run = Path(cfg.output_dir)
    assert (run / "answers_verdicts.jsonl").is_file() and not (run / "self_samples.jsonl").exists()
    assert not any("#" in r for r in SamplingScript.requests)
    run_pipeline(cfg, until="samples")
    assert {r["id"].split("#")[0] for r in read_jsonl(run / "self_samples.jsonl")} == \
        {i for i in (r["id"] for r in read_jsonl(run / "answers.jsonl")) if row_number(i) % 4}
    assert (run / "self_samples_verdicts.jsonl").is_file()
    # without best-of-k the stage is not in a run's plan, but asked for it does nothing
    one = load_config(None, scripted)
    assert "samples" not in stages_until(one, "report") and stages_until(one, "samples")[-1] == "samples"
