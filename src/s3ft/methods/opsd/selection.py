"""What `opsd` records at the selection stage: per row, the student's and the teacher's prompts.

No target is chosen beforehand (the student samples its own during training), so this needs no
base-model answers, paraphrases or verdicts: only the question and the gold answer.
"""

from __future__ import annotations

import re

from ...errors import S3FTError
from .config import OPSDConfig

SOURCE = "on-policy"
"""`source` of every opsd row: its targets are the student's own samples, drawn while training."""


def teacher_messages(messages: list[dict], demonstration: str, template: str) -> list[dict]:
    """The student's conversation with its last user turn put into `template` beside the demonstration."""
    *head, last = messages
    if last.get("role") != "user":
        raise S3FTError(f"opsd: the prompt must end with a user turn, got {last.get('role')!r}")
    values = {"question": last["content"], "demonstration": demonstration}
    text = re.sub(r"\{(question|demonstration)\}", lambda m: values[m[1]], template)  # one pass: braces in text stay
    return [*head, {"role": "user", "content": text}]


def select_rows(task, train: list, cfg: OPSDConfig) -> tuple[list[dict], dict]:
    """train_opsd.jsonl rows and their stats: the student's messages, the teacher's, and the gold answer."""
    template = cfg.teacher_template or task.opsd_teacher_template
    rows = []
    for e in train:
        student = task.messages(e)
        rows.append({"id": e.id, "messages": student, "teacher_messages": teacher_messages(student, e.gold, template),
                     "gold": e.gold, "source": SOURCE, "reason": "sampled by the student, scored by the teacher"})
    stats = {"method": "opsd", "rows": len(rows), "target_mix": {SOURCE: len(rows)},
             "target_share": {SOURCE: 1.0} if rows else {}, "gold_reasons": {},
             "generations_per_row": cfg.generations_per_row, "teacher_template": template}
    return rows, stats
