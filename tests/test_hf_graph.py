"""The static-cache decode path (`hf_graph`): on CPU its fixed-shape step runs eagerly and must give
the eager `generate` path's text; CUDA graph capture and replay are tested in test_cuda.py."""

from __future__ import annotations

import re

import pytest
import torch
from test_hf_backend import _rows_ending_at_different_steps
from test_hf_decode import requests

from s3ft.backends.hf import HFBackend
from s3ft.backends.hf_graph import StaticDecoder, buckets
from s3ft.config import GenerationConfig, ModelConfig


def _generate(model_dir, reqs, static: bool, max_new: int = 16, eos=None, stop_regex=None, **gen):
    """{id: (text, finish reason, completion tokens)}, the backend, and the bucket of every static step."""
    backend = HFBackend(str(model_dir), ModelConfig(dtype="float32"), GenerationConfig(**gen))
    backend.static_decode = static
    if eos is not None:
        backend.eos_ids = eos
    sizes, real = [], StaticDecoder.step

    def step(self, b):
        sizes.append(b)
        real(self, b)
    StaticDecoder.step = step
    try:
        out = {g.id: (g.text, g.finish_reason, g.completion_tokens)
               for batch in backend.generate(reqs, max_new, stop_regex=stop_regex) for g in batch}
    finally:
        StaticDecoder.step = real
    return out, backend, sizes


def test_buckets_are_powers_of_two_then_the_batch_size():
    assert buckets(1) == [1]
    assert buckets(8) == [1, 2, 4, 8]
    assert buckets(24) == [1, 2, 4, 8, 16, 24]


def test_static_step_decodes_what_the_eager_path_does_with_a_shared_prefix(varied_model_dir):
    reqs = requests(6, system="You are a careful solver. Think step by step and state the answer at the end.")
    eager, _, eager_sizes = _generate(varied_model_dir, reqs, static=False, batch_size=8)
    static, backend, sizes = _generate(varied_model_dir, reqs, static=True, batch_size=8)
    assert static == eager and not eager_sizes
    dec = backend._static
    assert sizes and set(sizes) == {6} and dec.capacity == 6  # one bucket: all rows run to the budget
    assert dec.captures == 0  # on CPU the step runs eagerly


def test_static_path_refills_and_compacts_slots_with_the_same_text(tokenizer_dir, tmp_path):
    """Rows end at different steps: waiting prompts take free slots, then live rows move into smaller buckets."""
    reqs, eos = _rows_ending_at_different_steps(tokenizer_dir, tmp_path, 16)
    eager, _, _ = _generate(tmp_path, reqs, static=False, max_new=24, eos=eos, batch_size=4)
    static, _, sizes = _generate(tmp_path, reqs, static=True, max_new=24, eos=eos, batch_size=4)
    assert {r for _, r, _ in eager.values()} == {"stop", "length"}
    assert static == eager
    first_small = next(i for i, b in enumerate(sizes) if b < 4)
    assert first_small > 8 and set(sizes[first_small:]) <= {1, 2}  # full while prompts wait, then smaller


def test_answer_stop_cuts_the_same_text_on_the_static_path(varied_model_dir):
    reqs = requests(5)
    plain, _, _ = _generate(varied_model_dir, reqs, static=False, max_new=24, batch_size=8)
    texts = [t for t, _, _ in plain.values() if len(t) > 20]
    pattern = re.escape(texts[0][8:12])  # a piece of one answer's text: that row stops early
    eager, _, _ = _generate(varied_model_dir, reqs, static=False, max_new=24, stop_regex=pattern, batch_size=8)
    static, _, _ = _generate(varied_model_dir, reqs, static=True, max_new=24, stop_regex=pattern, batch_size=8)
    assert "stop" in {r for _, r, _ in eager.values()}
    # Token counts of regex-stopped rows depend on how often each path checks; the text does not.
    assert {k: v[:2] for k, v in static.items()} == {k: v[:2] for k, v in eager.items()}


def test_cpu_keeps_the_eager_generate_path_by_default(varied_model_dir, monkeypatch):
    backend = HFBackend(str(varied_model_dir), ModelConfig(dtype="float32"), GenerationConfig(cuda_graphs=True))
    assert backend.model.device.type == "cpu" and not backend.static_decode
    calls, real = [], backend.model.generate
    monkeypatch.setattr(backend.model, "generate", lambda **kw: calls.append(1) or real(**kw))
    monkeypatch.setattr(StaticDecoder, "__init__", lambda *a, **kw: pytest.fail("static cache built on CPU"))
    texts = [g.text for b in backend.generate(requests(3), 8) for g in b]
    assert len(texts) == 3 and calls and backend._static is None


def test_sampling_stays_on_the_eager_path(varied_model_dir, monkeypatch):
    backend = HFBackend(str(varied_model_dir), ModelConfig(dtype="float32"), GenerationConfig(temperature=0.7))
    backend.static_decode = True
    monkeypatch.setattr(StaticDecoder, "__init__", lambda *a, **kw: pytest.fail("static cache used for sampling"))
    assert len([g for b in backend.generate(requests(3), 8) for g in b]) == 3


def test_static_decoder_is_reused_across_calls_that_fit_with_the_same_text(varied_model_dir):
    def static_backend():
        backend = HFBackend(str(varied_model_dir), ModelConfig(dtype="float32"), GenerationConfig(batch_size=4))
        backend.static_decode = True
        return backend

    def texts(backend, reqs, max_new):
        return {g.id: g.text for b in backend.generate(reqs, max_new) for g in b}
    backend = static_backend()
    next(iter(backend.generate(requests(8), 12)))  # abandoned mid-way: slots left with rows in them
    dec = backend._static
    again = texts(backend, requests(8)[::-1], 8)  # same batch size, shorter budget: same buffers
    assert backend._static is dec and dec.keys[0].shape[0] == 4
    assert again == texts(static_backend(), requests(8)[::-1], 8)


def test_free_slots_stay_inside_the_cache_however_long_they_run(varied_model_dir):
    """A slot without a row still runs inside its bucket; it must never write past the last column."""
    backend = HFBackend(str(varied_model_dir), ModelConfig(dtype="float32"), GenerationConfig(batch_size=2))
    backend.static_decode = True
    list(backend.generate(requests(2), 4))
    dec = backend._static
    with torch.inference_mode():  # the decoder's tensors are inference tensors, as in `generate`
        dec.free([0, 1])
        for _ in range(dec.length + 3):
            dec.step(2)
    assert dec.cols.tolist() == [dec.length - 1] * 2 and int(dec.pos.max()) == dec.length - 1


def test_static_step_decodes_a_qwen2_model_as_the_eager_path_does(tokenizer_dir, tmp_path):
    """The 1.5B bench shape is Qwen2 (biased q/k/v projections, its own mask mapping)."""
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM
    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    torch.manual_seed(0)
    Qwen2ForCausalLM(Qwen2Config(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                 num_attention_heads=4, num_key_value_heads=2, initializer_range=1.0,
                                 pad_token_id=tok.pad_token_id)).save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    reqs = requests(6, system="You are a careful solver. Think step by step and state the answer at the end.")
    eager, _, _ = _generate(tmp_path, reqs, static=False, batch_size=4)
    static, _, sizes = _generate(tmp_path, reqs, static=True, batch_size=4)
    assert sizes and static == eager
