"""Your own data: a local file or a hub dataset, in one of four row formats, with prompts that fit
the answer type (see docs/own-data.md).

    data:
      task: dataset
      task_args:
        train: data/chat.jsonl      # a path (relative to the config file), a dataset folder, or a hub id
        format: messages            # fields | messages | sharegpt | alpaca | auto
        answer_type: short          # number | short | free | code
        test_fraction: 0.2          # no `test`: this share of `train` is held out

Rows in `messages`/`sharegpt`/`alpaca` form keep the conversation before the answered turn
(a system prompt, earlier turns) as context: the prompt the model answers, and the training
row's `messages`, carry it, so SFT trains on the last turn given the earlier ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import S3FTError
from ._code import split_ids
from ._math import MathTask, answer_format, canonical_gold
from .answer_types import ANSWER_TYPES
from .formats import FORMATS, RowError, detect, from_alpaca, from_fields, from_messages, from_sharegpt
from .jsonl import FieldArgs, PromptArgs, apply_prompts
from .sources import Source, read, resolve
from . import Example, Task, register_task, transcript


@dataclass
class SourceArgs:
    """Where the rows come from."""
    train: str | None = None
    """The training data (required): a JSONL/JSON/Parquet/CSV file, a dataset folder (`save_to_disk`, or data
    files that `datasets.load_dataset` reads), or a hub dataset id. Relative paths resolve against the config
    file's folder; a hub id is read from `data.data_dir/<name>/<split>.jsonl` when that mirror exists."""
    test: str | None = None
    """The test data, like `train`; unset: `test_fraction` of the training rows are held out."""
    train_split: str = "train"
    """The split of a dataset folder or hub id that `train` reads."""
    test_split: str = "test"
    """The split of a dataset folder or hub id that `test` reads."""
    name: str | None = None
    """The hub dataset's configuration name (`load_dataset(id, name)`)."""
    revision: str | None = None
    """The hub dataset's revision: a branch, tag or commit."""
    test_fraction: float = 0.2
    """Without `test`: the share of training rows held out for test (by a seeded shuffle of row ids)."""
    split_seed: int = 0
    """Without `test`: the seed of that shuffle (independent of `data.seed`)."""


@dataclass
class FormatArgs:
    """What a row holds and what an answer is."""
    answer_type: str | None = None
    """Required: `number` (a worked solution ending in a final number), `short` (a short phrase), `free` (free
    text, judged by an LLM) or `code` (a Python function, judged by running tests). Chooses the instruction, the
    paraphrase prompt and filters, and the judge."""
    format: str = "auto"
    """`fields`, `messages`, `sharegpt`, `alpaca`, or `auto`: from the first row's fields (`messages`,
    `conversations`, `instruction`+`output`, or the question and answer fields)."""
    messages_field: str | None = None
    """The field holding the conversation; unset: `messages` (format messages) or `conversations` (sharegpt)."""
    tests_field: str = "tests"
    """Answer type `code`: the field holding the tests (a list of Python statements, e.g. asserts)."""
    canonical_answer: bool = False
    """Answer type `number`: gold ends in "The answer is N." and a paraphrase must state its answer (see
    tasks/_math.py)."""


@dataclass
class DatasetArgs(PromptArgs, FieldArgs, FormatArgs, SourceArgs):
    """Options of the `dataset` task: the source, the row format, the answer type, the field names and the
    prompts (each prompt unset: the answer type's)."""

    def check(self, where: str) -> None:
        if self.answer_type not in ANSWER_TYPES:
            raise S3FTError(f"{where}.answer_type: required, one of {', '.join(ANSWER_TYPES)}; got {self.answer_type!r}")
        if self.format not in (*FORMATS, "auto"):
            raise S3FTError(f"{where}.format: one of {', '.join(FORMATS)}, auto; got {self.format!r}")
        if not 0 < self.test_fraction < 1:
            raise S3FTError(f"{where}.test_fraction: must be between 0 and 1, got {self.test_fraction}")
        if self.canonical_answer and self.answer_type != "number":
            raise S3FTError(f"{where}.canonical_answer: only for answer_type number, not {self.answer_type}")


@register_task("dataset", args=DatasetArgs)
class DatasetTask(Task):
    def __init__(self, cfg):
        super().__init__(cfg)
        kind = ANSWER_TYPES[self.opts.answer_type]
        self.answer_type = self.opts.answer_type
        for key in ("judge", "instruction", "paraphrase_system", "paraphrase_prefill", "paraphrase_limits",
                    "answer_complete", "stop"):
            setattr(self, key, getattr(kind, key))
        apply_prompts(self, self.opts)
        if self.opts.canonical_answer:
            self.target_rule = "explicit final answer"
        self._split: dict | None = None

    # --- data -----------------------------------------------------------------
    def load_split(self, split: str) -> list[Example]:
        if split not in ("train", "test"):
            raise S3FTError(f"task 'dataset': unknown split '{split}' (train, test)")
        if self.opts.train is None:
            raise S3FTError("data.task_args.train: required for task dataset (a file, a dataset folder or a hub id)")
        if self.opts.test is not None:
            return self._examples(self._source(split), split)
        rows = self._examples(self._source("train"), "train")
        test_ids = split_ids([e.id for e in rows], self.opts.test_fraction, f"dataset-{self.opts.split_seed}")
        if len(test_ids) == len(rows):
            raise S3FTError(f"data.task_args.train: {len(rows)} row(s): too few to hold out a test split; set test")
        self._split = {"source": self.opts.train, "rows": len(rows), "test_fraction": self.opts.test_fraction,
                       "split_seed": self.opts.split_seed, "test_ids": sorted(test_ids)}
        return [e for e in rows if (e.id in test_ids) == (split == "test")]

    def split_record(self) -> dict | None:
        return self._split

    def _source(self, split: str) -> Source:
        base = Path(self.cfg.base_dir) if self.cfg.base_dir is not None else Path.cwd()
        return resolve(f"data.task_args.{split}", getattr(self.opts, split), getattr(self.opts, f"{split}_split"),
                       base, self.cfg.data_dir)

    def _examples(self, src: Source, split: str) -> list[Example]:
        rows = read(src, self.opts.name, self.opts.revision)
        if not rows:
            raise S3FTError(f"{src}: no rows")
        fmt = self.opts.format
        if fmt == "auto" and (fmt := detect(rows[0], self.opts.question_field, self.opts.answer_field)) is None:
            raise S3FTError(f"{src}: row 1: cannot tell the format from its fields ({', '.join(map(str, rows[0]))}); "
                            f"set data.task_args.format ({', '.join(FORMATS)})")
        out, first = [], {}
        for n, row in enumerate(rows, 1):
            try:
                ex = self._example(fmt, row, f"{split}-{n}")
            except RowError as e:
                raise S3FTError(f"{src}: row {n}: {e}") from None
            if ex.id in first:  # rows are keyed by id everywhere: a second one would vanish
                raise S3FTError(f"{src}: row {n}: duplicate id '{ex.id}' (first in row {first[ex.id]})")
            first[ex.id] = n
            out.append(ex)
        return out

    def _example(self, fmt: str, row: dict, default_id: str) -> Example:
        if not isinstance(row, dict):
            raise RowError(f"not a mapping: {str(row)[:80]!r}")
        o = self.opts
        context, question, gold = (
            from_fields(row, o.question_field, o.answer_field) if fmt == "fields"
            else from_messages(row, o.messages_field or "messages") if fmt == "messages"
            else from_sharegpt(row, o.messages_field or "conversations") if fmt == "sharegpt"
            else from_alpaca(row))
        meta = self._meta(row, gold)
        if o.canonical_answer:
            gold = canonical_gold(gold, meta.get("answer"))
        return Example(id=str(row.get("id", default_id)), question=question, gold=gold, meta=meta, context=context)

    def _meta(self, row: dict, gold: str) -> dict:
        """What the answer type's judge reads beyond the gold text."""
        final = row.get(self.opts.final_answer_field) if self.opts.final_answer_field else None
        if self.opts.final_answer_field and final is None:
            raise RowError(f"no field '{self.opts.final_answer_field}' (final_answer_field)")
        if self.answer_type == "number":
            return {"answer": str(final)} if final is not None else {}
        if self.answer_type == "code":
            tests = row.get(self.opts.tests_field)
            if isinstance(tests, str):
                tests = [tests]
            if not isinstance(tests, list) or not tests:
                raise RowError(f"no tests in field '{self.opts.tests_field}' (answer_type code needs them)")
            return {"test_setup_code": "", "tests": [str(t) for t in tests]}
        answers = final if isinstance(final, list) else [final if final is not None else gold]
        return {"answers": [str(a) for a in answers], "answerable": True}

    # --- prompts and targets --------------------------------------------------
    def paraphrase_messages(self, ex: Example) -> list[dict]:
        if self.answer_type != "code":
            return super().paraphrase_messages(ex)
        return [{"role": "system", "content": self.paraphrase_system},
                {"role": "user", "content": transcript(ex.context)
                 + f"Problem:\n{ex.question}\n\nReference solution:\n{ex.gold}"}]

    def target_problem(self, text: str) -> str | None:
        if self.opts.canonical_answer and answer_format(text) == "none":
            return "no explicit final-answer statement"
        return None

    def answer_format(self, text: str) -> str | None:
        return answer_format(text) if self.answer_type == "number" else None

    def final_answer_line(self, text: str) -> str:
        return MathTask.final_answer_line(self, text) if self.answer_type == "number" else text

    def describe(self):
        return {**super().describe(), "args": self.args}


