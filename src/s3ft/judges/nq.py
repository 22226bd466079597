"""Natural Questions (open) exact match: the standard NQ-open metric (Lee et al. 2019, DPR,
lm-eval's `nq_open` task), with SQuAD's normalisation (`qa.normalize`: lower case, no
punctuation, no articles a/an/the, single spaces). A response is correct when one of its
readings normalises to the same string as any gold answer in `meta.answers`.

The readings are the whole response, its first line, and what follows "answer is" /
"Answer:" (and that part's first line), so that "Paris" and "Answer: Paris." count while
"Paris, or maybe Lyon" does not. Nothing looser: no partial credit, no containment (the
LLM judge is the option that accepts answers worded differently; see tasks/nq_open.py).
"""

from __future__ import annotations

from . import Judge, Verdict, register_judge
from .qa import normalize, readings


@register_judge("nq_em")
class NQExactMatchJudge(Judge):
    def grade(self, ex: dict, response: str) -> Verdict:
        golds = {normalize(a): a for a in ex.get("meta", {}).get("answers", []) if normalize(a)}
        if not golds:
            return Verdict(False, "no gold answer")
        cands = readings(response)
        if not cands:
            return Verdict(False, "empty response")
        for c in cands:
            if normalize(c) in golds:
                return Verdict(True, f"exact match of {golds[normalize(c)]!r}", c)
        return Verdict(False, f"no exact match: gold {next(iter(golds.values()))!r}", cands[-1][:200])

    def judge(self, examples: list[dict], responses: list[str]) -> list[Verdict]:
        return [self.grade(ex, r) for ex, r in zip(examples, responses)]
