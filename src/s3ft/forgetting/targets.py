"""Training targets as TRL's SFTTrainer tokenizes them, and their per-token NLL under one model."""

from __future__ import annotations

from ..config import ModelConfig
from ..models import load_model, load_tokenizer
from .scoring import Encoded, completion_logprobs, token_nll


def _ids(x) -> list[int]:
    if isinstance(x, dict) or hasattr(x, "keys"):
        x = x["input_ids"]
    return list(x)


def common_prefix_length(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def encode_target(tok, messages: list[dict], target: str, max_length: int | None = None) -> tuple[list[int], int]:
    """(token ids of prompt + completion, prompt length), as TRL's SFTTrainer builds them for a
    conversational prompt-completion row: the prompt with the generation prompt, the completion
    = the rest of the chat-templated conversation (target + end-of-turn), cut at max_length."""
    prompt = _ids(tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True))
    full = _ids(tok.apply_chat_template(messages + [{"role": "assistant", "content": target}], tokenize=True))
    p = common_prefix_length(prompt, full)
    if max_length:
        full = full[:max_length]
    return full, p


class NLLScorer:
    """Teacher-forced per-token NLL of completions under one model (loaded once)."""

    def __init__(self, model_path: str, model_cfg: dict, batch_size: int = 4):
        import torch
        mc = ModelConfig(**model_cfg)
        self.tok = load_tokenizer(model_path, mc.trust_remote_code)
        self.model = load_model(model_path, mc)
        self.batch_size = batch_size
        self.torch = torch

    @classmethod
    def from_loaded(cls, model, tok, batch_size: int = 4) -> "NLLScorer":
        """A scorer on a model already in memory (e.g. the generation backend's)."""
        import torch
        scorer = cls.__new__(cls)
        scorer.model, scorer.tok, scorer.batch_size, scorer.torch = model, tok, batch_size, torch
        return scorer

    def score(self, encoded: list[Encoded]) -> list[tuple[float, int]]:
        """[(mean NLL per completion token, completion tokens)] for [(ids, prompt_len)]."""
        pad = self.tok.pad_token_id if self.tok.pad_token_id is not None else 0
        out = []
        with self.torch.inference_mode():
            for i in range(0, len(encoded), self.batch_size):
                batch = encoded[i:i + self.batch_size]
                for (ids, p), lp in zip(batch, completion_logprobs(self.model, batch, pad)):
                    out.append((float("nan"), 0) if lp is None else (float(token_nll(lp, ids, p).mean()), len(ids) - p))
        return out
