"""Answer types: what an answer looks like, and so which prompts, paraphrase filters and judge fit.

- `number`: a worked solution ending in a final number (math); judged by `math` (the final
  number against the gold one). The model is asked to end with "The answer is N"; the
  paraphrase turn starts "Great! Let's think step by step." (SDFT's form).
- `short`: a short phrase (a name, a date, "12 inches"); judged by `qa` (SQuAD-normalised
  exact match, token F1 >= 0.5, or a short response containing the answer). Generation
  stops at the end of the first line; the paraphrase length rules are off (a restated
  phrase is as short as the gold one).
- `free`: free text (an explanation, an email, a support reply); judged by `llm`, the
  S3FT paper's LLM judge: a judge model reads the question, the reference answer and the
  response and ends with `VERDICT: CORRECT` or `VERDICT: INCORRECT` (rubric: same meaning
  as the reference; wording, length, explanation and formatting do not matter; see
  judges/llm.py). By default the judge model is the run's own model; set `judge.args`
  to use a stronger one.
- `code`: a Python function in a ```python block; judged by `code`, which runs the row's
  tests (needs `S3FT_ALLOW_CODE_EXEC=1`, see judges/code.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from ._code import CodeTask
from ._math import MathTask
from .nq_open import NQOpen


@dataclass(frozen=True)
class AnswerType:
    """The prompts, filters and judge that fit one kind of answer."""
    judge: str
    """The judge that grades answers of this kind."""
    instruction: str
    """Appended to the question in the user turn."""
    paraphrase_system: str
    """System prompt of the paraphrase request."""
    paraphrase_prefill: str = ""
    """Start of the paraphrase's assistant turn (part of the target)."""
    paraphrase_limits: tuple[float, int] | None = None
    """(min_length_ratio, min_words) of the paraphrase filter; None: the `paraphrase` config section's."""
    answer_complete: str | None = None
    """Regex that ends generation once the answer is given."""
    stop: tuple[str, ...] = ()
    """Extra stop strings for generation."""


ANSWER_TYPES: dict[str, AnswerType] = {
    "number": AnswerType(
        judge="math", instruction=MathTask.instruction, paraphrase_system=MathTask.paraphrase_system,
        paraphrase_prefill=MathTask.paraphrase_prefill, answer_complete=MathTask.answer_complete),
    "short": AnswerType(
        judge="qa", instruction=NQOpen.instruction, paraphrase_system=NQOpen.paraphrase_system,
        paraphrase_limits=(0.0, 0), answer_complete=NQOpen.answer_complete),
    "free": AnswerType(
        judge="llm", instruction="",
        paraphrase_system=("Below are a question and its reference answer. Refer to the reference answer and "
                           "write your own response to the question, in your own words.")),
    "code": AnswerType(
        judge="code", instruction=CodeTask.instruction, paraphrase_system=CodeTask.paraphrase_system,
        paraphrase_prefill=CodeTask.paraphrase_prefill, paraphrase_limits=CodeTask.paraphrase_limits,
        stop=CodeTask.stop),
}
