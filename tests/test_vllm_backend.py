"""The vLLM backend without a GPU: the child-process protocol, argument mapping, and the
artifacts it writes, with the engine swapped for transformers running in the same child.

On a GPU machine with vLLM installed, `test_real_vllm_matches_hf` runs the real engine.
"""

from __future__ import annotations

import importlib.util
import json
import os

import pytest
import torch

from s3ft.backends import GenRequest
from s3ft.backends import vllm as vllm_backend
from s3ft.config import GenerationConfig, ModelConfig, load_config
from s3ft.errors import S3FTError
from s3ft.pipeline import run_pipeline


def hf_engine(llm_args: dict, adapter: str | None):
    """Stands in for vLLM inside the child: greedy transformers decoding, one prompt at a time."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    tok = AutoTokenizer.from_pretrained(llm_args["tokenizer"])
    model = AutoModelForCausalLM.from_pretrained(llm_args["model"], dtype=torch.float32)
    if adapter:
        from peft import PeftModel
        model = PeftModel.from_pretrained(model, adapter).merge_and_unload()

    def generate(prompt_ids, sampling):
        rows = []
        for ids in prompt_ids:
            prompt = tok.decode(ids)
            if "REFUSE" in prompt:
                raise ValueError("engine refused prompt")
            if "DIE" in prompt:
                os._exit(3)  # the engine process dies (e.g. killed for memory)
            out = model.generate(torch.tensor([ids]), max_new_tokens=sampling["max_tokens"], do_sample=False,
                                 eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                                 temperature=None, top_p=None, top_k=None)[0, len(ids):].tolist()
            done = tok.eos_token_id in out
            new = out[:out.index(tok.eos_token_id) + 1] if done else out
            rows.append((tok.decode(new, skip_special_tokens=True), "stop" if done else "length", len(new)))
        return rows
    return generate


@pytest.fixture
def fake_vllm(monkeypatch):
    monkeypatch.setattr(vllm_backend.VLLMBackend, "factory", f"{__name__}:hf_engine")


def test_engine_and_sampling_args(tmp_path):
    gen = GenerationConfig(temperature=0.0, engine_args={"gpu_memory_utilization": 0.5})
    args = vllm_backend.engine_args("/m", ModelConfig(dtype="bfloat16"), gen, None)
    assert args["model"] == "/m" and args["dtype"] == "bfloat16" and args["gpu_memory_utilization"] == 0.5
    assert "enable_lora" not in args
    (tmp_path / "adapter_config.json").write_text(json.dumps({"r": 12}))
    lora = vllm_backend.engine_args("/m", ModelConfig(), gen, str(tmp_path))
    assert lora["enable_lora"] and lora["max_lora_rank"] == 16  # vLLM accepts powers of two
    with pytest.raises(S3FTError, match="adapter_config.json"):
        vllm_backend.engine_args("/m", ModelConfig(), gen, str(tmp_path / "missing"))
    s = vllm_backend.sampling_args(gen, 64, ("</s>",))
    assert s["max_tokens"] == 64 and s["temperature"] == 0.0 and s["stop"] == ["</s>"] and "top_p" not in s
    sampled = vllm_backend.sampling_args(GenerationConfig(temperature=0.7, seed=3), 64, ())
    assert "seed" not in sampled  # a per-request seed would make repeated prompts sample the same text


def test_missing_vllm_is_a_clear_error(tiny_model_dir, monkeypatch):
    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vLLM is installed here")
    b = vllm_backend.VLLMBackend(str(tiny_model_dir), ModelConfig(), GenerationConfig())
    with pytest.raises(S3FTError, match=r"s3ft\[vllm\]"):
        next(b.generate([GenRequest("a", [{"role": "user", "content": "hi"}])], 4))


def test_same_artifacts_as_hf_backend(fake_vllm, run_overrides, tmp_path):
    """A whole run on the (stand-in) vLLM backend writes the HF backend's rows, adapters included."""
    common = run_overrides + ["generation.batch_size=1", "methods=[s3ft]", "train.epochs=0.34"]
    hf = run_pipeline(load_config(None, common + [f"output_dir={tmp_path / 'hf'}"]))
    vl = run_pipeline(load_config(None, common + [f"output_dir={tmp_path / 'vllm'}", "generation.backend=vllm"]))
    for name in ["answers.jsonl", "paraphrases.jsonl", "eval/base.jsonl", "eval/s3ft.jsonl"]:
        a = (tmp_path / "hf" / name).read_text().splitlines()
        b = (tmp_path / "vllm" / name).read_text().splitlines()
        assert sorted(a) == sorted(b), name
    assert hf["in_domain"] == vl["in_domain"]


def test_engine_errors_and_death_are_clear_and_free_the_process(fake_vllm, tiny_model_dir):
    b = vllm_backend.VLLMBackend(str(tiny_model_dir), ModelConfig(), GenerationConfig())
    ok = list(b.generate([GenRequest("a", [{"role": "user", "content": "2+2?"}])], 4))
    assert [g.id for g in ok[0]] == ["a"]
    proc = b._proc
    with pytest.raises(S3FTError, match="engine refused prompt"):
        list(b.generate([GenRequest("r", [{"role": "user", "content": "REFUSE"}])], 4))
    assert b._proc is None and not proc.is_alive()
    with pytest.raises(S3FTError, match="exit code 3"):
        list(b.generate([GenRequest("d", [{"role": "user", "content": "DIE"}])], 4))
    assert b._proc is None


def test_close_ends_the_engine_process(fake_vllm, tiny_model_dir):
    b = vllm_backend.VLLMBackend(str(tiny_model_dir), ModelConfig(), GenerationConfig())
    list(b.generate([GenRequest("a", [{"role": "user", "content": "hi"}])], 2))
    proc = b._proc
    assert proc.is_alive()
    b.close()
    assert not proc.is_alive() and proc.exitcode == 0


@pytest.mark.skipif(importlib.util.find_spec("vllm") is None or not torch.cuda.is_available(),
                    reason="needs vLLM and a GPU")
def test_real_vllm_matches_hf(tiny_model_dir):
    from s3ft.backends.hf import HFBackend
    reqs = [GenRequest(str(i), [{"role": "user", "content": f"What is {i} + {i}?"}]) for i in range(8)]
    gen = GenerationConfig(batch_size=1, engine_args={"gpu_memory_utilization": 0.2, "enforce_eager": True})
    cfg = ModelConfig(dtype="float32")
    hf = {g.id: g.text for batch in HFBackend(str(tiny_model_dir), cfg, gen).generate(reqs, 8) for g in batch}
    b = vllm_backend.VLLMBackend(str(tiny_model_dir), cfg, gen)
    vl = {g.id: g.text for batch in b.generate(reqs, 8) for g in batch}
    b.close()
    assert sum(hf[k] == vl[k] for k in hf) >= 6  # kernels differ; near-ties on random weights may flip
