"""Paired per-item likelihood deltas on multiple-choice benchmarks.

Accuracy on a few hundred items moves in steps of 1/n and its paired CI is several points wide;
the model's log-probabilities of the choices move continuously, so the same items resolve much
smaller changes. Per item, from the per-choice log-likelihoods lm-eval already computed for the
accuracy (no second pass):

* ``logp_correct``: log p(correct | the item's choices) = log-softmax of the choice
  log-likelihoods at the correct choice (for TruthfulQA MC2, the log of the probability mass on
  the true answers: lm-eval's MC2 score);
* ``margin``: log-likelihood of the correct choice minus that of the best wrong one (MC2: best
  true minus best false).

Both are reported as tuned - base, averaged over items: negative = the model moved away from the
right answers. Choice log-likelihoods are lm-eval's raw sums over the continuation tokens (not
its length-normalised ``acc_norm`` variant).
"""

from __future__ import annotations

import math

from ..errors import S3FTError
from .records import Paired

MEASURES = {
    "logp_correct": "change in log p(correct | choices), tuned - base (nats; < 0 = forgetting)",
    "margin": "change in the log-likelihood margin of the correct over the best wrong choice (nats; < 0 = forgetting)",
}


def _logsumexp(xs: list[float]) -> float:
    m = max(xs)
    return m + math.log(sum(math.exp(x - m) for x in xs))


def choice_stats(lls: list[float], gold: list[int]) -> tuple[float, float]:
    """(log p(correct | choices), margin) of one item from its per-choice log-likelihoods."""
    if not gold or len(gold) == len(lls) or any(not 0 <= g < len(lls) for g in gold):
        raise ValueError(f"gold {gold} does not split {len(lls)} choices into right and wrong")
    right = [lls[g] for g in gold]
    wrong = [x for i, x in enumerate(lls) if i not in set(gold)]
    return _logsumexp(right) - _logsumexp(lls), max(right) - max(wrong)


def paired_items(benchmark: str, base_items: list[dict], items: list[dict]) -> dict[str, Paired]:
    """{measure: (per-item tuned - base, 1s)} matched by lm-eval doc_id; {} if lm-eval gave no choice
    log-likelihoods (a generative benchmark)."""
    base = {str(i["doc_id"]): i for i in base_items if i.get("lls") is not None}
    tuned = {str(i["doc_id"]): i for i in items if i.get("lls") is not None}
    if not base and not tuned:
        return {}
    if base.keys() != tuned.keys():
        raise S3FTError(f"{benchmark}: base and tuned model were scored on different items "
                        f"({len(base)} vs {len(tuned)}); settings differ?")
    out: dict[str, Paired] = {m: ([], []) for m in MEASURES}
    for doc_id in sorted(base):
        b, t = base[doc_id], tuned[doc_id]
        if b["gold"] != t["gold"] or len(b["lls"]) != len(t["lls"]):
            raise S3FTError(f"{benchmark} item {doc_id}: base and tuned model saw different choices")
        (bl, bm), (tl, tm) = choice_stats(b["lls"], b["gold"]), choice_stats(t["lls"], t["gold"])
        for m, d in (("logp_correct", tl - bl), ("margin", tm - bm)):
            out[m][0].append(d)
            out[m][1].append(1.0)
    return out
