"""Math answer judge: extract the final answer, compare numerically.

Extraction order: `#### N`, "The answer is N", `\\boxed{...}`, then the last number in
the text. Numbers compare after removing `$`, commas and trailing dots; anything that is
not a plain number (fractions, LaTeX) goes to math-verify.
"""

from __future__ import annotations

import re
from fractions import Fraction

from . import Judge, Verdict, register_judge

_NUM = r"-?\$?\s?\d[\d,]*(?:\.\d+)?"
_HASH = re.compile(r"####\s*(" + _NUM + ")")
_ANSWER_IS = re.compile(r"answer is\s*:?\s*(?:\\\(|\$)?\s*(\\boxed\{|" + _NUM + ")", re.I)
_LAST_NUM = re.compile(_NUM)


def _boxed(text: str, start: int | None = None) -> str | None:
    i = text.rfind("\\boxed{") if start is None else start
    if i < 0:
        return None
    i += len("\\boxed{")
    depth, j = 1, i
    while j < len(text) and depth:
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        j += 1
    return text[i:j - 1].strip() if depth == 0 else None


def extract_answer(text: str) -> tuple[str | None, str]:
    """(answer, how) with how in {'####', 'answer is', 'boxed', 'last number', 'none'}."""
    if m := list(_HASH.finditer(text)):
        return m[-1].group(1), "####"
    if m := list(_ANSWER_IS.finditer(text)):
        last = m[-1]
        if last.group(1).startswith("\\boxed"):
            return _boxed(text, last.start(1)), "answer is"
        return last.group(1), "answer is"
    if (b := _boxed(text)) is not None:
        return b, "boxed"
    if m := list(_LAST_NUM.finditer(text)):
        return m[-1].group(0).strip(), "last number"
    return None, "none"


def to_number(s: str) -> Fraction | None:
    s = s.strip().replace("$", "").replace(",", "").replace(" ", "").rstrip(".")
    if s.startswith("\\text{") or not s:
        return None
    try:
        return Fraction(s)
    except (ValueError, ZeroDivisionError):
        return None


def same_answer(gold: str, pred: str) -> bool:
    g, p = to_number(gold), to_number(pred)
    if g is not None and p is not None:
        return g == p
    try:  # LaTeX / symbolic forms
        from math_verify import parse, verify
        return bool(verify(parse(f"${gold}$"), parse(f"${pred}$")))
    except Exception:
        return False  # fail closed


@register_judge("math")
class MathJudge(Judge):
    def judge(self, examples: list[dict], responses: list[str]) -> list[Verdict]:
        out = []
        for ex, resp in zip(examples, responses):
            gold = ex.get("meta", {}).get("answer")
            if gold is None:
                gold, _ = extract_answer(ex["gold"])
            if gold is None:
                out.append(Verdict(False, "gold answer has no parseable final answer"))
                continue
            pred, how = extract_answer(resp)
            if pred is None:
                out.append(Verdict(False, "no final answer found"))
            elif same_answer(gold, pred):
                out.append(Verdict(True, f"match ({how})", pred))
            else:
                out.append(Verdict(False, f"wrong answer ({how}): {pred} != {gold}", pred))
        return out


@register_judge("exact")
class ExactMatchJudge(Judge):
    """Case- and whitespace-insensitive exact match of the whole response with the gold text."""

    def judge(self, examples: list[dict], responses: list[str]) -> list[Verdict]:
        norm = lambda s: " ".join(s.lower().split()).rstrip(".")
        return [Verdict(norm(r) == norm(e.get("meta", {}).get("answer", e["gold"])),
                        "exact match" if norm(r) == norm(e.get("meta", {}).get("answer", e["gold"])) else "no exact match",
                        r.strip()) for e, r in zip(examples, responses)]
