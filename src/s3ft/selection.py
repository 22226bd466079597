"""Selection on records of your own: `s3ft.select(records, method="s3ft")` chooses each record's training
target with a registered strategy, as the pipeline's select stage does. docs/python-api.md shows it.

    rows = s3ft.select([{"gold": "4", "answer": {"text": "It is 4.", "correct": True}}], method="ssr")
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from .errors import S3FTError
from .methods import get_method
from .strategies import Judged, Strategy, TrainingRecord, get_strategy


def judged(part: Any, where: str) -> Judged | None:
    """A judged generation from {"text", "correct", "reason"?} (or a `Judged`); None stays None."""
    if part is None or isinstance(part, Judged):
        return part
    if not isinstance(part, Mapping) or "text" not in part or "correct" not in part:
        raise S3FTError(f"{where}: expected a mapping with 'text' and 'correct', got {part!r}")
    correct = bool(part["correct"])
    return Judged(str(part["text"]), correct, str(part.get("reason") or ("accepted" if correct else "rejected")))


def record_of(row: TrainingRecord | Mapping, index: int) -> TrainingRecord:
    """A training record from its typed form or a mapping {"id"?, "gold", "answer", "paraphrase"?, ...}; other
    keys (a question, metadata) are ignored. An error names the row and the key."""
    if isinstance(row, TrainingRecord):
        return row
    where = f"records[{index}]"
    if not isinstance(row, Mapping):
        raise S3FTError(f"{where}: expected a mapping or a TrainingRecord, got {type(row).__name__}")
    for key in ("gold", "answer"):
        if row.get(key) is None:
            raise S3FTError(f"{where}: no '{key}' (a record needs 'gold' and a judged 'answer')")
    return TrainingRecord(str(row.get("id", index)), str(row["gold"]), judged(row["answer"], f"{where}.answer"),
                          judged(row.get("paraphrase"), f"{where}.paraphrase"))


def strategy_for(method: str) -> Strategy:
    if get_method(method) is not None:
        raise S3FTError(f"method '{method}': chooses no targets (it learns from its own samples while training); "
                        "select takes a target-selection strategy")
    return get_strategy(method)


def select(records: Iterable[TrainingRecord | Mapping] | Any, method: str = "s3ft") -> list[dict] | Any:
    """Choose each record's training target with a registered strategy (`sft`, `ssr`, `s3ft`, `sdft`, or one
    you registered), as the pipeline's select stage does.

    Args:
        records: `TrainingRecord`s, or mappings {"id", "gold", "answer": {"text", "correct", "reason"},
            "paraphrase": {...} or None}, or a `datasets.Dataset` with those columns. `answer` is the model's own
            answer with the judge's verdict; `paraphrase` its restatement of the gold answer, where there is one.
        method: the strategy's name.

    Returns:
        For a list: one dict per record, {"id", "target", "source", "reason"}, as `train_<method>.jsonl` keeps
        them; for a `datasets.Dataset`: the dataset with `target`, `source` and `reason` columns added.
    """
    strategy = strategy_for(method)

    def choose(row: Any, index: int) -> dict:
        rec = record_of(row, index)
        target = strategy(rec)
        return {"id": rec.id, "target": target.text, "source": target.source, "reason": str(target.reason)}

    if hasattr(records, "map") and hasattr(records, "column_names"):  # a datasets.Dataset
        return records.map(lambda row, i: {k: v for k, v in choose(row, i).items() if k != "id"}, with_indices=True)
    return [choose(row, i) for i, row in enumerate(records)]
