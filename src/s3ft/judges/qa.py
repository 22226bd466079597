"""Extractive-QA judge with unanswerable questions (SQuAD 2.0 style).

Each example's `meta` holds `answers` (list of gold answer strings; empty when the
question cannot be answered from the context) and `answerable` (bool).

Answerable question: the response is correct when, against any gold answer, after SQuAD's
normalisation (lower case, no punctuation, no articles a/an/the, single spaces)
  - it matches exactly, or
  - its token F1 is at least `f1_threshold` (default 0.5, the usual "partial credit"
    cut-off: e.g. "10th century" vs gold "the 10th and 11th centuries" is F1 0.67), or
  - it contains the gold answer as a whole-token phrase, is short (at most
    `contain_max_tokens` tokens, default 12) and has no negation (not, no, never, n't,
    instead, ...), so that "Normandy is in France." counts for "France" but neither a long
    answer listing many candidates nor "in Cork, not in Dublin" for "Dublin" does.
The score is taken over a few readings of the response: all of it, its first line, and
what follows "answer is" / "answer to the question is" / "Answer:". A response that
abstains (see `abstains`) is wrong on an answerable question unless it is exactly a gold
answer.

Unanswerable question: correct only if the response abstains, i.e. says "unanswerable"
(the phrase the prompts ask for) or a common equivalent ("cannot be answered", "not
mentioned in the context", "no answer", "I don't know", ...). Any other response is
wrong: it answered a question the context does not answer.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from dataclasses import dataclass

from ..errors import S3FTError
from . import Judge, Verdict, register_judge

ABSTAIN_PHRASE = "unanswerable"

_ABSTAIN = re.compile("|".join([
    r"\bunanswerable\b",
    r"\bnot answerable\b",
    r"\b(?:cannot|can ?not|can't|could not|couldn't|is not possible to|isn't possible to) (?:be )?"
    r"(?:answered|answer|determined|determine|found|find|inferred|infer|known|know|tell|say)\b",
    r"\bno answer\b",
    r"\b(?:is|are|was|were|isn't|aren't|wasn't|weren't)? ?not (?:mentioned|stated|specified|provided|given|"
    r"included|discussed|addressed|covered|explained|indicated)\b",
    r"\b(?:does|do|did) not (?:mention|say|state|specify|provide|contain|include|indicate|give|discuss|tell)\b",
    r"\b(?:doesn't|don't|didn't) (?:mention|say|state|specify|provide|contain|include|indicate|give|discuss|tell)\b",
    r"\bno (?:information|mention|indication)\b",
    r"\b(?:not enough|insufficient) (?:information|context)\b",
    r"\bi (?:do not|don't) know\b",
]))
_ANSWER_LEAD = re.compile(r"(?:answer(?: to (?:the|this|your) question)? is|answer:)\s*:?\s*(.+)", re.I | re.S)
_NEGATION = re.compile(r"\b(?:not|no|never|neither|nor|none|nothing|instead|rather)\b|n't\b", re.I)


def normalize(s: str) -> str:
    """SQuAD's official normalisation: lower, drop punctuation, drop a/an/the, squeeze spaces."""
    s = s.lower()
    s = "".join(ch for ch in s if ch not in set(string.punctuation))
    s = re.sub(r"\b(a|an|the)\b", " ", s)
    return " ".join(s.split())


def f1_score(pred: str, gold: str) -> float:
    p, g = normalize(pred).split(), normalize(gold).split()
    if not p or not g:
        return float(p == g)
    common = sum((Counter(p) & Counter(g)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(p), common / len(g)
    return 2 * precision * recall / (precision + recall)


def abstains(response: str) -> bool:
    """Does the response decline to answer (the question cannot be answered from the context)?"""
    text = response.lower().replace("\u2019", "'")
    return bool(_ABSTAIN.search(text))


def readings(response: str) -> list[str]:
    """Candidate answers in the response: all of it, its first line, the part after 'answer is'."""
    text = response.strip()
    out = [text]
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    if first and first != text:
        out.append(first)
    if m := _ANSWER_LEAD.search(text):
        lead = m.group(1).strip()
        out.append(lead)
        lead_line = lead.splitlines()[0].strip() if lead else ""
        if lead_line and lead_line != lead:
            out.append(lead_line)
    return [r for r in out if r]


def _contains(haystack: str, needle: str) -> bool:
    h, n = normalize(haystack).split(), normalize(needle).split()
    return bool(n) and any(h[i:i + len(n)] == n for i in range(len(h) - len(n) + 1))


@dataclass
class QAJudgeArgs:
    """Options of the `qa` judge (`judge.args`)."""
    f1_threshold: float = 0.5
    """Token F1 against a gold answer at or above which an answer is correct (partial credit)."""
    contain_max_tokens: int = 12
    """Longest answer, in tokens, that is correct for containing a gold answer as a phrase."""

    def check(self, where: str) -> None:
        if not 0 < self.f1_threshold <= 1:
            raise S3FTError(f"{where}.f1_threshold: must be in (0, 1], got {self.f1_threshold}")
        if self.contain_max_tokens < 0:
            raise S3FTError(f"{where}.contain_max_tokens: must be >= 0, got {self.contain_max_tokens}")


@register_judge("qa", args=QAJudgeArgs)
class QAJudge(Judge):
    def __init__(self, **args):
        a = QAJudgeArgs(**args)
        self.f1_threshold, self.contain_max_tokens = a.f1_threshold, a.contain_max_tokens

    def grade(self, ex: dict, response: str) -> Verdict:
        meta = ex.get("meta", {})
        answers = [a for a in meta.get("answers", []) if a.strip()]
        answerable = meta.get("answerable", bool(answers))
        declined = abstains(response)
        if not answerable:
            if declined:
                return Verdict(True, "abstained on an unanswerable question", ABSTAIN_PHRASE)
            return Verdict(False, "answered an unanswerable question", response.strip()[:200])
        if not answers:
            return Verdict(False, "gold answer missing for an answerable question")
        cands = readings(response)
        if not cands:
            return Verdict(False, "empty response")
        for c in cands:
            for a in answers:
                if normalize(c) == normalize(a):
                    return Verdict(True, "exact match", c)
        if declined:
            return Verdict(False, "abstained on an answerable question", ABSTAIN_PHRASE)
        best, best_c, best_a = max(((f1_score(c, a), c, a) for c in cands for a in answers), key=lambda t: t[0])
        if best >= self.f1_threshold:
            return Verdict(True, f"f1 {best:.2f} >= {self.f1_threshold}", best_c)
        for c in cands:  # a negation can turn a mention into a wrong answer ("in Cork, not in Dublin")
            if len(normalize(c).split()) <= self.contain_max_tokens and not _NEGATION.search(c):
                for a in answers:
                    if _contains(c, a):
                        return Verdict(True, f"short answer contains gold {a!r}", c)
        return Verdict(False, f"wrong answer: f1 {best:.2f} < {self.f1_threshold} (gold {best_a!r})",
                       best_c[:200])

    def judge(self, examples: list[dict], responses: list[str]) -> list[Verdict]:
        return [self.grade(ex, r) for ex, r in zip(examples, responses)]
