"""Task registry. A task is one file in this package that subclasses `Task` and
decorates it with `@register_task("name", args=NameTaskArgs)`; every module here is imported
on first use.

A task knows how to load its splits, how to prompt for a row, which judge grades a
response, and how to ask the model to restate a gold answer in its own words. It declares
its options (`data.task_args`) as a dataclass, each field documented, checked when the
config loads (`task_args`): a typo is a one-line error naming `data.task_args.<key>`.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import json
import random
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from ..config import DataConfig, build_args, row_range
from ..errors import S3FTError
from ..methods.opsd.config import PAPER_TEMPLATE
from ..registry import import_submodules

TASKS: dict[str, type["Task"]] = {}


@dataclass
class NoArgs:
    """A task without options."""


def register_task(name: str, args: type | None = None):
    """Register a `Task` subclass as `name`; `args`: the dataclass of its options (`data.task_args`),
    unset: its parent class's."""
    def deco(cls):
        cls.name = name
        if args is not None:
            cls.args_type = args
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
    context: list[dict] = field(default_factory=list)
    """The conversation before the question, as chat messages ({role, content}): a data set's own
    system prompt and earlier turns. Empty for single-turn tasks."""

    def to_dict(self) -> dict:
        d = {"id": self.id, "question": self.question, "gold": self.gold, "meta": self.meta}
        if self.context:  # absent when empty, so single-turn rows read as they always have
            d["context"] = self.context
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Example":
        return cls(d["id"], d["question"], d["gold"], d.get("meta", {}), d.get("context", []))


class Task:
    """Base class: override `load_split`, and the prompts where the defaults do not fit."""

    name: ClassVar[str] = ""
    args_type: ClassVar[type] = NoArgs
    """The dataclass of the task's options (`data.task_args`), set by `register_task`."""
    answer_type: ClassVar[str | None] = None
    """What an answer is: `number` (math, a final number), `short` (a short phrase), `free` (free
    text), `code`; chooses the prompts, the paraphrase filters and the judge (see tasks/answer_types.py)."""
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
        """The options as written (part of `describe`)."""
        self.opts = build_args(self.args_type, self.args, "data.task_args", f"task '{self.name}'")
        """The options, typed: an `args_type` instance."""

    def path(self, key: str, value: str) -> Path:
        """`value` (written at `data.task_args.<key>`) as a path: relative ones resolve against the config
        file's folder (`DataConfig.base_dir`; no config file: the working directory). Missing: an error
        naming the key, the path resolved and the base folder."""
        return self.path_from(f"data.task_args.{key}", value)

    def path_from(self, key: str, value: str) -> Path:
        """`value`, written at `key`, as a path (see `path`)."""
        base = Path(self.cfg.base_dir) if self.cfg.base_dir is not None else Path.cwd()
        path = base / Path(value).expanduser()
        if not path.exists():
            raise S3FTError(f"{key}: {path}: not found ({value!r} resolved against {base})")
        return path

    # --- data -----------------------------------------------------------------
    def load_split(self, split: str) -> list[Example]:
        raise NotImplementedError

    def load(self, split: str) -> list[Example]:
        rows = self.load_split(split)
        if not rows:
            raise S3FTError(f"task '{self.name}': the {split} split is empty")
        key = f"data.{split}_rows"
        if (bounds := row_range(getattr(self.cfg, f"{split}_rows"), key)) is not None:
            if bounds[1] > len(rows):
                raise S3FTError(f"{key}: {bounds[0]}:{bounds[1]} reaches past the {split} split's {len(rows)} rows")
            rows = rows[bounds[0]:bounds[1]]
        if split == "test" and self.cfg.test_exclude is not None:
            excluded = excluded_ids(self.path_from("data.test_exclude", self.cfg.test_exclude))
            rows = [r for r in rows if r.id not in excluded]
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
        """The prompt: the system prompt (a row's own, from its context, else the task's), the earlier turns,
        then the question with the instruction."""
        own_system = bool(ex.context) and ex.context[0]["role"] == "system"
        msgs = [{"role": "system", "content": self.system_prompt}] if self.system_prompt and not own_system else []
        user = ex.question + (f"\n{self.instruction}" if self.instruction else "")
        return msgs + list(ex.context) + [{"role": "user", "content": user}]

    def paraphrase_messages(self, ex: Example) -> list[dict]:
        return [{"role": "system", "content": self.paraphrase_system},
                {"role": "user", "content": transcript(ex.context)
                 + f"Question:\n{ex.question}\n\nReference answer:\n{ex.gold}"}]

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


def excluded_ids(path: Path) -> set[str]:
    """The ids in a `data.test_exclude` file: one per line, or JSONL rows with an `id`."""
    ids = set()
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = line.strip()
        if not line.startswith("{"):
            ids.update([line] if line else [])
            continue
        try:
            ids.add(str(json.loads(line)["id"]))
        except (json.JSONDecodeError, KeyError, TypeError):
            raise S3FTError(f"data.test_exclude: {path}:{n}: expected an id or a JSON object with an `id`") from None
    return ids


def transcript(context: list[dict]) -> str:
    """The earlier turns of a conversation as text, for a prompt that quotes them ("" for none)."""
    if not context:
        return ""
    lines = "\n\n".join(f"{m['role'].capitalize()}: {m['content']}" for m in context)
    return f"Conversation so far:\n{lines}\n\n"


def task_class(name: str) -> type[Task]:
    import_submodules(__name__, __path__)
    if name not in TASKS:
        raise S3FTError(f"data.task: unknown task '{name}' (known: {', '.join(sorted(TASKS))})")
    return TASKS[name]


def task_args(name: str, data: DataConfig) -> Any:
    """The typed options of task `name` from a config's `data` section; an error names `data.task_args.<key>`."""
    return build_args(task_class(name).args_type, data.task_args, "data.task_args", f"task '{name}'")


def field_docs(cls: type) -> dict[str, str]:
    """The docstring under each field of a dataclass and its bases (the string after `name: type = ...`)."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__[:-1]):
        try:
            body = ast.parse(textwrap.dedent(inspect.getsource(klass))).body[0].body
        except (OSError, TypeError):  # defined where its source cannot be read (a REPL)
            continue
        for stmt, nxt in zip(body, body[1:]):
            if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name) and isinstance(nxt, ast.Expr) \
                    and isinstance(nxt.value, ast.Constant) and isinstance(nxt.value.value, str):
                docs[stmt.target.id] = " ".join(nxt.value.value.split())
    return docs


def args_table(args_type: type) -> list[tuple[str, str, str, str]]:
    """(name, type, default, docstring) of each option in an args dataclass, in declaration order."""
    docs = field_docs(args_type)
    out = []
    for f in dataclasses.fields(args_type):
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else "required")
        tp = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
        out.append((f.name, tp, "null" if default is None else repr(default), docs.get(f.name, "")))
    return out


def get_task(cfg: DataConfig) -> Task:
    return task_class(cfg.task)(cfg)


def task_names() -> list[str]:
    import_submodules(__name__, __path__)
    return sorted(TASKS)
