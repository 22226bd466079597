"""JSONL files with a question/answer field mapping, prompted as math (the older way to bring
your own data; the `dataset` task reads more formats and sources and fits its prompts to the
answer type).

    data:
      task: jsonl
      task_args:
        train: data/train.jsonl      # relative paths resolve against the config file's folder
        test: data/test.jsonl
        question_field: question
        answer_field: answer
        judge: math
"""

from __future__ import annotations

from dataclasses import dataclass

from ..artifacts import iter_jsonl
from ..errors import S3FTError
from ._math import MathTask, MathTaskArgs
from . import Example, register_task


@dataclass
class FieldArgs:
    """Which fields of a row hold what (the `fields` format)."""
    question_field: str = "question"
    """The question (the user turn)."""
    answer_field: str = "answer"
    """The gold target text (what SFT trains on)."""
    final_answer_field: str | None = None
    """What the judge compares (the final number, a short answer); unset: taken from the gold text."""


@dataclass
class PromptArgs:
    """The prompts, each unset: the task's (or answer type's) own."""
    judge: str | None = None
    """The judge that grades answers (`s3ft tasks` lists them); `judge.name` overrides it."""
    instruction: str | None = None
    """Appended to the question in the user turn ("" for none)."""
    system_prompt: str | None = None
    """System prompt for rows without one of their own."""
    paraphrase_system: str | None = None
    """System prompt of the paraphrase request (the model restating the gold answer in its own words)."""
    paraphrase_prefill: str | None = None
    """Start of the paraphrase's assistant turn; it becomes part of the target."""


@dataclass
class JsonlArgs(FieldArgs, PromptArgs, MathTaskArgs):
    """Options of the `jsonl` task."""
    train: str | None = None
    """The training JSONL (required); a relative path resolves against the config file's folder."""
    test: str | None = None
    """The test JSONL (required)."""


def apply_prompts(task, opts: PromptArgs) -> None:
    """Set the prompts the options give on `task`, keeping its own where they are unset."""
    for key in ("judge", "instruction", "system_prompt", "paraphrase_system", "paraphrase_prefill"):
        if getattr(opts, key) is not None:
            setattr(task, key, getattr(opts, key))


@register_task("jsonl", args=JsonlArgs)
class JsonlTask(MathTask):
    def __init__(self, cfg):
        super().__init__(cfg)
        apply_prompts(self, self.opts)

    def load_split(self, split: str) -> list[Example]:
        if getattr(self.opts, split, None) is None:
            raise S3FTError(f"data.task_args.{split}: path to the {split} JSONL is required for task jsonl")
        path = self.path(split, getattr(self.opts, split))
        qf, af, ff = self.opts.question_field, self.opts.answer_field, self.opts.final_answer_field
        out, first_line = [], {}
        for lineno, row in enumerate(iter_jsonl(path), 1):
            for f in (qf, af) + ((ff,) if ff else ()):
                if f not in row:
                    raise S3FTError(f"{path}:{lineno}: missing field '{f}'")
                if not isinstance(row[f], (str, int, float)):
                    raise S3FTError(f"{path}:{lineno}: field '{f}' must be text, got {type(row[f]).__name__}")
            meta = {"answer": str(row[ff])} if ff else {}
            ex_id = str(row.get("id", f"{split}-{lineno}"))
            if ex_id in first_line:  # rows are keyed by id everywhere: a second one would vanish
                raise S3FTError(f"{path}:{lineno}: duplicate id '{ex_id}' (first on line {first_line[ex_id]})")
            first_line[ex_id] = lineno
            out.append(Example(id=ex_id, question=str(row[qf]), gold=str(row[af]), meta=meta))
        if not out:
            raise S3FTError(f"{path}: the {split} split is empty")
        return out

    def answer_format(self, text: str) -> str | None:
        return super().answer_format(text) if self.judge == "math" else None

    def describe(self):
        return {**super().describe(), "args": self.args}
