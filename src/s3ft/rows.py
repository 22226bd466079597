"""Typed rows and blocks that cross modules: what the run directory's JSONL rows and the summary hold.

They are `TypedDict`s, so the JSON written and read stays plain dicts (byte for byte what it was) while
readers get typed keys. A key marked `NotRequired` is written only where it applies.
"""

from __future__ import annotations

from typing import NotRequired, TypedDict


class GenerationRow(TypedDict):
    """One generation (answers.jsonl, paraphrases.jsonl, eval/<model>.jsonl, ...)."""

    id: str
    text: str
    finish_reason: str
    """`stop`, `length` (hit max_new_tokens) ..."""
    prompt_tokens: int
    completion_tokens: int
    sample: NotRequired[int]
    """The best-of-k sample that stands in for a rejected greedy answer (own answers only)."""


class VerdictRow(TypedDict):
    """A judge's verdict on one generation (<generations>_verdicts.jsonl)."""

    id: str
    correct: bool
    reason: str
    extracted: NotRequired[str | None]


class TrainRow(TypedDict):
    """One selected training row (train_<method>.jsonl). Methods with a trainer of their own may add
    their columns (opsd: `teacher_messages`, `gold`) and have no fixed `target`."""

    id: str
    messages: list[dict]
    target: NotRequired[str]
    source: str
    """Where the target came from: a label its strategy declares (`self`, `paraphrase`, `gold`, ...)."""
    reason: str


class SelectionStats(TypedDict):
    """A method's selection statistics (train_<method>.stats.json)."""

    method: str
    rows: int
    target_mix: dict[str, int]
    """Rows per source label."""
    target_share: dict[str, float]
    gold_reasons: dict[str, int]
    """Why rows fell back to gold, by reason kind."""
    self_from_samples: NotRequired[int]
    answer_formats: NotRequired[dict[str, int]]
    answer_formats_by_source: NotRequired[dict[str, dict[str, int]]]


class EvalResult(TypedDict):
    """One model's in-domain evaluation (eval/<model>.metrics.json), as the summary reads it."""

    accuracy: float
    ci95: list[float]
    n: int
    task_metrics: NotRequired[dict]


class CostBlock(TypedDict):
    total_wall_s: float
    stages: dict[str, dict]
    """Per stage: wall seconds, tokens, rows, peak memory, `reused` (see `pipeline.Run._cost`)."""


class Summary(TypedDict):
    """summary.json: the run's results, the table `s3ft run` prints and report.md's source."""

    task: str
    model: str
    contrasts: dict
    """Each method against SFT on the run's own items (see `s3ft.compare.run_contrasts`)."""
    in_domain: dict[str, float]
    in_domain_ci95: dict[str, list[float]]
    in_domain_n: dict[str, int]
    task_metrics: dict[str, dict]
    target_mix: dict[str, int]
    """The headline method's targets per display group."""
    target_mix_by_method: dict[str, dict[str, int]]
    gold_reasons_by_method: dict[str, dict[str, int]]
    answer_formats_by_method: dict[str, dict]
    forgetting: dict | None
    """The meter's summary (forgetting/summary.json), or None when it did not run."""
    cost: CostBlock
    estimate: dict | None
    config: dict
