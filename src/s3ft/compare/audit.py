"""Judge audit: a second judge re-judges a seeded sample of the selection decisions."""

from __future__ import annotations

import random

from ..artifacts import read_jsonl
from ..judges import get_judge, judge_generations
from ..stats import wilson_ci
from ..strategies import GOLD, source_group
from ..tasks import Example, get_task
from .runs import RunDir

SECOND_OPINIONS = {"exact": "math"}
"""For a task's judge, a registered judge that grades the same responses another way and accepts a worked
answer (`exact` compares whole responses, `math` their final answers). The default audit uses it."""


def audit_judge_for(run: RunDir, requested: str) -> tuple[str | None, str | None]:
    """(second judge, None), or (None, why there is no audit) for `requested` = "auto"."""
    if requested != "auto":
        return requested, None
    primary = get_task(run.config.data).judge
    second = SECOND_OPINIONS.get(primary)
    if second is not None:
        return second, None
    return None, (f"No judge audit: no registered judge grades what the task's judge `{primary}` grades in "
                  f"another way. Pass `--audit-judge llm` for an LLM "
                  f"judge's second opinion, or `--audit-judge {primary}` to re-judge with the task's own judge "
                  f"(a reproducibility check).")


def judge_audit(run: RunDir, judge_name: str, size: int = 50, seed: int = 0) -> dict:
    """Re-judge a seeded sample of the selection decisions (own answers and paraphrases) with a
    second judge; agreement rate, confusion counts and a few disagreements.

    Rows the primary judge never saw are left out: truncated generations (always rejected,
    whatever the judge) and paraphrases rejected by the pre-filter (too short, mentions the
    reference...). Both counts are reported.
    """
    task = get_task(run.config.data)
    primary = task.judge
    second = get_judge(judge_name)
    examples = {r["id"]: Example.from_dict(r).to_dict() for r in read_jsonl(run.layout.data("train"))}
    selected = {}
    for m in run.methods:
        p = run.layout.train(m)
        if m != "base" and p.is_file():
            for r in read_jsonl(p):
                if r["source"] != GOLD:
                    selected.setdefault((r["id"], source_group(r["source"])), []).append(m)
    population, truncated, filtered = [], 0, 0
    layout = run.layout
    for kind, gens, prefill in (("answer", layout.answers, ""), ("paraphrase", layout.paraphrases,
                                                                   task.paraphrase_prefill)):
        if not layout.verdicts(gens).is_file():
            continue
        verdicts = {v["id"]: v for v in read_jsonl(layout.verdicts(gens))}
        for g in read_jsonl(gens):
            v = verdicts.get(g["id"])
            if v is None:
                continue
            if g.get("finish_reason") == "length":
                truncated += 1
                continue
            if str(v.get("reason", "")).startswith("filtered:"):
                filtered += 1
                continue
            population.append({"kind": kind, "id": g["id"], "text": prefill + g["text"],
                               "finish_reason": g.get("finish_reason"), "primary": bool(v["correct"]),
                               "primary_reason": v.get("reason")})
    population.sort(key=lambda r: (r["kind"], r["id"]))
    sample = random.Random(f"s3ft-judge-audit:{seed}").sample(population, min(size, len(population)))
    verdicts = judge_generations(second, [examples[r["id"]] for r in sample], sample) if sample else []
    counts = {"both_accept": 0, "primary_only": 0, "second_only": 0, "both_reject": 0}
    disagreements = []
    for r, v in zip(sample, verdicts):
        key = ("both_accept" if v.correct else "primary_only") if r["primary"] else \
              ("second_only" if v.correct else "both_reject")
        counts[key] += 1
        if r["primary"] != v.correct and len(disagreements) < 5:
            disagreements.append({"kind": r["kind"], "id": r["id"], "primary": r["primary"],
                                  "primary_reason": r["primary_reason"], "second": v.correct,
                                  "second_reason": v.reason, "text_tail": r["text"][-160:]})
    n = len(sample)
    agree = counts["both_accept"] + counts["both_reject"]
    sel_in_sample = [r for r in sample if (r["id"], "own answer" if r["kind"] == "answer" else "paraphrase")
                     in selected]
    sel_kept = sum(v.correct for r, v in zip(sample, verdicts)
                   if (r["id"], "own answer" if r["kind"] == "answer" else "paraphrase") in selected)
    return {"primary_judge": primary, "second_judge": judge_name, "seed": seed, "requested": size,
            "population": len(population), "left_out_truncated": truncated, "left_out_prefiltered": filtered,
            "n": n, "counts": counts, "agreement": agree / n if n else None,
            "agreement_ci95": list(wilson_ci(agree, n)) if n else None,
            "selected_in_sample": len(sel_in_sample), "selected_also_accepted": sel_kept,
            "disagreements": disagreements}


