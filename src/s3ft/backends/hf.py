"""transformers backend: batched, length-sorted, left-padded `model.generate`.

Speed comes from batching similar-length prompts (little padding), generating each
distinct prompt once, stopping a row as soon as its answer is complete, dropping
finished rows from the batch (`MostlyFinished`), and a cheaper decode step (`hf_decode`).
On CUDA an out-of-memory batch is split in half and retried.
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
from . import Generation, GenRequest, dedupe, register_backend, trim
from .hf_decode import blocked_vocab_projection, growing_cache


def render_prompt(tokenizer, req: GenRequest) -> str:
    """Chat template + generation prompt + optional prefill; the same rendering TRL trains on."""
    text = tokenizer.apply_chat_template(req.messages, add_generation_prompt=True, tokenize=False)
    return text + req.prefill


class AnswerComplete(StoppingCriteria):
    """Per-row stop once the decoded tail matches the task's "answer is complete" pattern.

    A batch runs until its slowest row ends; rows that ramble on after stating their
    answer are the slow ones, so cutting them there saves most of the wasted steps.
    Decoding the batch's tails costs CPU time on every step (on a GPU, more than the step
    itself), so the check runs every `every` steps; `trim` then cuts the text exactly at
    the match, so the result is the same as checking every step.
    """

    def __init__(self, tokenizer, pattern: str, prompt_len: int, window: int = 24, every: int = 4):
        self.tok, self.regex, self.prompt_len = tokenizer, re.compile(pattern), prompt_len
        self.window, self.every, self.calls = window + every, every, 0

    def __call__(self, input_ids, scores, **kwargs):
        self.calls += 1
        if self.calls % self.every:
            return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        tails = self.tok.batch_decode(input_ids[:, max(self.prompt_len, input_ids.shape[1] - self.window):],
                                      skip_special_tokens=True)
        return torch.tensor([bool(self.regex.search(t)) for t in tails], device=input_ids.device)


class MostlyFinished(StoppingCriteria):
    """Ends a `generate` call once a quarter of its rows have finished.

    `generate` keeps finished rows in the batch, paying a full-width decode step for each
    until the slowest row is done; on a CPU that is most of the cost when answer lengths
    differ. `HFBackend` then continues the unfinished rows alone from the same KV cache.
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
        order = sorted(range(len(unique)), key=lambda j: -len(ids[j]))
        start = 0
        while start < len(order):
            batch = order[start:start + self.batch_size]
            try:
                outs = self._generate_batch([ids[j] for j in batch], max_new_tokens, stop, stop_regex)
            except torch.OutOfMemoryError:
                if self.batch_size == 1:
                    raise
                self.batch_size //= 2
                torch.cuda.empty_cache()
                continue
            start += len(batch)
            result = []
            for j, (text, reason, n_tok) in zip(batch, outs):
                for i in groups[unique[j]]:
                    result.append(Generation(requests[i].id, text, reason, len(ids[j]), n_tok))
            yield result

    @torch.inference_mode()
    def _generate_batch(self, batch_ids: list[list[int]], max_new_tokens: int, stop: tuple[str, ...],
                        stop_regex: str | None = None) -> list[tuple[str, str, int]]:
        tok = self.tokenizer
        sampling = self.gen_cfg.temperature > 0
        kwargs = dict(do_sample=sampling, eos_token_id=self.eos_ids, pad_token_id=tok.pad_token_id,
                      return_dict_in_generate=True)
        if sampling:
            torch.manual_seed(self.gen_cfg.seed)
            kwargs.update(temperature=self.gen_cfg.temperature, top_p=self.gen_cfg.top_p)
        else:  # silence "temperature is set but do_sample=False" from model defaults
            kwargs.update(temperature=None, top_p=None, top_k=None)
        if stop:
            kwargs.update(stop_strings=list(stop), tokenizer=tok)
        done_ids = torch.tensor(sorted({*self.eos_ids, tok.pad_token_id} - {None}), device=self.model.device)
        ids, mask, cache = self._prefill_shared_prefix(batch_ids)
        live = list(range(len(batch_ids)))  # batch rows still generating, in `ids` order
        new: list[list[int]] = [[] for _ in batch_ids]
        while live:
            criteria = [MostlyFinished(done_ids)] if self.compact else []
            if stop_regex:
                criteria.append(AnswerComplete(tok, stop_regex, ids.shape[1]))
            with blocked_vocab_projection(self.model):
                out = self.model.generate(input_ids=ids, attention_mask=mask, past_key_values=cache,
                                          max_new_tokens=max_new_tokens - len(new[live[0]]),
                                          stopping_criteria=StoppingCriteriaList(criteria), **kwargs)
            gen = out.sequences[:, ids.shape[1]:]
            for k, row in enumerate(live):
                new[row] += gen[k].tolist()
            if len(new[live[0]]) >= max_new_tokens or not self.compact:
                break
            # Unfinished: no padding yet (a stopping criterion ended the row) and no end found in its text.
            keep = [k for k, row in enumerate(live)
                    if tok.pad_token_id not in new[row] and self._decode(new[row], stop, stop_regex)[1] != "stop"]
            if not keep:
                break
            # Carry on with the unfinished rows only: their KV cache is kept, so nothing is recomputed.
            index = torch.tensor(keep, device=ids.device)
            mask = torch.cat([mask, torch.ones_like(gen)], dim=1)[index]
            ids, cache, live = out.sequences[index], out.past_key_values, [live[k] for k in keep]
            if hasattr(cache, "batch_select_indices"):
                cache.batch_select_indices(index)
            else:  # a model without a selectable cache recomputes it (same text, slower)
                cache = None
        return [self._decode(row, stop, stop_regex) for row in new]

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
        base = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
        # `generate` passes mask-derived position ids only to a forward that takes them; without them
        # the hole would shift every row's own tokens away from the prefix.
        takes_positions = "position_ids" in inspect.signature(base.forward).parameters
        if cache is None or shared < self.min_shared_prefix or not takes_positions:
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
        n, reason = len(row), "length"
        for k, t in enumerate(row):
            if t in self.eos_ids:
                n, reason = k, "stop"
                break
        text, reason = trim(self.tokenizer.decode(row[:n], skip_special_tokens=True), reason, stop, stop_regex)
        return text, reason, n if reason == "length" else n + 1
