"""Self-generated replay (`train.replay`): the base model's own samples, drawn once, with weight x KL(base ||
tuned) on a replay batch added to every step. Specifications: off, it changes nothing; the KL it adds is the
meter's response KL on the replay set; the dry run prices the samples and the replayed training; a tiny
model trained hard drifts less, as the forgetting meter reads it, with replay than without."""

import json
import math
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from s3ft.config import load_config
from s3ft.cost import _train_stage, estimate
from s3ft.errors import S3FTError
from s3ft.pipeline import run_pipeline
from s3ft.replay import ARTIFACT, replay_messages


@pytest.mark.parametrize("setting,message", [
    ("train.replay.weight=-1", r"train.replay.weight: must be >= 0, got -1.0"),
    ("train.replay.samples=0", r"train.replay.samples: must be >= 1, got 0"),
    ("train.replay.temperature=0", r"train.replay.temperature: must be > 0"),
    ("train.replay.top_p=1.5", r"train.replay.top_p: must be in \(0, 1\]"),
    ("train.replay.batch_size=0", r"train.replay.batch_size: must be >= 1"),
    ("train.replay.sampels=8", r"train.replay: unknown key 'sampels'"),
    ("train.replay=3", r"train.replay: expected a mapping"),
])
def test_replay_config_errors_name_the_key(run_overrides, setting, message):
    with pytest.raises(S3FTError, match=message):
        load_config(None, run_overrides + [setting])


def test_replay_needs_lora_and_is_off_by_default(run_overrides, tmp_path):
    with pytest.raises(S3FTError, match=r"train.replay.weight: replay needs train.lora"):
        load_config(None, run_overrides + ["train.replay.weight=1", "train.lora=false"])
    cfg = load_config(None, run_overrides)
    assert not cfg.train.replay.enabled and cfg.train.replay.weight == 0
    # the section from a file: each field as documented
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  replay:\n    weight: 0.5\n    samples: 16\n    max_new_tokens: 64\n")
    r = load_config(path, run_overrides).train.replay
    assert (r.enabled, r.weight, r.samples, r.max_new_tokens, r.temperature) == (True, 0.5, 16, 64, 1.0)


def _lora_model(model_dir: Path, scale: float):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM
    torch.manual_seed(0)
    peft = get_peft_model(AutoModelForCausalLM.from_pretrained(model_dir),
                          LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", task_type="CAUSAL_LM"))
    with torch.no_grad():
        for name, p in peft.named_parameters():
            if "lora_B" in name:
                p.normal_(0, scale) if scale else p.zero_()
    return peft


def test_replay_kl_is_the_meters_response_kl_on_the_samples_and_trains_the_adapter(varied_model_dir):
    import torch
    from s3ft.forgetting.scoring import completion_logprobs
    from s3ft.replay import ReplaySet
    from s3ft.replay.trainer import replay_batch, replay_kl
    tok = AutoTokenizer.from_pretrained(varied_model_dir)
    samples = ReplaySet(replay_messages(load_config(None, []).train.replay),
                        ["Hello there.", "A longer sample, of several more words than the first one.", "Ok"], "fp")
    rows = samples.encoded(tok, 256)
    assert len({start for _, start in rows}) == 1 and all(len(ids) > start for ids, start in rows)
    # rows with prompts of different lengths score only their own response tokens too
    rows.append(([1, 2, 3, 4, 5, 6, 7, 8, 9], 4))
    batch = replay_batch(rows, tok.pad_token_id, "cpu")
    assert int(batch["scored"].sum()) == sum(len(ids) - start for ids, start in rows)

    untrained = _lora_model(varied_model_dir, 0.0)
    assert replay_kl(untrained, batch).item() == pytest.approx(0.0, abs=1e-7)

    model = _lora_model(varied_model_dir, 0.3)
    kl = replay_kl(model, batch)
    with torch.no_grad():  # the meter's way: each row alone, left-padded, token-weighted mean
        with model.disable_adapter():
            base = completion_logprobs(model, rows, tok.pad_token_id)
        tuned = completion_logprobs(model, rows, tok.pad_token_id)
    expected = sum(float((b.exp() * (b - t)).sum()) for b, t in zip(base, tuned)) / sum(len(b) for b in base)
    assert kl.item() == pytest.approx(expected, rel=1e-4) and kl.item() > 1e-3
    kl.backward()  # the gradient reaches the adapter, and only through the tuned pass
    grads = [p.grad for n, p in model.named_parameters() if "lora_" in n]
    assert any(g is not None and g.abs().sum() > 0 for g in grads)


def _replay_on(samples: int = 6) -> list[str]:
    return ["train.replay.weight=1", f"train.replay.samples={samples}", "train.replay.max_new_tokens=16",
            "train.replay.batch_size=3"]


def test_the_dry_run_prices_the_samples_and_the_replayed_training(run_overrides, tiny_model_dir):
    both = run_overrides + ["methods=[sft, opsd]", "opsd.max_completion_length=64"]
    plain = estimate(load_config(None, both), probe=False)["stages"]
    zero = estimate(load_config(None, both + ["train.replay.samples=6"]), probe=False)["stages"]
    assert zero == plain and "generate:replay_samples" not in plain  # weight 0: nothing to price
    cfg = load_config(None, both + _replay_on())
    st = estimate(cfg, probe=False)["stages"]
    samples = st["generate:replay_samples"]
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    prompt = len(tok(tok.apply_chat_template(replay_messages(cfg.train.replay), add_generation_prompt=True,
                                             tokenize=False), add_special_tokens=False)["input_ids"])
    assert samples["rows"] == 6 and samples["prompt_tokens"] == 6 * prompt
    assert samples["output_tokens_max"] == samples["output_tokens_expected"] == 6 * 16 and samples["upper_bound"]
    train = st["train:sft"]  # 12 rows in steps of 4: 3 steps, each replaying 3 samples of <= prompt + 16 tokens
    assert train["steps"] == 3 and train["replay_rows"] == 9 and train["replay_tokens"] == 9 * (prompt + 16)
    assert {k: v for k, v in train.items() if not k.startswith("replay")} == plain["train:sft"]
    assert "replay_tokens" not in st["train:opsd"]  # a method with its own trainer takes no replay
    # with a measured probe, the replay adds its tokens at the trained-token rate, plus the base model's pass
    probe = {"train": {"token_s": 0.01, "step_s": 0.5}}
    without = _train_stage(cfg, cfg.model.name_or_path, [100, 60, 80, 80], 1, probe, 1)
    with_replay = _train_stage(cfg, cfg.model.name_or_path, [100, 60, 80, 80], 1, probe, 1, replay_seq=50)
    assert with_replay["replay_tokens"] == math.ceil(3 / without["grad_accum"]) * without["grad_accum"] * 50
    assert with_replay["est_s"] == pytest.approx(without["est_s"] + with_replay["replay_tokens"] * 0.01 * 4 / 3,
                                                 abs=0.1)


# A tiny model trained hard (high learning rate, many steps) on the same rows and seed.
HARD = ["methods=[sft]", "data.train_limit=12", "data.test_limit=2", "train.epochs=4", "train.batch_size=2",
        "train.learning_rate=0.02", "forgetting.enabled=true", "forgetting.text_limit=8",
        "forgetting.prompts_limit=6", "forgetting.max_new_tokens=24"]
REPLAY = ["train.replay.weight=10", "train.replay.samples=16", "train.replay.max_new_tokens=24",
          "train.replay.batch_size=4"]


@pytest.fixture(scope="module")
def runs(tiny_model_dir, tmp_path_factory):
    """One run directory, three times: `plain` (no replay section), then `zero` (the section at weight 0) on
    what plain made, without --force, then `replay` with --force (only what replay changes is redone).
    {name: (summary, what the run directory held after it)}."""
    run = tmp_path_factory.mktemp("replay") / "run"
    base = [f"model.name_or_path={tiny_model_dir}", "model.dtype=float32", "data.task=arithmetic",
            "generation.max_new_tokens=12", "generation.batch_size=8", "train.max_length=256",
            f"output_dir={run}"] + HARD
    out = {}
    for name, extra, force in (("plain", [], False), ("zero", ["train.replay.weight=0"] + REPLAY[1:], False),
                               ("replay", REPLAY, True)):
        out[name] = run_pipeline(load_config(None, base + extra), force=force), _artifacts(run)
    return run, out


def _artifacts(run: Path) -> dict[str, object]:
    """What a run directory holds, by path: each stage artifact's fingerprint and rows, each adapter's training
    fingerprint and weights, the selections, the evaluation metrics and the meter's summary."""
    from safetensors.torch import load_file
    out: dict[str, object] = {}
    for f in sorted(run.rglob("*")):
        rel = str(f.relative_to(run))
        if not f.is_file() or "checkpoints" in rel:
            continue
        if f.name.endswith(".meta.json") or f.name == "train_meta.json":
            out[rel] = json.loads(f.read_text())["fingerprint"]
        elif f.suffix == ".jsonl" or f.name.endswith(".stats.json") or f.name.endswith(".metrics.json"):
            out[rel] = f.read_text()
        elif f.name == "adapter_model.safetensors":
            out[rel] = {k: v.tolist() for k, v in load_file(f).items()}
        elif rel == "forgetting/summary.json":
            out[rel] = json.loads(f.read_text())["models"]
    return out


def test_replay_at_weight_0_leaves_every_artifact_and_fingerprint_unchanged(runs):
    _, out = runs
    (_, plain), (summary, zero) = out["plain"], out["zero"]
    # without --force a changed fingerprint is an error: every stage's work was taken as it was
    # ("forgetting" records each invocation's scoring time; its drift rows are among the artifacts compared)
    redone = [k for k, c in summary["cost"]["stages"].items() if not c["reused"] and k != "forgetting"]
    assert redone == [] and "train:sft" in summary["cost"]["stages"]
    assert zero == plain and any(k.endswith("adapter_model.safetensors") for k in plain)
    assert "forgetting/summary.json" in plain and ARTIFACT not in plain


def test_replay_samples_are_the_base_models_own_drawn_once_and_fingerprinted(runs):
    run, out = runs
    summary, _ = out["replay"]
    rows = [json.loads(line) for line in (run / ARTIFACT).read_text().splitlines()]
    assert [r["id"] for r in rows] == [f"replay/{i}" for i in range(16)]
    assert len({r["text"] for r in rows}) == 16  # sampled: each its own draw
    meta = json.loads((run / "replay_samples.meta.json").read_text())
    assert meta["done"] and meta["inputs"]["sampling"] == {"temperature": 1.0, "top_p": 1.0, "seed": 0}
    assert "train" not in meta["inputs"]  # nothing of train (its seed) in what they depend on
    trained = json.loads((run / "adapters" / "sft" / "train_meta.json").read_text())
    assert trained["inputs"]["train"]["replay"]["samples_fingerprint"] == meta["fingerprint"]
    stats = trained["stats"]["replay"]
    assert stats["samples"] == 16 and stats["tokens"] > 0 and stats["last_logged_kl"] > 0  # logged
    cost = summary["cost"]["stages"]
    assert cost["generate:replay_samples"]["rows"] == 16 and not cost["train:sft"]["reused"]
    assert cost["generate:answers"]["reused"]  # replay redoes training and what follows it, nothing before


def test_replay_lowers_the_drift_the_meter_reads(runs):
    _, out = runs
    plain = out["plain"][0]["forgetting"]["models"]["sft"]
    replay = out["replay"][0]["forgetting"]["models"]["sft"]
    assert plain["drift/response_kl"]["ci95"][0] > 0  # trained hard enough to drift
    # the meter's probes (instructions, passages) share nothing with the replay samples, yet drift less
    assert replay["drift/response_kl"]["value"] < 0.8 * plain["drift/response_kl"]["value"]
    assert replay["drift/response_nll_delta"]["value"] < plain["drift/response_nll_delta"]["value"]
