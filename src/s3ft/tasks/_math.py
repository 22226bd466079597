"""Shared pieces of the math tasks (GSM8K-style gold ending in `#### N`)."""

from __future__ import annotations

import re

from . import Task

GSM8K_CALC = re.compile(r"<<[^<>]*>>")


class MathTask(Task):
    judge = "math"
    instruction = 'Solve it step by step, and end your response with "The answer is N".'
    # SDFT's form: the only one that made small models write full solutions (see README).
    paraphrase_system = ("Below are a math question and its reference answer. "
                         "Refer to the reference answer and write a response.")
    paraphrase_prefill = "Great! Let's think step by step."
    # "The answer is 24." / "#### 24" followed by a line break or sentence end: nothing after it counts.
    answer_complete = r"(?:[Aa]nswer is|####)\s*:?\s*\$?\s*-?\d[\d,]*(?:\.\d+)?\s*(?:\.\s|\.?\s*\n)"

    def final_answer_line(self, text: str) -> str:
        text = re.sub(r"####.*$", "", text, flags=re.S)
        return re.sub(r"(?i)the (final )?answer is.*$", "", text, flags=re.S)


def gsm8k_final(answer: str) -> str:
    return answer.rsplit("####", 1)[-1].strip().replace(",", "")


def clean_gsm8k_gold(answer: str) -> str:
    """Drop the calculator annotations `<<48/2=24>>`: they are not natural text."""
    return GSM8K_CALC.sub("", answer).strip()
