"""Shared pieces of the math tasks (GSM8K-style gold ending in `#### N`).

task_args `canonical_answer` (default false) puts training targets in one answer format:
- gold targets end in the line the instruction asks for, "The answer is N.", instead of
  GSM8K's `#### N`, so that SFT and S3FT targets differ in reasoning, not in answer format;
- a paraphrase or rewrite is accepted only when it states its final answer explicitly
  ("The answer is N", `#### N` or `\\boxed{N}`), never through the judge's last-number
  fallback, which also accepts reasoning whose last number only happens to match.
The alternative, appending the canonical line to every accepted target, was not taken: it
edits the model's own text (S3FT's point is training on it verbatim), and it would turn a
paraphrase accepted by a coincidental last number into a confident, wrongly reasoned target.
Own answers keep their own explicit form (often `\\boxed{N}`); the selection stats report the
answer-format mix of each method's targets (`answer_formats`).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass

from ..judges.math import extract_answer
from . import Example, Task

GSM8K_CALC = re.compile(r"<<[^<>]*>>")


@dataclass
class MathTaskArgs:
    """Options of the math tasks."""
    canonical_answer: bool = False
    """Training targets in one answer format: gold ends in "The answer is N." rather than `#### N`, and a
    paraphrase or rewrite is accepted only when it states its final answer explicitly (see tasks/_math.py)."""


class MathTask(Task):
    answer_type = "number"
    judge = "math"
    instruction = 'Solve it step by step, and end your response with "The answer is N".'
    # SDFT's form: the only one that made small models write full solutions (see README).
    paraphrase_system = ("Below are a math question and its reference answer. "
                         "Refer to the reference answer and write a response.")
    paraphrase_prefill = "Great! Let's think step by step."
    # "The answer is 24." / "#### 24" followed by a line break or sentence end: nothing after it counts.
    answer_complete = r"(?:[Aa]nswer is|####)\s*:?\s*\$?\s*-?\d[\d,]*(?:\.\d+)?\s*(?:\.\s|\.?\s*\n)"

    def __init__(self, cfg):
        super().__init__(cfg)
        self.canonical = self.opts.canonical_answer
        if self.canonical:
            self.target_rule = "explicit final answer"

    def load(self, split: str) -> list[Example]:
        rows = super().load(split)
        if not self.canonical:
            return rows
        return [dataclasses.replace(e, gold=canonical_gold(e.gold, e.meta.get("answer"))) for e in rows]

    def target_problem(self, text: str) -> str | None:
        if self.canonical and answer_format(text) == "none":
            return "no explicit final-answer statement"
        return None

    def answer_format(self, text: str) -> str | None:
        return answer_format(text)

    def final_answer_line(self, text: str) -> str:
        text = re.sub(r"####.*$", "", text, flags=re.S)
        return re.sub(r"(?i)the (final )?answer is.*$", "", text, flags=re.S)


def answer_format(text: str) -> str:
    """How `text` states its final answer, as the math judge reads it: 'answer is', '####', 'boxed',
    or 'none' (no explicit statement; the judge falls back to the last number)."""
    how = extract_answer(text)[1]
    return "none" if how in ("last number", "none") else how


def canonical_gold(gold: str, answer: str | None) -> str:
    """The gold solution with its `#### N` line replaced by "The answer is N." (appended if it has none)."""
    answer = answer if answer is not None else extract_answer(gold)[0]
    body = re.sub(r"\n?####[^\n]*\s*$", "", gold).rstrip()
    return f"{body}\nThe answer is {answer}."


def gsm8k_final(answer: str) -> str:
    return answer.rsplit("####", 1)[-1].strip().replace(",", "")


def clean_gsm8k_gold(answer: str) -> str:
    """Drop the calculator annotations `<<48/2=24>>`: they are not natural text."""
    return GSM8K_CALC.sub("", answer).strip()
