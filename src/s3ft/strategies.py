"""Target-selection strategies: each is one function from a training record to a target,
registered with what it needs from the stages before selection and the sources it can emit.

    @register_strategy("ssr", needs=Needs(own_answer=True), sources={"self": "own answer", "gold": "gold"})
    def ssr(rec: TrainingRecord) -> Target:
        if rec.answer.correct:
            return Target(rec.answer.text, "self", Reason.verdict(rec.answer.reason))
        return Target(rec.gold, "gold", Reason.rejected("own answer", rec.answer.reason))

The pipeline makes the paraphrases the registered strategies ask for (`needs_paraphrase`), and
the reports count each source in its display group, with the groups' labels as column names
(`self`, `paraphrase/rewrite`, `gold`; see `source_groups`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from collections.abc import Callable, Iterable, Mapping
from typing import Literal, NamedTuple, get_args

from .errors import S3FTError
from .methods import METHODS

GOLD = "gold"
"""The source (and display group) of the dataset's own answer: every strategy's fallback."""


@dataclass(frozen=True)
class Judged:
    """A generation of the base model with the judge's verdict on it."""

    text: str
    """The generation; for a paraphrase, with the task's prefill in front, as it would be trained on."""
    correct: bool
    """Whether the judge accepted it (a truncated or pre-filtered generation never is)."""
    reason: str
    """The judge's reason, e.g. 'match (boxed)', 'filtered: too short: 3 words vs 12 in the gold answer'."""


@dataclass(frozen=True)
class TrainingRecord:
    """What a strategy sees of one training row."""

    id: str
    """The row's id in data/train.jsonl."""
    gold: str
    """The dataset's answer."""
    answer: Judged
    """The base model's own answer to the query, judged."""
    paraphrase: Judged | None = None
    """The model's paraphrase of the gold answer, judged; None where no registered strategy in the run asked
    for one on this row (see `Needs.paraphrase`)."""

    @classmethod
    def from_dict(cls, d: Mapping) -> TrainingRecord:
        """From the record's JSON form: {"id", "gold", "answer": {"text", "correct", "reason"}, "paraphrase": ... | None}."""
        def judged(part: Mapping | None) -> Judged | None:
            return None if part is None else Judged(part["text"], bool(part["correct"]), part["reason"])
        return cls(d["id"], d["gold"], judged(d["answer"]), judged(d.get("paraphrase")))


class Reason(str):
    """Why a strategy chose a target. It is the text train_<method>.jsonl keeps, e.g. "own answer
    rejected: wrong answer (boxed): 12 != 10", and carries its parts:

    - `kind`: what the selection statistics count (`gold_reasons`), "own answer rejected: wrong answer (boxed)";
    - `detail`: the rest, "12 != 10" ("" when the kind says it all).

    `Reason(kind, detail)` joins them with ": ". It is a `str` so that the rows serialise, and
    compare, as the plain text they always were.
    """

    kind: str
    detail: str

    def __new__(cls, kind: str, detail: str = "", *, text: str | None = None) -> Reason:
        self = super().__new__(cls, text if text is not None else f"{kind}: {detail}" if detail else kind)
        self.kind, self.detail = kind, detail
        return self

    @classmethod
    def verdict(cls, reason: str) -> Reason:
        """A judge's reason as it is; its kind is the part before the first ':' ('filtered', 'truncated', ...)."""
        kind, _, detail = reason.partition(":")
        return cls(kind, detail.strip(), text=reason)

    @classmethod
    def rejected(cls, tier: str, why: str) -> Reason:
        """"<tier> rejected: <why>", where `why` is the judge's reason (or, e.g., 'no paraphrase'); its kind names
        the tier and the kind of the judge's reason: "paraphrase rejected: filtered"."""
        head, _, rest = why.partition(":")
        return cls(f"{tier} rejected: {head}".rstrip(), rest.strip(), text=f"{tier} rejected: {why}")


class Target(NamedTuple):
    """A strategy's choice for one row."""

    text: str
    """What the model is trained to answer."""
    source: str
    """Where the text comes from: one of the strategy's declared source labels."""
    reason: Reason
    """Why this text."""


ParaphraseNeed = Literal["none", "failed_rows", "every_row"]


@dataclass(frozen=True)
class Needs:
    """What a strategy reads besides the gold answer: the pipeline makes it for the strategies in a run."""

    own_answer: bool = True
    """The base model's own answer to each training query, judged (`TrainingRecord.answer`). The answer stage
    runs for every run today; this lets a stage plan skip it where no method needs it."""
    paraphrase: ParaphraseNeed = "none"
    """The model's paraphrase of the gold answer, judged (`TrainingRecord.paraphrase`): of no row (`none`), of
    the rows whose own answer the judge rejected (`failed_rows`, S3FT's middle tier) or of every row
    (`every_row`, SDFT's rewrite)."""
    uses_own_samples: bool = False
    """Best-of-k own answers (`generation.self_samples`): where the greedy answer is rejected, an accepted
    sampled answer stands in for it in `TrainingRecord.answer`. Samples are made only for runs with such a
    strategy."""


@dataclass(frozen=True)
class Strategy:
    """A registered strategy: its function and what it declares."""

    name: str
    """The name `methods` uses."""
    select: Callable[[TrainingRecord], Target]
    """The function: training record -> target."""
    needs: Needs
    """What it reads besides the gold answer."""
    sources: Mapping[str, str]
    """Every source label it can emit, with the display group the reports count it in, e.g.
    {"rewrite": "paraphrase", "gold": "gold"}."""

    def __call__(self, rec: TrainingRecord | Mapping) -> Target:
        """The target for one record (also given in its JSON form, see `TrainingRecord.from_dict`)."""
        target = self.select(rec if isinstance(rec, TrainingRecord) else TrainingRecord.from_dict(rec))
        if not isinstance(target, Target) or not isinstance(target.reason, Reason):
            raise S3FTError(f"strategy '{self.name}': returned {target!r}, not a Target(text, source, Reason)")
        if target.source not in self.sources:
            raise S3FTError(f"strategy '{self.name}': emitted source '{target.source}', which it does not declare "
                            f"(sources: {', '.join(self.sources)})")
        return target


STRATEGIES: dict[str, Strategy] = {}


def register_strategy(name: str, *, needs: Needs = Needs(), sources: Mapping[str, str]):
    """Register `fn(rec: TrainingRecord) -> Target` under `name`, with its needs and its sources
    ({label: display group}). A label keeps one group across strategies."""
    if needs.paraphrase not in get_args(ParaphraseNeed):
        raise S3FTError(f"strategy '{name}': needs.paraphrase must be one of {', '.join(get_args(ParaphraseNeed))}, "
                        f"not {needs.paraphrase!r}")
    if not sources:
        raise S3FTError(f"strategy '{name}': declares no sources")
    for other in STRATEGIES.values():
        for label, group in sources.items():
            if other.name != name and other.sources.get(label, group) != group:
                raise S3FTError(f"strategy '{name}': source '{label}' in group '{group}', but strategy "
                                f"'{other.name}' counts it in '{other.sources[label]}'")

    def deco(fn: Callable[[TrainingRecord], Target]):
        STRATEGIES[name] = Strategy(name, fn, needs, dict(sources))
        return fn
    return deco


def get_strategy(name: str) -> Strategy:
    if name not in STRATEGIES:
        raise S3FTError(f"methods: unknown strategy '{name}' (known: {', '.join(STRATEGIES)})")
    return STRATEGIES[name]


def strategies_of(methods: Iterable[str]) -> list[Strategy]:
    """The strategies among a run's methods; methods with a trainer of their own (`s3ft.methods`, e.g.
    `opsd`) choose no target and need nothing from the answer and paraphrase stages."""
    return [get_strategy(m) for m in methods if m not in METHODS]


def needs_paraphrase(methods: list[str], answer_correct: bool) -> bool:
    """Whether a row needs a paraphrase for these methods, given the judge's verdict on its own answer."""
    wanted = {s.needs.paraphrase for s in strategies_of(methods)}
    return "every_row" in wanted or ("failed_rows" in wanted and not answer_correct)


def source_group(label: str) -> str:
    """The display group of a source label; a label no registered strategy declares is its own group."""
    return next((s.sources[label] for s in STRATEGIES.values() if label in s.sources), label)


def source_groups(labels: Iterable[str] = ()) -> dict[str, list[str]]:
    """{display group: its source labels} over the registered strategies, in registration order, and over
    `labels` (e.g. those of a run made with a strategy not registered here), with gold last."""
    groups: dict[str, list[str]] = {}
    for label in [label for s in STRATEGIES.values() for label in s.sources] + list(labels):
        members = groups.setdefault(source_group(label), [])
        if label not in members:
            members.append(label)
    if GOLD in groups:
        groups[GOLD] = groups.pop(GOLD)
    return groups


def group_counts(mix: Mapping[str, int], groups: dict[str, list[str]]) -> list[int]:
    """A target mix ({source label: rows}) summed per display group, in the order of `groups`."""
    return [sum(mix.get(label, 0) for label in labels) for labels in groups.values()]


# --- the strategies -------------------------------------------------------------
@register_strategy("sft", needs=Needs(own_answer=False), sources={GOLD: GOLD})
def sft(rec: TrainingRecord) -> Target:
    """Plain supervised fine-tuning: always the gold answer."""
    return Target(rec.gold, GOLD, Reason("gold"))


@register_strategy("ssr", needs=Needs(uses_own_samples=True), sources={"self": "own answer", GOLD: GOLD})
def ssr(rec: TrainingRecord) -> Target:
    """Selective Self-Rehearsal: the model's own answer where judged correct, else gold."""
    if rec.answer.correct:
        return Target(rec.answer.text, "self", Reason.verdict(rec.answer.reason))
    return Target(rec.gold, GOLD, Reason.rejected("own answer", rec.answer.reason))


@register_strategy("s3ft", needs=Needs(paraphrase="failed_rows", uses_own_samples=True),
                   sources={"self": "own answer", "paraphrase": "paraphrase", GOLD: GOLD})
def s3ft(rec: TrainingRecord) -> Target:
    """S3FT: own answer if correct, else own paraphrase of the gold if correct, else gold."""
    if rec.answer.correct:
        return Target(rec.answer.text, "self", Reason.verdict(rec.answer.reason))
    para = rec.paraphrase
    if para and para.correct:
        return Target(para.text, "paraphrase", Reason.verdict(para.reason))
    return Target(rec.gold, GOLD, Reason.rejected("paraphrase", para.reason if para else "no paraphrase"))


@register_strategy("sdft", needs=Needs(own_answer=False, paraphrase="every_row"),
                   sources={"rewrite": "paraphrase", GOLD: GOLD})
def sdft(rec: TrainingRecord) -> Target:
    """Self-distillation: the model's rewrite of every gold answer, kept if still correct."""
    para = rec.paraphrase
    if para and para.correct:
        return Target(para.text, "rewrite", Reason.verdict(para.reason))
    return Target(rec.gold, GOLD, Reason.rejected("rewrite", para.reason if para else "no rewrite"))


def paraphrase_problem(text: str, gold: str, final_answer_removed: str, reference_phrases: tuple[str, ...],
                       min_length_ratio: float, min_words: int, prefill: str = "") -> str | None:
    """Why a paraphrase must be rejected before judging (None: fine).

    Small models asked to restate a solution often reply with the bare final answer, or
    talk about "the reference answer"; a judge that only checks the number accepts both,
    and training on them teaches the model to stop reasoning.
    """
    low = text.lower()
    for phrase in reference_phrases:
        if phrase in low:
            return f"mentions the reference ({phrase!r})"
    words, gold_words = len(text.split()), len(gold.split())
    if words < min_length_ratio * gold_words:
        return f"too short: {words} words vs {gold_words} in the gold answer"
    reasoning = final_answer_removed.replace(prefill, "", 1) if prefill else final_answer_removed
    if len(re.findall(r"\w+", reasoning)) < min_words:
        return "no reasoning: little besides the final answer"
    return None
