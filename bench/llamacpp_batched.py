"""llama.cpp decoding many prompts at once, through llama-cpp-python's low-level API.

The generation benchmark compares s3ft with llama.cpp's server answering one prompt at a
time. This side shows what llama.cpp's own engine reaches when it batches the same prompts
itself: one `llama_decode` per step over every live sequence, a finished sequence's KV
cells freed and its slot given to the next waiting prompt. Greedy, stops at EOS or the
token limit, like the serial side. Same GGUF file (its quantized weights) and threads.

Only the calls this file makes are needed from llama.cpp's C API (llama_memory_* arrived
in 2025); with an older llama-cpp-python `available()` is False and the side is skipped.
"""

from __future__ import annotations

import logging
import time

import numpy as np


def available() -> bool:
    try:
        import llama_cpp
    except ImportError:
        return False
    return all(hasattr(llama_cpp, f) for f in ("llama_memory_seq_rm", "llama_get_memory", "llama_batch_init"))


def generate(gguf: str, prompts: list[list[int]], max_new_tokens: int, eos_ids: list[int], threads: int,
             parallel: int = 48) -> tuple[float, int]:
    """Greedy completions of token-id `prompts`, `parallel` at a time; returns (wall seconds, tokens)."""
    import llama_cpp as L
    from llama_cpp import _internals

    logging.getLogger("llama-cpp-python").setLevel(logging.ERROR)  # its C log: thousands of lines per context
    model = _internals.LlamaModel(path_model=gguf, params=L.llama_model_default_params(), verbose=False)
    params = L.llama_context_default_params()
    capacity = 4096  # tokens one llama_decode call takes: a step's rows plus the prompts joining
    params.n_seq_max, params.kv_unified = parallel, True  # one KV pool shared by all sequences
    params.n_ctx = parallel * (max(map(len, prompts)) + max_new_tokens)
    params.n_batch, params.n_threads, params.n_threads_batch = capacity, threads, threads
    ctx = _internals.LlamaContext(model=model, params=params, verbose=False)
    vocab = L.llama_vocab_n_tokens(L.llama_model_get_vocab(model.model))
    batch = L.llama_batch_init(capacity, 0, 1)
    eos = set(eos_ids)

    def put(token: int, pos: int, seq: int, logits: bool) -> int:
        j = batch.n_tokens
        batch.token[j], batch.pos[j], batch.seq_id[j][0], batch.n_seq_id[j], batch.logits[j] = \
            token, pos, seq, 1, logits
        batch.n_tokens = j + 1
        return j

    waiting, free, tokens = list(range(len(prompts))), list(range(parallel)), 0
    live: dict[int, list] = {}  # sequence id -> [next position, generated ids]
    try:
        t0 = time.perf_counter()
        while waiting or live:
            batch.n_tokens, reads = 0, []  # reads: (batch index whose logits pick the next token, sequence)
            for seq, state in live.items():
                reads.append((put(state[1][-1], state[0], seq, True), seq))
                state[0] += 1
            while waiting and free and batch.n_tokens + len(prompts[waiting[0]]) <= capacity:
                p, seq = prompts[waiting.pop(0)], free.pop()
                for k, t in enumerate(p):
                    j = put(t, k, seq, k == len(p) - 1)
                live[seq] = [len(p), []]
                reads.append((j, seq))
            if L.llama_decode(ctx.ctx, batch) != 0:
                raise RuntimeError("llama_decode failed (KV cache full?)")
            for j, seq in reads:
                logits = np.ctypeslib.as_array(L.llama_get_logits_ith(ctx.ctx, j), shape=(vocab,))
                new = live[seq][1]
                new.append(int(logits.argmax()))
                tokens += new[-1] not in eos  # as the server's usage count: EOS is not a completion token
                if new[-1] in eos or len(new) >= max_new_tokens:
                    del live[seq]
                    free.append(seq)
                    L.llama_memory_seq_rm(ctx.memory, seq, -1, -1)
        return time.perf_counter() - t0, tokens
    finally:
        L.llama_batch_free(batch)
        ctx.close()
        model.close()
