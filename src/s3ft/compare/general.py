"""General-benchmark accuracy deltas vs base, from lm-eval per-item scores (see lm_eval_bridge)."""

from __future__ import annotations

from typing import Any

from ..errors import S3FTError
from ..stats import paired_bootstrap_diff, stratified_paired_bootstrap
from ..forgetting.records import Paired


def _items(task_result: dict) -> dict:
    return {str(i["doc_id"]): float(i["score"]) for i in task_result.get("items", [])}


def general_block(base: dict, res: dict, tasks: list[str], iters: int, seed: int) -> dict:
    """Per-benchmark value/delta/CI of `res` vs `base` plus the average drop (points)."""
    out: dict[str, Any] = {"benchmarks": {}}
    pairs = []
    for task in tasks:
        b, m = base["tasks"].get(task, {}), res["tasks"].get(task, {})
        row = {"metric": m.get("metric") or b.get("metric"), "value": m.get("value"), "stderr": m.get("stderr"),
               "n": m.get("n", 0), "skipped": m.get("skipped") or b.get("skipped"),
               "delta": None, "delta_ci95": None, "n_paired": 0}
        if row["skipped"] is None and m.get("value") is not None and b.get("value") is not None:
            bi, mi = _items(b), _items(m)
            common = [k for k in mi if k in bi]
            if len(common) != len(mi) or len(common) != len(bi):
                raise S3FTError(f"{task}: base and {res.get('adapter')} were scored on different items "
                                f"({len(bi)} vs {len(mi)}, {len(common)} shared); settings differ?")
            a_scores, b_scores = [mi[k] for k in common], [bi[k] for k in common]
            _, lo, hi = paired_bootstrap_diff(a_scores, b_scores, iters, seed)
            row.update(delta=m["value"] - b["value"], delta_ci95=[lo, hi], n_paired=len(common))
            pairs.append((b_scores, a_scores))  # base - method: a positive number is a drop
        out["benchmarks"][task] = row
    if pairs:
        drop, lo, hi = stratified_paired_bootstrap(pairs, iters, seed)
        used = [t for t, r in out["benchmarks"].items() if r["delta"] is not None]
        exact = -100 * sum(out["benchmarks"][t]["delta"] for t in used) / len(used)
        out.update(avg_drop_pts=exact, avg_drop_ci95_pts=[100 * lo, 100 * hi], avg_drop_over=used)
        assert abs(exact - 100 * drop) < 1e-6, (exact, drop)
    else:
        out.update(avg_drop_pts=None, avg_drop_ci95_pts=None, avg_drop_over=[])
    return out


def base_block(base: dict, tasks: list[str]) -> dict:
    """The base model's own values (no deltas: it is the reference)."""
    rows = {}
    for task in tasks:
        b = base["tasks"].get(task, {})
        rows[task] = {"metric": b.get("metric"), "value": b.get("value"), "stderr": b.get("stderr"),
                      "n": b.get("n", 0), "skipped": b.get("skipped"), "delta": None, "delta_ci95": None,
                      "n_paired": 0}
    return {"benchmarks": rows, "avg_drop_pts": None, "avg_drop_ci95_pts": None, "avg_drop_over": []}


def _cache_keys(res: dict) -> dict:
    return {t: r.get("cache_key") for t, r in res["tasks"].items()}


def metric_items(task_result: dict, key: str) -> Paired:
    """Per-item (correct, count) of one lm-eval metric: instruction-level metrics count each instruction."""
    num, den = [], []
    for item in task_result.get("items", []):
        v = item["scores"][key]
        num.append(float(sum(v)) if isinstance(v, list) else float(v))
        den.append(float(len(v)) if isinstance(v, list) else 1.0)
    return num, den


def metric_pairs(base: dict, res: dict, task: str, keys: tuple[str, ...]) -> dict[str, Paired]:
    """{"<task>/<metric>": per-item change vs base} for the metrics a benchmark reports with CIs (ifeval)."""
    b, t = base["tasks"].get(task, {}), res["tasks"].get(task, {})
    if not b.get("items") or not t.get("items"):
        return {}
    by_doc = {str(i["doc_id"]): i for i in b["items"]}
    out = {}
    for key in keys:
        num, den = [], []
        for item in t["items"]:
            ref = by_doc.get(str(item["doc_id"]))
            if ref is None:
                raise S3FTError(f"{task}: item {item['doc_id']} was not scored for the base model; settings differ?")
            (tn,), (td,) = metric_items({"items": [item]}, key)
            (bn,), (bd,) = metric_items({"items": [ref]}, key)
            if td != bd:
                raise S3FTError(f"{task} item {item['doc_id']}: {key} counts {td} vs {bd} instructions")
            num.append(tn - bn)
            den.append(td)
        out[f"{task}/{key.split(',')[0]}"] = (num, den)
    return out
