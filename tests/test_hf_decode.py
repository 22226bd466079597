"""The HF backend's cheaper decode step (`hf_decode`) and shared-prefix prefill: same text, less work."""

from __future__ import annotations

import torch

from s3ft.backends import GenRequest
from s3ft.backends import render_prompt
from s3ft.backends.hf import HFBackend
from s3ft.backends.hf_decode import GrowingLayer, blocked_vocab_projection, growing_cache
from s3ft.config import GenerationConfig, ModelConfig


def requests(n: int, system: str = "") -> list[GenRequest]:
    head = [{"role": "system", "content": system}] if system else []
    return [GenRequest(str(i), head + [{"role": "user", "content": f"question {i} " * (1 + i % 3)}])
            for i in range(n)]


def test_growing_cache_generates_what_the_default_cache_does(varied_model_dir, monkeypatch):
    backend = HFBackend(str(varied_model_dir), ModelConfig(dtype="float32"), GenerationConfig())
    model, tok = backend.model, backend.tokenizer
    enc = tok([render_prompt(tok, r) for r in requests(4)], return_tensors="pt", padding=True,
              add_special_tokens=False)
    monkeypatch.setattr(GrowingLayer, "spare", 3)  # outgrow the buffer several times in 20 steps
    args = dict(max_new_tokens=20, do_sample=False, eos_token_id=[], pad_token_id=tok.pad_token_id)
    cache = growing_cache(model)
    grown = model.generate(**enc, past_key_values=cache, **args)
    plain = model.generate(**enc, **args)
    assert torch.equal(grown, plain)
    layer = cache.layers[0]
    assert isinstance(layer, GrowingLayer) and layer.keys.data_ptr() == layer._k.data_ptr()
    assert layer._k.shape[-2] - layer.keys.shape[-2] <= 3  # grown in place, a few spare positions


def test_blocked_vocab_projection_gives_the_same_logits_and_restores_the_head(tiny_model_dir):
    backend = HFBackend(str(tiny_model_dir), ModelConfig(dtype="float32"), GenerationConfig())
    model = backend.model
    head = model.get_output_embeddings()
    assert head.out_features > 2 * 1024  # the real tokenizer's vocabulary: the blocked path runs
    ids = torch.randint(0, head.out_features, (3, 7))
    with torch.inference_mode():
        plain = model(input_ids=ids).logits
        with blocked_vocab_projection(model):
            assert "forward" in head.__dict__
            blocked = model(input_ids=ids).logits
    assert "forward" not in head.__dict__
    torch.testing.assert_close(blocked, plain, rtol=0, atol=1e-6)


def test_a_shared_prompt_prefix_is_computed_once_with_the_same_text(varied_model_dir, monkeypatch):
    reqs = requests(6, system="You are a careful solver. Think step by step and state the answer at the end.")

    def run(min_shared: int):
        backend = HFBackend(str(varied_model_dir), ModelConfig(dtype="float32"), GenerationConfig(batch_size=8))
        monkeypatch.setattr(backend, "min_shared_prefix", min_shared)
        widths = []  # a hook, not a wrapper: `generate` reads `forward`'s signature to pass position ids
        backend.model.register_forward_pre_hook(lambda m, a, kw: widths.append(tuple(kw["input_ids"].shape)),
                                                with_kwargs=True)
        return {g.id: (g.text, g.completion_tokens) for b in backend.generate(reqs, 16) for g in b}, widths

    (plain, plain_calls), (shared, shared_calls) = run(10**9), run(8)
    assert shared == plain
    prompt_lens = sorted({c[1] for c in plain_calls if c[1] > 1})
    assert plain_calls[0][0] == 6 and len(prompt_lens) == 1  # one prefill of all 6 full prompts
    prefix_len = shared_calls[0][1]
    assert shared_calls[0][0] == 1 and prefix_len >= 8  # the prefix, once
    assert shared_calls[1] == (6, prompt_lens[0] - prefix_len)  # then only each row's own tokens
