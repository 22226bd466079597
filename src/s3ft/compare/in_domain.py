"""In-domain accuracy per method, from the run's own evaluation artifacts."""

from __future__ import annotations

import json

from ..artifacts import read_jsonl
from ..errors import S3FTError
from ..stats import paired_bootstrap_diff
from ..forgetting.records import Paired
from .runs import RunDir


def in_domain_scores(run: RunDir, method: str) -> tuple[dict, dict[str, float]]:
    """(metrics file contents, {test id: 1.0/0.0}) for one method; the two must agree."""
    mpath = run.layout.eval_metrics(method)
    metrics = json.loads(mpath.read_text(encoding="utf-8"))
    verdicts = {r["id"]: r for r in read_jsonl(run.layout.verdicts(run.layout.eval(method)))}
    test_ids = [r["id"] for r in read_jsonl(run.layout.data("test"))]
    absent = [i for i in test_ids if i not in verdicts]
    if absent:
        raise S3FTError(f"{run.path}/eval/{method}_verdicts.jsonl: no verdict for {len(absent)} test rows "
                        f"(e.g. {absent[0]}); finish the run first")
    per_id = {i: 1.0 if verdicts[i]["correct"] else 0.0 for i in test_ids}
    k = int(sum(per_id.values()))
    if k != metrics.get("correct") or len(per_id) != metrics.get("n"):
        raise S3FTError(f"{mpath}: says {metrics.get('correct')}/{metrics.get('n')} correct but the verdicts "
                        f"give {k}/{len(per_id)}; the metrics file is stale (re-run `s3ft evaluate`)")
    return metrics, per_id


def _paired(a: dict, b: dict, iters: int, seed: int) -> tuple[float, float, float, int]:
    common = [k for k in a if k in b]
    if not common:
        return (float("nan"), float("nan"), float("nan"), 0)
    d, lo, hi = paired_bootstrap_diff([a[k] for k in common], [b[k] for k in common], iters, seed)
    return d, lo, hi, len(common)




def in_domain_block(run: RunDir, method: str, base_ids: dict[str, float], iters: int,
                    seed: int) -> tuple[dict, Paired | None]:
    """The method's in-domain row for compare.json, and its per-id correctness change vs base."""
    metrics, ids = in_domain_scores(run, method)
    row = {"accuracy": metrics["accuracy"], "ci95": metrics["ci95"], "n": metrics["n"],
           "correct": metrics["correct"], "truncated": metrics.get("truncated"),
           "metrics_file": str(run.layout.eval_metrics(method))}
    if method == "base":
        return row, None
    d, lo, hi, n = _paired(ids, base_ids, iters, seed)
    row.update(delta=d, delta_ci95=[lo, hi], n_paired=n)
    common = [k for k in ids if k in base_ids]
    return row, ([ids[k] - base_ids[k] for k in common], [1.0] * len(common))
