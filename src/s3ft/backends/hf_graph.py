"""Greedy decoding with a fixed-shape step: a static KV cache with one slot per row, replayed as CUDA graphs.

On a GPU an eager decode step of a small model is launch-bound: a step at 24 rows cost what a
step at 1 row did (~22 ms on an H200), far above the time to read the weights once. Here the
step has fixed shapes -- `capacity` slots x `length` cache columns, one input token per slot --
so on CUDA it is captured once per bucketed batch size (`torch.cuda.CUDAGraph`) and replayed.
Elsewhere (and with `graphs=False`) the same step runs eagerly: that is how it is tested on CPU.

Each row owns a slot: its own cache columns, its own write column and rotary position, and its
own row of the attention mask. A refill prefills new prompts eagerly (with the shared-prefix
prefill of `HFBackend`) and copies their keys and values into free slots; finished rows leave
their slot; live rows move down into free low slots when that lets a smaller graph serve them.
Nothing else moves, so joining and compaction cost one copy per layer.
"""

from __future__ import annotations

import inspect
import re
from typing import TYPE_CHECKING, Iterator

import torch
from transformers.cache_utils import DynamicCache, DynamicLayer

from .hf_decode import growing_cache, refillable, unwrap

if TYPE_CHECKING:
    from .hf import HFBackend


class SlotLayer(DynamicLayer):
    """One layer's keys and values, `[slots, heads, length, dim]`; a step writes slot b's column `cols[b]`.

    `update` returns the whole buffer: columns a row has not written are masked by its mask row.
    """

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, cols: torch.Tensor):
        super().__init__()
        self.keys, self.values, self.cols, self.is_initialized = keys, values, cols, True

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        b, h, _, d = key_states.shape
        index = self.cols.view(b, 1, 1, 1).expand(b, h, 1, d)
        self.keys.scatter_(2, index, key_states)
        self.values.scatter_(2, index, value_states)
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self.keys.shape[-2]


def static_decode_supported(model, forward_params) -> bool:
    """The fixed-shape step can run `model`: full-attention layers only (what `growing_cache` turns into
    `GrowingLayer`), position ids taken by `forward`, and an attention that accepts a 4-D additive mask."""
    attn = unwrap(model).config._attn_implementation
    return refillable(growing_cache(model)) and "position_ids" in forward_params and attn in ("sdpa", "eager")


def buckets(capacity: int) -> list[int]:
    """Batch sizes a graph is captured for: powers of two below `capacity`, then `capacity`."""
    sizes = [1]
    while sizes[-1] * 2 < capacity:
        sizes.append(sizes[-1] * 2)
    return sizes + [capacity] if capacity > sizes[-1] else sizes


class StaticDecoder:
    """A static cache for `capacity` rows of `length` columns, and the greedy step over its first B slots.

    `graphs`: capture the step per bucket on CUDA and replay it; else run it eagerly (same numbers:
    a replay runs the kernels the eager step launches). `captures` and `replays` count graph use.
    """

    def __init__(self, model, capacity: int, length: int, like: DynamicCache, graphs: bool):
        self.model, self.capacity, self.length, self.graphs = model, capacity, length, graphs
        first = like.layers[0].keys
        device, dtype = first.device, first.dtype
        self.keys = [torch.zeros(capacity, *layer.keys.shape[1:2], length, layer.keys.shape[-1], device=device,
                                 dtype=dtype) for layer in like.layers]
        self.values = [torch.zeros(capacity, *layer.values.shape[1:2], length, layer.values.shape[-1],
                                   device=device, dtype=dtype) for layer in like.layers]
        self.tok = torch.zeros(capacity, 1, dtype=torch.long, device=device)  # each slot's next input
        self.cols = torch.zeros(capacity, dtype=torch.long, device=device)  # the column a step writes
        self.pos = torch.zeros(capacity, 1, dtype=torch.long, device=device)  # its rotary position
        self.valid = torch.zeros(capacity, length, dtype=torch.bool, device=device)  # columns a slot attends to
        self.zero = torch.zeros((), dtype=dtype, device=device)
        self.neg = torch.full((), torch.finfo(dtype).min, dtype=dtype, device=device)
        params = inspect.signature(unwrap(model).forward).parameters
        self.extra = {"logits_to_keep": 1} if "logits_to_keep" in params else {}
        self.caches: dict[int, DynamicCache] = {}
        self.cuda_graphs: dict[int, torch.cuda.CUDAGraph] = {}
        self.pool = None
        self.captures = self.replays = 0

    @property
    def state(self) -> list[torch.Tensor]:
        return [self.tok, self.cols, self.pos, self.valid, *self.keys, *self.values]

    def fits(self, capacity: int, length: int, like: DynamicCache) -> bool:
        """Rows of `like` fit, `length` columns fit, and not many more: a step attends over every column."""
        k = like.layers[0].keys
        return (capacity == self.capacity and length <= self.length <= 2 * length and len(like.layers) == len(self.keys)
                and k.dtype == self.keys[0].dtype and k.shape[1] == self.keys[0].shape[1])

    def _cache(self, b: int) -> DynamicCache:
        if b not in self.caches:  # views of the first b slots: every bucket shares the buffers
            cache = DynamicCache()
            cache.layers = [SlotLayer(k[:b], v[:b], self.cols[:b]) for k, v in zip(self.keys, self.values)]
            self.caches[b] = cache
        return self.caches[b]

    def _step(self, b: int) -> None:
        """One greedy step of slots [0, b): write each slot's input at its column, predict its next input."""
        valid = self.valid[:b]
        valid.scatter_(1, self.cols[:b, None], True)  # a token attends to itself
        bias = torch.where(valid, self.zero, self.neg)[:, None, None, :]
        logits = self.model(input_ids=self.tok[:b], position_ids=self.pos[:b], attention_mask=bias,
                            past_key_values=self._cache(b), use_cache=True, **self.extra).logits
        self.tok[:b, 0] = logits[:, -1].argmax(-1)
        # A row never reaches the last column (`decode_slots` sizes the cache); a free slot may run
        # for many steps, so it stays on the last column instead of writing past the buffer.
        self.cols[:b] = (self.cols[:b] + 1).clamp_(max=self.length - 1)
        self.pos[:b] = (self.pos[:b] + 1).clamp_(max=self.length - 1)

    def step(self, b: int) -> None:
        if not (self.graphs and self.tok.is_cuda):
            self._step(b)
            return
        if b not in self.cuda_graphs:
            self.cuda_graphs[b] = self._capture(b)
        self.cuda_graphs[b].replay()
        self.replays += 1

    def _capture(self, b: int) -> torch.cuda.CUDAGraph:
        # Warm-up runs on a side stream (lazy initialisation, cuBLAS workspaces) advance the rows;
        # their positions and masks are put back, so a capture happens between two steps without
        # changing the text. The keys and values they wrote are in columns no row attends to yet.
        small = [self.tok, self.cols, self.pos, self.valid]
        saved = [t.clone() for t in small]
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(2):
                self._step(b)
        torch.cuda.current_stream().wait_stream(stream)
        for t, s in zip(small, saved):
            t.copy_(s)
        del saved
        if self.pool is None:
            self.pool = torch.cuda.graph_pool_handle()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self.pool):
            self._step(b)
        self.captures += 1
        return graph

    def admit(self, slots: list[int], cache: DynamicCache, mask: torch.Tensor, first: torch.Tensor) -> None:
        """Put prefilled rows in `slots`: their keys and values (`cache`, `mask` wide) and first generated token."""
        width = mask.shape[1]
        index = torch.tensor(slots, device=self.tok.device)
        for k, v, layer in zip(self.keys, self.values, cache.layers):
            k[index, :, :width] = layer.keys
            v[index, :, :width] = layer.values
        self.valid[index] = False
        self.valid[index, :width] = mask.bool()
        self.cols[index] = width
        self.pos[index, 0] = mask.sum(-1)
        self.tok[index, 0] = first

    def free(self, slots: list[int]) -> None:
        """Slots without a row: they still run inside a bucket, attending to their own column 0 only."""
        index = torch.tensor(slots, device=self.tok.device)
        self.valid[index] = False
        self.cols[index] = 0
        self.pos[index] = 0

    def move(self, src: list[int], dst: list[int]) -> None:
        """Rows in slots `src` move to the free slots `dst`."""
        s, d = (torch.tensor(x, device=self.tok.device) for x in (src, dst))
        for t in self.state:
            t[d] = t[s]
        self.free(src)


def decode_slots(backend: HFBackend, waiting: list[int], ids: list[list[int]], max_new_tokens: int,
                 stop: tuple[str, ...], stop_regex: str | None,
                 every: int = 4) -> Iterator[list[tuple[int, tuple[str, str, int]]]]:
    """`HFBackend._decode_rows` on a `StaticDecoder`: greedy, same text; yields (j, decoded) as rows finish.

    Tokens come back to the host every `every` steps (one sync); a row that ended meanwhile runs
    on until then, and its extra tokens are cut (`max_new_tokens`, end-of-turn, `trim`). Rows
    join when a quarter of the slots are free (or all, without `compact_batches`), as on the eager
    path. The end-of-answer pattern and stop strings are looked for in each row's last tokens.
    """
    tok, model = backend.tokenizer, backend.model
    length = max(len(ids[j]) for j in waiting) + max_new_tokens + every + 2  # +2: the capture's warm-up steps
    regex = re.compile(stop_regex) if stop_regex else None
    eos = set(backend.eos_ids)
    dec: StaticDecoder | None = None
    capacity = min(backend.batch_size, len(waiting))
    slot_row: list[int | None] = [None] * capacity  # the prompt in each slot
    new: dict[int, list[int]] = {}  # generated ids so far, per prompt
    while waiting or any(r is not None for r in slot_row):
        try:
            free = [s for s, r in enumerate(slot_row) if r is None]
            if waiting and (len(free) == capacity or (backend.compact and len(free) >= max(1, capacity // 4))):
                batch = waiting[:len(free)]
                cache, mask, first = _prefill(backend, [ids[j] for j in batch])
                if dec is None:
                    dec = backend._static
                    if dec is None or not dec.fits(capacity, length, cache):
                        backend._static = None  # the old buffers go before the new ones are allocated
                        dec = backend._static = StaticDecoder(model, capacity, length, cache,
                                                              graphs=model.device.type == "cuda")
                    else:
                        dec.free(list(range(capacity)))  # slots an abandoned call left behind
                dec.admit(free[:len(batch)], cache, mask, first)
                for s, j, t in zip(free, batch, first.tolist()):
                    slot_row[s], new[j] = j, [t]
                del waiting[:len(batch)]
            top = max(s for s, r in enumerate(slot_row) if r is not None) + 1
            b = next(x for x in buckets(capacity) if x >= top)
            steps = []
            for _ in range(every):
                dec.step(b)
                steps.append(dec.tok[:b, 0].clone())
            got = torch.stack(steps, 1).tolist()
        except torch.OutOfMemoryError:
            if backend.batch_size == 1:
                raise
            backend.batch_size //= 2
            dec = backend._static = None
            torch.cuda.empty_cache()
            waiting[:0] = sorted((j for j in slot_row if j is not None), key=lambda j: -len(ids[j]))  # start again
            capacity = min(backend.batch_size, len(waiting))
            slot_row, new = [None] * capacity, {}
            continue
        for s, toks in enumerate(got):
            if slot_row[s] is not None:
                new[slot_row[s]] += toks
        finished = _finished(tok, {s: new[j] for s, j in enumerate(slot_row) if j is not None}, max_new_tokens,
                             eos, stop, regex, every)
        if not finished:
            continue
        yield [(slot_row[s], backend._decode(new.pop(slot_row[s])[:max_new_tokens], stop, stop_regex))
               for s in finished]
        for s in finished:
            slot_row[s] = None
        dec.free(finished)
        rows = [s for s, r in enumerate(slot_row) if r is not None]
        if not waiting and rows and next(x for x in buckets(capacity) if x >= len(rows)) < b:
            # The batch drains: rows move down when a smaller graph then serves them.
            src = [s for s in rows if s >= len(rows)]
            dst = [s for s in range(len(rows)) if slot_row[s] is None]
            dec.move(src, dst)
            for s, d in zip(src, dst):
                slot_row[d], slot_row[s] = slot_row[s], None


def _finished(tok, rows: dict[int, list[int]], max_new: int, eos: set[int], stop: tuple[str, ...], regex,
              every: int) -> list[int]:
    """Slots whose row is out of budget, has an end-of-turn token, or shows a stop string or the
    end-of-answer pattern in its last tokens (AnswerComplete's window; one batched decode)."""
    done = [s for s, row in rows.items() if len(row) >= max_new or eos.intersection(row)]
    if not (stop or regex):
        return done
    rest = [s for s in rows if s not in done]
    tails = tok.batch_decode([rows[s][-(24 + every):] for s in rest], skip_special_tokens=True)
    return sorted(done + [s for s, t in zip(rest, tails)
                          if any(x in t for x in stop) or (regex and regex.search(t))])


def _prefill(backend: HFBackend, batch_ids: list[list[int]]):
    """Prompts through the model (shared prefix once): their cache, mask, and greedy first tokens."""
    seq, mask, cache = backend._prefill_shared_prefix(batch_ids)
    done = cache.get_seq_length()
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    extra = {"logits_to_keep": 1} if "logits_to_keep" in backend._forward_params else {}
    out = backend.model(input_ids=seq[:, done:], attention_mask=mask, position_ids=positions[:, done:],
                        past_key_values=cache, use_cache=True, **extra)
    return cache, mask, out.logits[:, -1].argmax(-1)
