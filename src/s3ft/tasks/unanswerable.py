"""Spotting unanswerable queries in document-grounded QA (the SSR paper's setting):
SQuAD 2.0 with the `squad_v2` task's data, split by article, prompt, gold and `qa` judge
(see tasks/squad_v2.py), plus abstention metrics in every evaluation
(eval/<model>.metrics.json, key "abstention"):

  accuracy                 share of test rows judged correct (same as the run's accuracy)
  abstention_precision     of the rows where the model abstained, the share that were unanswerable
  abstention_recall        of the unanswerable rows, the share where the model abstained
  abstention_f1            harmonic mean of the two (0 when both are 0)
  answer_accuracy          of the answerable rows, the share answered correctly
  abstain_rate, n, n_answerable, n_unanswerable, n_abstained

"Abstained" is `judges.qa.abstains(response)`, the detector the judge uses.
"""

from __future__ import annotations

from ..judges.qa import abstains
from . import register_task
from .squad_v2 import SquadV2


def _ratio(a: int, b: int) -> float | None:
    return a / b if b else None


def abstention_metrics(examples: list[dict], verdict_rows: list[dict], responses: list[str]) -> dict:
    """Metrics over aligned lists: examples (dicts with meta.answerable), their verdict rows
    ({correct, ...}) and the raw responses. Ratios with an empty denominator are None."""
    if not (len(examples) == len(verdict_rows) == len(responses)):
        raise ValueError("abstention_metrics: examples, verdicts and responses must have the same length")
    n = len(examples)
    answerable = [bool(e.get("meta", {}).get("answerable")) for e in examples]
    abstained = [abstains(r) for r in responses]
    correct = [bool(v.get("correct")) for v in verdict_rows]
    tp = sum(a and not ans for a, ans in zip(abstained, answerable))
    n_abst, n_unans = sum(abstained), answerable.count(False)
    precision, recall = _ratio(tp, n_abst), _ratio(tp, n_unans)
    if precision is None or recall is None:
        f1 = None
    else:
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"accuracy": _ratio(sum(correct), n),
            "abstention_precision": precision, "abstention_recall": recall, "abstention_f1": f1,
            "answer_accuracy": _ratio(sum(c for c, ans in zip(correct, answerable) if ans), n - n_unans),
            "abstain_rate": _ratio(n_abst, n),
            "n": n, "n_answerable": n - n_unans, "n_unanswerable": n_unans, "n_abstained": n_abst}


@register_task("unanswerable")
class Unanswerable(SquadV2):
    def extra_metrics(self, examples: list[dict], generations: list[dict], verdicts: dict) -> dict:
        text = {g["id"]: g["text"] for g in generations}
        return {"abstention": abstention_metrics(examples, [verdicts[e["id"]] for e in examples],
                                                 [text[e["id"]] for e in examples])}
