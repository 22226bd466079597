"""Synthetic multi-step word problems, generated from a seed: the offline demo and test task.

Gold solutions are written GSM8K-style (one step a line, `#### N` last), so everything
that works here works on GSM8K.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from ..errors import S3FTError
from ._math import MathTask, MathTaskArgs
from . import Example, register_task

NAMES = ["Ava", "Ben", "Chloe", "Dan", "Ella", "Finn", "Grace", "Hugo", "Iris", "Jack", "Lena", "Omar"]
ITEMS = ["apples", "marbles", "stickers", "pencils", "cookies", "books", "shells", "cards"]


def _problem(rng: random.Random) -> tuple[str, str, int]:
    name, item = rng.choice(NAMES), rng.choice(ITEMS)
    kind = rng.randrange(4)
    if kind == 0:
        a, b = rng.randint(3, 15), rng.randint(2, 9)
        c = rng.randint(1, a + b - 1)
        r = a + b - c
        q = f"{name} has {a} {item}. {name} gets {b} more {item} and then gives {c} away. How many {item} does {name} have now?"
        g = f"{name} starts with {a} {item}.\nAfter getting {b} more: {a} + {b} = {a + b}.\nAfter giving {c} away: {a + b} - {c} = {r}.\n#### {r}"
    elif kind == 1:
        a, b = rng.randint(2, 5), rng.randint(2, 6)
        c = rng.randint(1, a * b - 1)
        r = a * b - c
        q = f"{name} buys {a} bags of {item} with {b} {item} in each bag, then uses {c} of them. How many {item} are left?"
        g = f"The bags hold {a} x {b} = {a * b} {item}.\nAfter using {c}: {a * b} - {c} = {r}.\n#### {r}"
    elif kind == 2:
        b, each = rng.randint(2, 5), rng.randint(2, 6)
        c = rng.randint(1, 5)
        a = b * each
        r = each + c
        q = f"{name} shares {a} {item} equally among {b} friends. Each friend then finds {c} more {item}. How many {item} does each friend have?"
        g = f"Each friend first gets {a} / {b} = {each} {item}.\nAfter finding {c} more: {each} + {c} = {r}.\n#### {r}"
    else:
        a, b, c = rng.randint(2, 6), rng.randint(2, 6), rng.randint(2, 3)
        r = (a + b) * c
        q = f"{name} collects {a} {item} on Monday and {b} {item} on Tuesday. On Wednesday {name} collects {c} times as many as on Monday and Tuesday together. How many {item} does {name} collect on Wednesday?"
        g = f"Monday and Tuesday together: {a} + {b} = {a + b}.\nWednesday: {a + b} x {c} = {r}.\n#### {r}"
    return q, g, r


@dataclass
class ArithmeticArgs(MathTaskArgs):
    """Options of the `arithmetic` task."""
    n_train: int = 1000
    """Training problems generated."""
    n_test: int = 200
    """Test problems generated (none of them also a training problem)."""

    def check(self, where: str) -> None:
        for key in ("n_train", "n_test"):
            if getattr(self, key) < 1:
                raise S3FTError(f"{where}.{key}: must be >= 1, got {getattr(self, key)}")


@register_task("arithmetic", args=ArithmeticArgs)
class Arithmetic(MathTask):
    """Small numbers on purpose: a 135M model should get some right, so the demo shows all
    three S3FT tiers (own answer, paraphrase, gold).
    """

    version = "2"

    def load_split(self, split: str) -> list[Example]:
        n_train, n_test = self.opts.n_train, self.opts.n_test
        rng = random.Random(f"arithmetic-{self.cfg.seed}")
        seen: set[str] = set()
        out: dict[str, list[Example]] = {"train": [], "test": []}
        # One stream for both splits so no question appears in both.
        for sp, n in (("test", n_test), ("train", n_train)):
            while len(out[sp]) < n:
                q, g, r = _problem(rng)
                if q in seen:
                    continue
                seen.add(q)
                out[sp].append(Example(id=f"arith-{sp}-{len(out[sp])}", question=q, gold=g, meta={"answer": str(r)}))
        if split not in out:
            raise S3FTError(f"task 'arithmetic': unknown split '{split}' (train, test)")
        return out[split]
