"""Shared pieces of the Python code tasks (MBPP, HumanEval), graded by the `code` judge.

Gold targets and paraphrase targets are a ```python fenced block. The paraphrase turn is
prefilled with "```python\\n" so that even a small model writes code rather than talking
about the reference; the pipeline judges prefill + continuation, so the fence is there.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from ..errors import S3FTError
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


@dataclass
class SplitArgs:
    """Options of a task that divides one source into train and test by a seeded shuffle."""
    test_fraction: float = 0.2
    """Share of the rows (or groups of rows) that go to the test split, in (0, 1)."""
    split_seed: int = 0
    """Seed of the shuffle that divides the rows (independent of `data.seed`)."""

    def check(self, where: str) -> None:
        if not 0 < self.test_fraction < 1:
            raise S3FTError(f"{where}.test_fraction: must be between 0 and 1, got {self.test_fraction}")


class CodeTask(Task):
    answer_type = "code"
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
