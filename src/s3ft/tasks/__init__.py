"""Task registry. A task is one file in this package that subclasses `Task` and
decorates it with `@register_task("name")`; every module here is imported on first use.

A task knows how to load its splits, how to prompt for a row, which judge grades a
response, and how to ask the model to restate a gold answer in its own words.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, ClassVar

from ..config import DataConfig
from ..errors import S3FTError
from ..methods.opsd.config import PAPER_TEMPLATE
from ..registry import import_submodules

TASKS: dict[str, type["Task"]] = {}


def register_task(name: str):
    def deco(cls):
        cls.name = name
        TASKS[name] = cls
        return cls
    return deco


@dataclass
class Example:
    id: str
    question: str
    gold: str
    """Gold target text (what SFT trains on)."""
    meta: dict = field(default_factory=dict)
    """What the judge needs beyond the gold text: final answer, unit tests, ..."""

    def to_dict(self) -> dict:
        return {"id": self.id, "question": self.question, "gold": self.gold, "meta": self.meta}

    @classmethod
    def from_dict(cls, d: dict) -> "Example":
        return cls(d["id"], d["question"], d["gold"], d.get("meta", {}))


class Task:
    """Base class: override `load_split`, and the prompts where the defaults do not fit."""

    name: ClassVar[str] = ""
    judge: ClassVar[str] = "math"
    version: ClassVar[str] = "1"
    """Bump when prompts change, so runs do not reuse stale generations."""
    system_prompt: ClassVar[str | None] = None
    instruction: ClassVar[str] = ""
    """Appended to the question in the user turn."""
    paraphrase_system: ClassVar[str] = (
        "Below are a question and its reference answer. Refer to the reference answer and write a response.")
    paraphrase_prefill: ClassVar[str] = ""
    """Start of the assistant turn when paraphrasing; it becomes part of the target."""
    reference_phrases: ClassVar[tuple[str, ...]] = (
        "reference answer", "reference solution", "the given answer", "the provided answer",
        "given solution", "provided solution", "the reference")
    stop: ClassVar[tuple[str, ...]] = ()
    """Extra stop strings for generation."""
    answer_complete: ClassVar[str | None] = None
    """Regex that matches once a response has stated its final answer; generation stops there."""
    paraphrase_limits: ClassVar[tuple[float, int] | None] = None
    """(min_length_ratio, min_words) for the paraphrase filter, replacing the `paraphrase`
    config section for this task (for short or code targets, where those rules misfire)."""
    target_rule: str | None = None
    """Set where `target_problem` can reject anything: names that rule in the paraphrase verdicts' fingerprint."""
    opsd_teacher_template: ClassVar[str] = PAPER_TEMPLATE
    """Method `opsd`: the teacher's user turn, with `{question}` (the student's user turn) and `{demonstration}`
    (the gold answer); `opsd.teacher_template` overrides it. Part of the opsd fingerprint, not of `describe`."""

    def __init__(self, cfg: DataConfig):
        self.cfg = cfg
        self.args = dict(cfg.task_args)

    # --- data -----------------------------------------------------------------
    def load_split(self, split: str) -> list[Example]:
        raise NotImplementedError

    def load(self, split: str) -> list[Example]:
        rows = self.load_split(split)
        if not rows:
            raise S3FTError(f"task '{self.name}': the {split} split is empty")
        limit = self.cfg.train_limit if split == "train" else self.cfg.test_limit
        if limit is not None and limit < len(rows):
            keep = sorted(random.Random(f"{self.cfg.seed}-{split}").sample(range(len(rows)), limit))
            rows = [rows[i] for i in keep]
        return rows

    def split_record(self) -> dict | None:
        """How the task divided its source into train and test, after `load_split` (None: the source
        has its own splits); the data stage writes it to `data/split.json`."""
        return None

    # --- prompts --------------------------------------------------------------
    def messages(self, ex: Example) -> list[dict]:
        msgs = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
        user = ex.question + (f"\n{self.instruction}" if self.instruction else "")
        return msgs + [{"role": "user", "content": user}]

    def paraphrase_messages(self, ex: Example) -> list[dict]:
        return [{"role": "system", "content": self.paraphrase_system},
                {"role": "user", "content": f"Question:\n{ex.question}\n\nReference answer:\n{ex.gold}"}]

    def target_problem(self, text: str) -> str | None:
        """Why a paraphrase or rewrite must be rejected whatever the judge says (None: fine)."""
        return None

    def answer_format(self, text: str) -> str | None:
        """The kind of final-answer statement in a target, for the selection stats (None: the task has none)."""
        return None

    def final_answer_line(self, text: str) -> str:
        """The text with its final-answer statement removed (used to spot bare-answer paraphrases)."""
        return text

    def extra_metrics(self, examples: list[dict], generations: list[dict], verdicts: dict) -> dict:
        """Task-specific evaluation metrics, merged into eval/<model>.metrics.json.
        `examples` and `generations` are in the same order; `verdicts` maps id -> verdict row."""
        return {}

    def describe(self) -> dict[str, Any]:
        """Everything that changes this task's generations; part of every fingerprint."""
        return {"task": self.name, "version": self.version, "judge": self.judge,
                "system_prompt": self.system_prompt, "instruction": self.instruction,
                "paraphrase_system": self.paraphrase_system, "paraphrase_prefill": self.paraphrase_prefill,
                "answer_complete": self.answer_complete}


def get_task(cfg: DataConfig) -> Task:
    import_submodules(__name__, __path__)
    if cfg.task not in TASKS:
        raise S3FTError(f"data.task: unknown task '{cfg.task}' (known: {', '.join(sorted(TASKS))})")
    return TASKS[cfg.task](cfg)


def task_names() -> list[str]:
    import_submodules(__name__, __path__)
    return sorted(TASKS)
