"""Shared pieces of the Python code tasks (MBPP, HumanEval), graded by the `code` judge.

Gold targets and paraphrase targets are a ```python fenced block. The paraphrase turn is
prefilled with "```python\\n" so that even a small model writes code rather than talking
about the reference; the pipeline judges prefill + continuation, so the fence is there.
"""

from __future__ import annotations

import random

from . import Example, Task

FENCE = "```python\n"


def fenced(code: str) -> str:
    return FENCE + code.replace("\r\n", "\n").strip("\n").rstrip() + "\n```"


def split_ids(ids: list, test_fraction: float, seed: str) -> set:
    """The ids that go to the test split: a seeded shuffle of the sorted ids, independent of row order."""
    order = sorted(ids)
    random.Random(seed).shuffle(order)
    n_test = max(1, round(test_fraction * len(order)))
    return set(order[:n_test])


class CodeTask(Task):
    judge = "code"
    instruction = "Write your solution in a ```python code block."
    paraphrase_system = ("Below are a programming problem and a reference solution. Refer to the reference "
                         "solution and write your own solution in a ```python code block.")
    paraphrase_prefill = FENCE
    # The model stops after the closing fence of its code block: what follows is commentary,
    # and rambling on to max_new_tokens would mark a correct answer as truncated.
    stop = ("\n```\n",)
    # The tests decide correctness; a correct solution may be far shorter than the reference,
    # and a one-line function has few words, so the generic length rules are off for code.
    paraphrase_limits = (0.0, 0)

    def paraphrase_messages(self, ex: Example) -> list[dict]:
        return [{"role": "system", "content": self.paraphrase_system},
                {"role": "user", "content": f"Problem:\n{ex.question}\n\nReference solution:\n{ex.gold}"}]

    def final_answer_line(self, text: str) -> str:
        return text  # code has no separate final-answer statement
