"""Your own data: JSONL files with a field mapping and a judge.

    data:
      task: jsonl
      task_args:
        train: data/train.jsonl
        test: data/test.jsonl
        question_field: question     # default "question"
        answer_field: answer         # the gold target text; default "answer"
        final_answer_field: null     # what the judge compares (default: taken from the gold text)
        judge: math                  # any registered judge
        instruction: "..."           # optional, appended to the question
"""

from __future__ import annotations

from pathlib import Path

from ..artifacts import iter_jsonl
from ..errors import S3FTError
from ._math import MathTask
from . import Example, register_task


@register_task("jsonl")
class JsonlTask(MathTask):
    def __init__(self, cfg):
        super().__init__(cfg)
        self.judge = self.args.get("judge", "math")
        if "instruction" in self.args:
            self.instruction = self.args["instruction"]
        if "system_prompt" in self.args:
            self.system_prompt = self.args["system_prompt"]
        known = {"train", "test", "question_field", "answer_field", "final_answer_field", "judge",
                 "instruction", "system_prompt", "paraphrase_system", "paraphrase_prefill"}
        for k in self.args:
            if k not in known:
                raise S3FTError(f"data.task_args: unknown key '{k}' for task jsonl (known: {', '.join(sorted(known))})")
        for k in ("paraphrase_system", "paraphrase_prefill"):
            if k in self.args:
                setattr(self, k, self.args[k])

    def load_split(self, split: str) -> list[Example]:
        if split not in self.args:
            raise S3FTError(f"data.task_args.{split}: path to the {split} JSONL is required for task jsonl")
        path = Path(self.args[split])
        qf, af = self.args.get("question_field", "question"), self.args.get("answer_field", "answer")
        ff = self.args.get("final_answer_field")
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
