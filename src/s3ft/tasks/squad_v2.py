"""SQuAD 2.0 (hub `rajpurkar/squad_v2`), or local hub-schema JSONL
`<data_dir>/squad_v2/validation.jsonl` (fields id, title, context, question,
answers {text, answer_start}; empty lists for an unanswerable question).

Train and test both come from the `validation` split (the official dev set; the local
copy holds only that, 13 articles), divided by article `title`, never by question, so no
context is on both sides: titles are shuffled with a seed (task_args `split_seed`,
default 0, independent of `data.seed`) and go to the test side until it holds at least
`test_fraction` of the rows (default 0.2). The hub's much larger `train` split is not
used, so local and hub runs mean the same thing.

The model answers with a short phrase from the context, or exactly "unanswerable". The
gold target is the first gold answer, or "unanswerable". Graded by the `qa` judge
(judges/qa.py: SQuAD-normalised exact match / token F1 >= 0.5 / short containing
answer; abstention detection for unanswerable questions).
"""

from __future__ import annotations

import random
from collections import Counter

from ..errors import S3FTError
from ..judges.qa import ABSTAIN_PHRASE
from ._code import SplitArgs
from . import Example, Task, register_task
from .hub import load_rows

FIELDS = ("id", "title", "context", "question", "answers")


def split_titles(rows: list[dict], test_fraction: float, seed: str) -> set[str]:
    """Titles for the test side: seeded shuffle of the sorted titles, taken until their
    rows reach `test_fraction` of all rows (at least one title; never all of them)."""
    counts = Counter(r["title"] for r in rows)
    titles = sorted(counts)
    if len(titles) < 2:
        raise S3FTError(f"cannot split by article: the data has {len(titles)} title(s)")
    random.Random(seed).shuffle(titles)
    test, n = set(), 0
    for t in titles[:-1]:
        if n >= test_fraction * len(rows):
            break
        test.add(t)
        n += counts[t]
    return test


@register_task("squad_v2", args=SplitArgs)
class SquadV2(Task):
    answer_type = "short"
    judge = "qa"
    instruction = (f'Answer with a short phrase from the context. If the context does not contain the answer, '
                   f'reply exactly "{ABSTAIN_PHRASE}".')
    paraphrase_system = ("Below are a question about a passage and its reference answer. "
                         "Refer to the reference answer and write a response.")
    # Gold answers are a few words or "unanswerable": the generic length rules would reject
    # every correct paraphrase of them.
    paraphrase_limits = (0.0, 0)

    def load_split(self, split: str) -> list[Example]:
        if split not in ("train", "test"):
            raise S3FTError(f"task '{self.name}': unknown split '{split}' (train, test)")
        rows = load_rows(self.cfg.data_dir, "squad_v2", "validation", hub=("rajpurkar/squad_v2", None),
                         fields=FIELDS)
        test_titles = split_titles(rows, self.opts.test_fraction, f"squad_v2-{self.opts.split_seed}")
        return [self._example(r) for r in rows if (r["title"] in test_titles) == (split == "test")]

    @staticmethod
    def _example(r: dict) -> Example:
        answers = [a for a in r["answers"]["text"] if a.strip()]
        question = f"Context:\n{r['context'].strip()}\n\nQuestion: {r['question'].strip()}"
        return Example(id=f"squad-{r['id']}", question=question, gold=answers[0] if answers else ABSTAIN_PHRASE,
                       meta={"answers": list(dict.fromkeys(answers)), "answerable": bool(answers),
                             "title": r["title"]})

    def paraphrase_messages(self, ex: Example) -> list[dict]:
        # The instruction is part of the question here: it tells the model the answer format.
        return [{"role": "system", "content": self.paraphrase_system},
                {"role": "user", "content": f"Question:\n{ex.question}\n{self.instruction}\n\n"
                                            f"Reference answer:\n{ex.gold}"}]

    def describe(self):
        return {**super().describe(), "args": self.args}
