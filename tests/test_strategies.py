import pytest

from s3ft.strategies import STRATEGIES, needs_paraphrase, paraphrase_problem

GOLD = "Step 1: 2 + 3 = 5.\nStep 2: 5 x 2 = 10.\n#### 10"


def rec(answer_ok: bool, para_ok: bool | None):
    return {"id": "r", "gold": GOLD,
            "answer": {"text": "own answer. The answer is 10.", "correct": answer_ok, "reason": "r-answer"},
            "paraphrase": None if para_ok is None else
            {"text": "paraphrased. The answer is 10.", "correct": para_ok, "reason": "r-para"}}


@pytest.mark.parametrize("method,answer_ok,para_ok,source,target", [
    ("sft", True, True, "gold", GOLD),
    ("ssr", True, None, "self", "own answer. The answer is 10."),
    ("ssr", False, True, "gold", GOLD),            # SSR ignores paraphrases
    ("s3ft", True, True, "self", "own answer. The answer is 10."),
    ("s3ft", False, True, "paraphrase", "paraphrased. The answer is 10."),
    ("s3ft", False, False, "gold", GOLD),
    ("s3ft", False, None, "gold", GOLD),
    ("sdft", True, True, "rewrite", "paraphrased. The answer is 10."),  # SDFT rewrites every row
    ("sdft", True, False, "gold", GOLD),
])
def test_strategy_tiers_and_provenance(method, answer_ok, para_ok, source, target):
    got_target, got_source, reason = STRATEGIES[method](rec(answer_ok, para_ok))
    assert (got_target, got_source) == (target, source)
    assert reason  # every choice says why


def test_gold_fallback_reason_names_the_rejection():
    _, _, reason = STRATEGIES["s3ft"](rec(False, False))
    assert reason == "paraphrase rejected: r-para"


def test_needs_paraphrase():
    assert needs_paraphrase(["s3ft"], answer_correct=False)
    assert not needs_paraphrase(["s3ft", "sft"], answer_correct=True)
    assert needs_paraphrase(["sdft"], answer_correct=True)
    assert not needs_paraphrase(["sft", "ssr"], answer_correct=False)


PHRASES = ("reference answer", "the given answer")


PREFILL = "Great! Let's think step by step."


def check(text, stripped=None):
    return paraphrase_problem(text, GOLD, stripped if stripped is not None else text, PHRASES, 0.3, 4, PREFILL)


def test_paraphrase_filter_rejects_bare_answers_and_reference_talk():
    assert "too short" in check("The answer is 10.")
    assert "mentions the reference" in check("As the reference answer says, 2 + 3 = 5 and 5 x 2 = 10. The answer is 10.")
    long_but_empty = PREFILL + " The answer is 10." * 3  # the prefill alone is no reasoning
    assert "no reasoning" in check(long_but_empty, stripped=PREFILL)


def test_paraphrase_filter_accepts_real_reasoning():
    ok = "First add 2 and 3 to get 5. Then double it: 5 x 2 = 10. The answer is 10."
    assert check(ok, stripped="First add 2 and 3 to get 5. Then double it: 5 x 2 = 10.") is None
