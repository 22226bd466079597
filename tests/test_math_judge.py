import pytest

from s3ft.judges import Verdict, get_judge, judge_generations
from s3ft.judges.math import extract_answer, same_answer


@pytest.mark.parametrize("text,expected,how", [
    ("48 / 2 = 24\n#### 24", "24", "####"),
    ("#### 1,000", "1,000", "####"),
    ("so 5 + 5 = 10. The answer is 10.", "10", "answer is"),
    ("The final answer is: $18.", "18", "answer is"),
    ("The answer is \\boxed{7}", "7", "answer is"),
    ("we get \\boxed{\\frac{1}{2}} at the end", "\\frac{1}{2}", "boxed"),
    ("I had 3 and then 5 apples", "5", "last number"),
    ("The answer is -3.50 dollars", "-3.50", "answer is"),
    ("first #### 3 then #### 4", "4", "####"),
    ("no numbers at all", None, "none"),
])
def test_extract_answer(text, expected, how):
    assert extract_answer(text) == (expected, how)


@pytest.mark.parametrize("gold,pred,same", [
    ("1000", "1,000", True), ("18", "18.00", True), ("18", "$18", True), ("0.5", "\\frac{1}{2}", True),
    ("18", "19", False), ("-3", "3", False), ("7", "seven", False),
])
def test_same_answer(gold, pred, same):
    assert same_answer(gold, pred) is same


def test_math_judge_fails_closed_and_records_reason():
    judge = get_judge("math")
    ex = {"id": "a", "gold": "2 + 2 = 4\n#### 4", "meta": {"answer": "4"}}
    right, wrong, empty = judge.judge([ex] * 3, ["The answer is 4.", "The answer is 5.", "I do not know."])
    assert right == Verdict(True, "match (answer is)", "4")
    assert not wrong.correct and "5 != 4" in wrong.reason
    assert not empty.correct and empty.reason == "no final answer found"


def test_math_judge_uses_gold_text_when_meta_lacks_answer():
    v = get_judge("math").judge([{"id": "a", "gold": "3 x 3 = 9\n#### 9"}], ["#### 9"])[0]
    assert v.correct


def test_truncated_generation_is_never_accepted():
    ex = {"id": "a", "gold": "#### 4", "meta": {"answer": "4"}}
    gens = [{"id": "a", "text": "The answer is 4", "finish_reason": "length"},
            {"id": "a", "text": "The answer is 4", "finish_reason": "stop"}]
    cut, whole = judge_generations(get_judge("math"), [ex, ex], gens)
    assert not cut.correct and cut.reason.startswith("truncated")
    assert whole.correct


def test_unknown_judge_is_a_clear_error():
    from s3ft.errors import S3FTError
    with pytest.raises(S3FTError, match="unknown judge 'nope'"):
        get_judge("nope")
