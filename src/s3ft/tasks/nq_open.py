"""Natural Questions, open-domain (hub `google-research-datasets/nq_open`): a question, no
context, and a list of short gold answers (`answer`: list of strings), the S3FT paper's
third task.

From the hub, train is its `train` split and test its `validation` split. Offline, the only
file is `<data_dir>/nq_open/validation.jsonl` (the hub's validation split, 3,610 rows), so
it is divided into disjoint parts: its lines are shuffled with a seed (task_args
`split_seed`, default 0, independent of `data.seed`), the first `test_size` (default 1000)
go to test and the next `train_size` (default: all the rest) to train. A split larger
than the file is an error. The split (file, seed, line numbers of each part) is written to
`data/split.json` in the run directory; row ids name their line (`nq-val-17`).
`data.train_limit` / `test_limit` then sample from these parts as for any task.

The model answers with a short phrase; generation ends with its first line. The gold target is the first gold answer. Graded
by `nq_em` (judges/nq.py: the standard NQ-open exact match against any gold answer) by
default; the paper grades NQ with an LLM judge: `judge.name: llm` (judges/llm.py, which
shows the judge every gold answer).

S3FT's paraphrase tier here: the model restates the gold phrase as its own short answer
(e.g. "December 14, 1972" for "14 December 1972 UTC"). Under exact match only restatements
that normalise to some gold answer pass, so an accepted paraphrase differs from gold in
surface form alone (case, punctuation, articles, or another listed alias); under the LLM
judge, rewordings with the same meaning pass too.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from ..errors import S3FTError
from . import Example, Task, register_task
from .hub import load_rows, read_rows

HUB = ("google-research-datasets/nq_open", None)


def split_lines(n_rows: int, train_size: int | None, test_size: int, seed: str) -> tuple[list[int], list[int]]:
    """(train, test) 0-based row indices: a seeded shuffle of all rows, test first, then train
    (`train_size` None: every remaining row). Disjoint; each part sorted."""
    train_n = n_rows - test_size if train_size is None else train_size
    if test_size < 1 or train_n < 1 or train_n + test_size > n_rows:
        raise ValueError(f"{test_size} test rows and at least 1 train row" if train_size is None
                         else f"{train_size} train + {test_size} test rows")
    order = list(range(n_rows))
    random.Random(seed).shuffle(order)
    return sorted(order[test_size:test_size + train_n]), sorted(order[:test_size])


@dataclass
class NQOpenArgs:
    """Options of the `nq_open` task: how the local validation file is divided (offline only)."""
    train_size: int | None = None
    """Rows for train; unset: every row not in test."""
    test_size: int = 1000
    """Rows for test."""
    split_seed: int = 0
    """Seed of the shuffle that divides the file (independent of `data.seed`)."""

    def check(self, where: str) -> None:
        for key in ("train_size", "test_size"):
            if (v := getattr(self, key)) is not None and v < 1:
                raise S3FTError(f"{where}.{key}: must be a positive whole number, got {v!r}")


@register_task("nq_open", args=NQOpenArgs)
class NQOpen(Task):
    answer_type = "short"
    judge = "nq_em"
    instruction = "Answer with a short phrase only: no sentence, no explanation."
    paraphrase_system = ("Below are a question and its reference answer, a short phrase. Write the answer "
                         "in your own words, as a short phrase only: no sentence, no explanation.")
    # The paper's teacher asks for "the thinking process"; here that would teach sentences, not phrases.
    opsd_teacher_template = ("{question}\n\nThis is an example of a correct answer to the question:\n{demonstration}\n\n"
                             "Now answer with a short phrase of your own.")
    # The answer is its first non-empty line (lm-eval's nq_open also stops at a newline): small
    # models follow a right phrase with invented facts, which must not become part of a target.
    answer_complete = r"\S[^\n]*\n"
    # Gold answers are a few words: the generic length and reasoning rules would reject every
    # correct restatement of them.
    paraphrase_limits = (0.0, 0)

    def __init__(self, cfg):
        super().__init__(cfg)
        if not cfg.data_dir and ("train_size" in self.args or "test_size" in self.args):
            raise S3FTError("data.task_args.train_size/test_size: split the local file only; from the hub "
                            "the train and validation splits are used (size them with data.train_limit/test_limit)")
        self._split: dict | None = None

    def load_split(self, split: str) -> list[Example]:
        if split not in ("train", "test"):
            raise S3FTError(f"task '{self.name}': unknown split '{split}' (train, test)")
        if not self.cfg.data_dir:
            rows = load_rows(None, "nq_open", "train" if split == "train" else "validation", hub=HUB)
            return [self._example(f"nq-{split}-{i}", r, f"hub {split}") for i, r in enumerate(rows)]
        path = Path(self.cfg.data_dir) / "nq_open" / "validation.jsonl"
        if not path.exists():
            raise S3FTError(f"{path}: not found (data.data_dir={self.cfg.data_dir})")
        rows = read_rows(path, ("question", "answer"))
        test_size, train_size, seed = self.opts.test_size, self.opts.train_size, self.opts.split_seed
        try:
            train_idx, test_idx = split_lines(len(rows), train_size, test_size, f"nq_open-{seed}")
        except ValueError as e:
            raise S3FTError(f"data.task_args: nq_open split of {e} does not fit {path} ({len(rows)} rows; "
                            "at least one each)") from None
        self._split = {"source": str(path), "rows": len(rows), "split_seed": seed,
                       "train_lines": [i + 1 for i in train_idx], "test_lines": [i + 1 for i in test_idx]}
        return [self._example(f"nq-val-{i + 1}", rows[i], f"{path}:{i + 1}")
                for i in (train_idx if split == "train" else test_idx)]

    @staticmethod
    def _example(ex_id: str, r: dict, where: str) -> Example:
        answers = r["answer"]
        if not isinstance(answers, list) or not all(isinstance(a, str) for a in answers):
            raise S3FTError(f"{where}: field 'answer' must be a list of strings")
        # Wikipedia's no-break spaces ("12\xa0April\xa01979") would end up in the gold target
        answers = list(dict.fromkeys(" ".join(a.split()) for a in answers if a.strip()))
        if not answers:
            raise S3FTError(f"{where}: field 'answer' has no non-empty answer")
        question = str(r["question"]).strip()
        question += "" if question.endswith("?") else "?"  # NQ questions are lower-case search queries
        return Example(id=ex_id, question=question, gold=answers[0],
                       meta={"answers": answers, "answerable": True})

    def split_record(self) -> dict | None:
        return self._split

    def describe(self):
        return {**super().describe(), "args": self.args}
