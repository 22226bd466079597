"""Self-generated replay (Marek et al. 2026, "Forgetting in Language Models: Capacity, Optimization, and
Self-Generated Replay", arXiv 2605.26097): a training option any strategy can take (`train.replay`).

The base model samples `train.replay.samples` answers to a neutral prompt once (`replay_samples.jsonl`, a
generation stage like the others: fingerprinted, resumable, independent of `train.seed`); each optimizer
step then adds `weight` x KL(base || tuned) on a batch of them, base = the same model with its LoRA adapter
switched off, so the adapter is pulled back towards the base model wherever the base model speaks freely.

- `replay_requests`: the samples' requests (`plan.replay_stage` makes them a generation stage);
- `ReplaySet`: the samples as training reads them;
- `trainer.ReplayTrainer`: TRL's `SFTTrainer` with the replay term (imports TRL: load it only to train).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..backends import GenRequest
from ..config import ReplayConfig
from ..forgetting.targets import encode_target

ARTIFACT = "replay_samples.jsonl"


def replay_messages(cfg: ReplayConfig) -> list[dict]:
    """The one conversation every sample answers: a user turn holding `cfg.prompt` (empty by default)."""
    return [{"role": "user", "content": cfg.prompt}]


def replay_requests(cfg: ReplayConfig) -> list[GenRequest]:
    """`cfg.samples` requests of the same conversation, ids `replay/<i>`; sampled, so each is its own draw."""
    return [GenRequest(f"replay/{i}", replay_messages(cfg)) for i in range(cfg.samples)]


@dataclass
class ReplaySet:
    """The replay samples as training reads them."""

    messages: list[dict]
    """The conversation every sample answers."""
    texts: list[str]
    """The samples' text, in request order."""
    fingerprint: str
    """The samples artifact's fingerprint: part of every adapter trained with them."""

    def encoded(self, tok, max_length: int) -> list[tuple[list[int], int]]:
        """Each sample as (prompt + response token ids, prompt length), rendered as TRL renders a training
        row (end of turn included), cut at `max_length`; samples with no response token left are dropped."""
        out = [encode_target(tok, self.messages, t, max_length) for t in self.texts]
        return [(ids, start) for ids, start in out if len(ids) > start]
