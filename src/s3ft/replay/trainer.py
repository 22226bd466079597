"""TRL's `SFTTrainer` with self-generated replay: each micro-batch's loss gains `weight` x KL(base || tuned)
on a batch of the base model's own samples.

The KL is full-vocabulary and token-level, averaged over the samples' response tokens (end of turn
included), the forgetting meter's `response_kl` measured on the replay set: base = the same model with
the LoRA adapter switched off (PEFT's `disable_adapter()`, as `opsd`'s base teacher), computed without
gradients; tuned = the model as it trains.
"""

from __future__ import annotations

import math

import torch
from trl import SFTTrainer

from ..config import ReplayConfig


def replay_batch(encoded: list[tuple[list[int], int]], pad_id: int, device) -> dict:
    """Right-padded ids and attention mask of the rows, the first position whose prediction is scored
    (`offset`), and the mask of scored predictions from there (a row's response tokens)."""
    width = max(len(ids) for ids, _ in encoded)
    offset = min(start for _, start in encoded) - 1  # position `offset` predicts the first response token
    ids = torch.full((len(encoded), width), pad_id, dtype=torch.long)
    att = torch.zeros((len(encoded), width), dtype=torch.long)
    scored = torch.zeros((len(encoded), width - 1 - offset), dtype=torch.bool)
    for j, (row, start) in enumerate(encoded):
        ids[j, :len(row)] = torch.tensor(row)
        att[j, :len(row)] = 1
        scored[j, start - 1 - offset:len(row) - 1 - offset] = True  # predictions of tokens start..len-1
    return {"input_ids": ids.to(device), "attention_mask": att.to(device), "offset": offset,
            "scored": scored.to(device)}


def response_logprobs(model, batch: dict):
    """Log-softmax over the vocabulary at every prediction from `offset` on: [rows, width - 1 - offset, V]. The
    LM head runs on those positions only (`logits_to_keep`), not on the shared prompt."""
    width = batch["input_ids"].shape[1]
    keep = width - batch["offset"]
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], logits_to_keep=keep,
                   use_cache=False).logits
    return torch.log_softmax(logits[:, :-1].float(), dim=-1)  # the last position predicts past the end


def replay_kl(model, batch: dict):
    """Mean per-token KL(base || tuned) over the batch's response tokens; differentiable in the tuned model."""
    with torch.no_grad(), model.disable_adapter():
        base = response_logprobs(model, batch)
    tuned = response_logprobs(model, batch)
    kl = (base.exp() * (base - tuned)).sum(-1)
    mask = batch["scored"]
    return (kl * mask).sum() / mask.sum().clamp(min=1)


class ReplayTrainer(SFTTrainer):
    """`SFTTrainer` whose loss adds `replay.weight` x `replay_kl` on a replay batch at every micro-batch.

    Which samples a micro-batch replays follows from the optimizer step, the micro-batch within it and the
    process rank, over one fixed shuffle of the set (seeded by `train.seed`): a resumed run replays what an
    uninterrupted one would."""

    def __init__(self, *args, replay: list[tuple[list[int], int]], replay_cfg: ReplayConfig, **kwargs):
        super().__init__(*args, **kwargs)
        if not replay:
            raise ValueError("ReplayTrainer needs at least one replay sample with a response token")
        self.replay_rows = replay
        self.replay_cfg = replay_cfg
        g = torch.Generator().manual_seed(self.args.seed)
        self.replay_order = torch.randperm(len(replay), generator=g).tolist()
        self.replay_per_micro = math.ceil(replay_cfg.batch_size / self.args.gradient_accumulation_steps)
        self._replay_step, self._replay_micro = -1, 0
        self.replay_tokens = 0
        """Response tokens replayed so far by this process (this invocation)."""

    def next_replay_rows(self) -> list[tuple[list[int], int]]:
        """The replay rows of the current micro-batch."""
        if self.state.global_step != self._replay_step:
            self._replay_step, self._replay_micro = self.state.global_step, 0
        call = self.state.global_step * self.args.gradient_accumulation_steps + self._replay_micro
        self._replay_micro += 1
        call = call * self.accelerator.num_processes + self.accelerator.process_index
        n, k = len(self.replay_order), self.replay_per_micro
        return [self.replay_rows[self.replay_order[(call * k + i) % n]] for i in range(k)]

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        out = super().compute_loss(model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch)
        if not model.training:
            return out
        loss, outputs = out if return_outputs else (out, None)
        pad = self.processing_class.pad_token_id if self.processing_class.pad_token_id is not None else 0
        batch = replay_batch(self.next_replay_rows(), pad, self.accelerator.device)
        kl = replay_kl(self.accelerator.unwrap_model(model), batch)
        self.replay_tokens += int(batch["scored"].sum())
        self._metrics["train"]["replay_kl"].append(kl.item())
        term = self.replay_cfg.weight * kl
        if self._loss_scaled_for_ga(num_items_in_batch):  # else the Trainer divides the sum by accumulation itself
            term = term / self.current_gradient_accumulation_steps
        loss = loss + term
        return (loss, outputs) if return_outputs else loss

    def _loss_scaled_for_ga(self, num_items_in_batch) -> bool:
        """Whether `Trainer.training_step` takes the returned loss as already divided over gradient accumulation
        (its own rule, `transformers.Trainer.training_step`)."""
        if self.loss_is_scaled_for_ga is not None:
            return self.loss_is_scaled_for_ga
        return (self.model_accepts_loss_kwargs and num_items_in_batch is not None) or self.compute_loss_func is not None
