"""HF backend behaviour that needs no GPU."""

from __future__ import annotations

import torch

from s3ft.backends import GenRequest, trim
from s3ft.backends.hf import HFBackend
from s3ft.config import GenerationConfig, ModelConfig


def test_out_of_memory_halves_the_batch(tiny_model_dir, monkeypatch):
    backend = HFBackend(str(tiny_model_dir), ModelConfig(), GenerationConfig(batch_size=8))
    real, calls = backend._prefill_shared_prefix, []

    def flaky(batch_ids):
        calls.append(len(batch_ids))
        if len(batch_ids) > 2:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(batch_ids)
    monkeypatch.setattr(backend, "_prefill_shared_prefix", flaky)
    reqs = [GenRequest(str(i), [{"role": "user", "content": f"q{i}"}]) for i in range(6)]
    out = [g for b in backend.generate(reqs, 4) for g in b]
    assert sorted(g.id for g in out) == [str(i) for i in range(6)]
    assert calls[:3] == [6, 4, 2] and backend.batch_size == 2


def test_trim_cuts_at_stop_strings_and_the_answer_pattern():
    assert trim("a b</s> c", "length", ("</s>",)) == ("a b</s>", "stop")
    assert trim("so the answer is 12.\nBut wait", "length", (), r"answer is \d+\.") == ("so the answer is 12.", "stop")
    assert trim("no answer yet", "length", (), r"answer is \d+") == ("no answer yet", "length")


def test_token_counts_leave_out_padding(tiny_model_dir):
    backend = HFBackend(str(tiny_model_dir), ModelConfig(), GenerationConfig())
    pad = backend.tokenizer.pad_token_id
    a, b, c, end = 101, 102, 103, 104
    assert pad not in (a, b, c, end)
    backend.eos_ids = [end]
    # Ended by the answer pattern (then padded by generate): the real tokens only.
    assert backend._decode([a, b, c, pad, pad], (), None)[2] == 3
    # Ended by end-of-turn: the tokens and the end-of-turn token, not what follows.
    assert backend._decode([a, end, pad, pad], (), None)[1:] == ("stop", 2)
    assert backend._decode([a, b, c], (), None)[1:] == ("length", 3)


def test_identical_prompts_are_generated_once(tiny_model_dir, monkeypatch):
    backend = HFBackend(str(tiny_model_dir), ModelConfig(dtype="float32"), GenerationConfig(batch_size=8))
    real, batch_sizes = backend._prefill_shared_prefix, []

    def counting(batch_ids):
        batch_sizes.append(len(batch_ids))
        return real(batch_ids)
    monkeypatch.setattr(backend, "_prefill_shared_prefix", counting)
    same, other = [{"role": "user", "content": "same"}], [{"role": "user", "content": "other"}]
    reqs = [GenRequest("a", same), GenRequest("b", same), GenRequest("c", other)]
    out = {g.id: g.text for b in backend.generate(reqs, 4) for g in b}
    assert batch_sizes == [2] and set(out) == {"a", "b", "c"} and out["a"] == out["b"]



def _rows_ending_at_different_steps(tokenizer_dir, tmp_path, n: int):
    """A model with varied tokens, `n` requests, and stand-in end-of-turn ids that end rows at different steps."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from s3ft.backends import render_prompt
    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    torch.manual_seed(0)  # large random weights: varied tokens (the shared tiny model repeats one)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                         initializer_range=1.0, pad_token_id=tok.pad_token_id))
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    reqs = [GenRequest(str(i), [{"role": "user", "content": f"question {i} " * (1 + i % 3)}]) for i in range(n)]
    enc = tok([render_prompt(tok, r) for r in reqs], return_tensors="pt", padding=True, padding_side="left",
              add_special_tokens=False)
    raw = model.generate(**enc, max_new_tokens=24, do_sample=False, eos_token_id=[], pad_token_id=tok.pad_token_id)
    raw = raw[:, enc["input_ids"].shape[1]:].tolist()
    # Row i's token at step 2 + 3i ends it, so rows end at different steps (some never).
    eos = sorted({raw[i][2 + 3 * (i % 7)] for i in range(min(n, 6))} - {tok.pad_token_id})
    return reqs, eos


def _run(model_dir, reqs, eos, **gen):
    """{id: (text, finish reason)} and the batch width of every `generate` call."""
    backend = HFBackend(str(model_dir), ModelConfig(), GenerationConfig(**gen))
    backend.eos_ids, widths, real = eos, [], backend.model.generate

    def counting(**kw):
        widths.append(kw["input_ids"].shape[0])
        return real(**kw)
    backend.model.generate = counting
    return {g.id: (g.text, g.finish_reason) for b in backend.generate(reqs, 24) for g in b}, widths


def test_compacted_batches_give_the_same_text_with_fewer_rows_decoded(tokenizer_dir, tmp_path):
    """Rows that finish early leave the batch; the rest carry on from the same KV cache."""
    reqs, eos = _rows_ending_at_different_steps(tokenizer_dir, tmp_path, 8)
    plain, plain_widths = _run(tmp_path, reqs, eos, batch_size=8, compact_batches=False)
    compact, widths = _run(tmp_path, reqs, eos, batch_size=8, compact_batches=True)
    assert {r for _, r in plain.values()} == {"stop", "length"} and plain_widths == [8]
    assert compact == plain
    assert len(widths) > 1 and widths == sorted(widths, reverse=True) and widths[-1] < 8


def test_waiting_prompts_take_the_places_of_finished_rows(tokenizer_dir, tmp_path):
    """With more prompts than the batch holds, finished rows are replaced mid-batch: same text."""
    reqs, eos = _rows_ending_at_different_steps(tokenizer_dir, tmp_path, 16)
    plain, plain_widths = _run(tmp_path, reqs, eos, batch_size=4, compact_batches=False)
    refilled, widths = _run(tmp_path, reqs, eos, batch_size=4, compact_batches=True)
    assert plain_widths == [4, 4, 4, 4] and {r for _, r in plain.values()} == {"stop", "length"}
    assert refilled == plain
    # Refilling keeps the batch full while prompts wait: narrower calls only come at the end.
    first_narrow = next(i for i, w in enumerate(widths) if w < 4)
    assert first_narrow > 4 and all(w < 4 for w in widths[first_narrow:])
