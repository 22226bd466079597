"""HF backend behaviour that needs no GPU."""

from __future__ import annotations

import torch

from s3ft.backends import GenRequest, trim
from s3ft.backends.hf import HFBackend
from s3ft.config import GenerationConfig, ModelConfig


def test_out_of_memory_halves_the_batch(tiny_model_dir, monkeypatch):
    backend = HFBackend(str(tiny_model_dir), ModelConfig(), GenerationConfig(batch_size=8))
    real, calls = backend._generate_batch, []

    def flaky(batch_ids, *a, **k):
        calls.append(len(batch_ids))
        if len(batch_ids) > 2:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(batch_ids, *a, **k)
    monkeypatch.setattr(backend, "_generate_batch", flaky)
    reqs = [GenRequest(str(i), [{"role": "user", "content": f"q{i}"}]) for i in range(6)]
    out = [g for b in backend.generate(reqs, 4) for g in b]
    assert sorted(g.id for g in out) == [str(i) for i in range(6)]
    assert calls[:3] == [6, 4, 2] and backend.batch_size == 2


def test_trim_cuts_at_stop_strings_and_the_answer_pattern():
    assert trim("a b</s> c", "length", ("</s>",)) == ("a b</s>", "stop")
    assert trim("so the answer is 12.\nBut wait", "length", (), r"answer is \d+\.") == ("so the answer is 12.", "stop")
    assert trim("no answer yet", "length", (), r"answer is \d+") == ("no answer yet", "length")


def test_identical_prompts_are_generated_once(tiny_model_dir, monkeypatch):
    backend = HFBackend(str(tiny_model_dir), ModelConfig(dtype="float32"), GenerationConfig(batch_size=8))
    real, batch_sizes = backend._generate_batch, []

    def counting(batch_ids, *a, **k):
        batch_sizes.append(len(batch_ids))
        return real(batch_ids, *a, **k)
    monkeypatch.setattr(backend, "_generate_batch", counting)
    same, other = [{"role": "user", "content": "same"}], [{"role": "user", "content": "other"}]
    reqs = [GenRequest("a", same), GenRequest("b", same), GenRequest("c", other)]
    out = {g.id: g.text for b in backend.generate(reqs, 4) for g in b}
    assert batch_sizes == [2] and set(out) == {"a", "b", "c"} and out["a"] == out["b"]
