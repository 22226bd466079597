"""Target-selection strategies: each is one function from a training record to a target.

A record holds the example, the base model's own answer with its verdict, and (when
made) the model's paraphrase of the gold answer with its verdict:

    {"id", "messages", "gold",
     "answer":     {"text", "correct", "reason"},
     "paraphrase": {"text", "correct", "reason"} | None}

The result is `(target_text, source, reason)`, source in {self, paraphrase, rewrite, gold}.
"""

from __future__ import annotations

import re
from typing import Callable

Target = tuple[str, str, str]
STRATEGIES: dict[str, Callable[[dict], Target]] = {}


def register_strategy(name: str):
    def deco(fn):
        STRATEGIES[name] = fn
        return fn
    return deco


def _accepted(part: dict | None) -> bool:
    return bool(part and part.get("correct"))


@register_strategy("sft")
def sft(rec: dict) -> Target:
    """Plain supervised fine-tuning: always the gold answer."""
    return rec["gold"], "gold", "gold"


@register_strategy("ssr")
def ssr(rec: dict) -> Target:
    """Selective Self-Rehearsal: the model's own answer where judged correct, else gold."""
    if _accepted(rec["answer"]):
        return rec["answer"]["text"], "self", rec["answer"]["reason"]
    return rec["gold"], "gold", "own answer rejected: " + rec["answer"]["reason"]


@register_strategy("s3ft")
def s3ft(rec: dict) -> Target:
    """S3FT: own answer if correct, else own paraphrase of the gold if correct, else gold."""
    if _accepted(rec["answer"]):
        return rec["answer"]["text"], "self", rec["answer"]["reason"]
    para = rec.get("paraphrase")
    if _accepted(para):
        return para["text"], "paraphrase", para["reason"]
    why = para["reason"] if para else "no paraphrase"
    return rec["gold"], "gold", "paraphrase rejected: " + why


@register_strategy("sdft")
def sdft(rec: dict) -> Target:
    """Self-distillation: the model's rewrite of every gold answer, kept if still correct."""
    para = rec.get("paraphrase")
    if _accepted(para):
        return para["text"], "rewrite", para["reason"]
    return rec["gold"], "gold", "rewrite rejected: " + (para["reason"] if para else "no rewrite")


def needs_paraphrase(methods: list[str], answer_correct: bool) -> bool:
    """Only sdft rewrites every row; s3ft paraphrases only where the own answer failed."""
    return "sdft" in methods or ("s3ft" in methods and not answer_correct)


def paraphrase_problem(text: str, gold: str, final_answer_removed: str, reference_phrases: tuple[str, ...],
                       min_length_ratio: float, min_words: int, prefill: str = "") -> str | None:
    """Why a paraphrase must be rejected before judging (None: fine).

    Small models asked to restate a solution often reply with the bare final answer, or
    talk about "the reference answer"; a judge that only checks the number accepts both,
    and training on them teaches the model to stop reasoning.
    """
    low = text.lower()
    for phrase in reference_phrases:
        if phrase in low:
            return f"mentions the reference ({phrase!r})"
    words, gold_words = len(text.split()), len(gold.split())
    if words < min_length_ratio * gold_words:
        return f"too short: {words} words vs {gold_words} in the gold answer"
    reasoning = final_answer_removed.replace(prefill, "", 1) if prefill else final_answer_removed
    if len(re.findall(r"\w+", reasoning)) < min_words:
        return "no reasoning: little besides the final answer"
    return None
