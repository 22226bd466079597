"""Judge registry. A judge grades responses against examples in batches (so slow judges
such as code execution or an LLM can work in parallel) and always gives a reason.

Every judge fails closed: a response it cannot parse is incorrect. A response cut off at
`max_new_tokens` is never accepted, whatever the judge (see `judge_generations`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Protocol

from ..errors import S3FTError
from ..registry import import_submodules

JUDGES: dict[str, type] = {}


@dataclass(frozen=True)
class Verdict:
    correct: bool
    reason: str
    extracted: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


class Judge(Protocol):
    """`name` is set by `register_judge`. A judge may also define `version`: bump it when a change
    alters verdicts, so that verdicts saved by the old code are not reused."""
    name: str

    def judge(self, examples: list[dict], responses: list[str]) -> list[Verdict]: ...


def register_judge(name: str):
    def deco(cls):
        cls.name = name
        JUDGES[name] = cls
        return cls
    return deco


def judge_names() -> list[str]:
    import_submodules(__name__, __path__)
    return sorted(JUDGES)


def get_judge(name: str, **options) -> Judge:
    import_submodules(__name__, __path__)
    if name not in JUDGES:
        raise S3FTError(f"unknown judge '{name}' (known: {', '.join(sorted(JUDGES))})")
    return JUDGES[name](**options)


def judge_generations(judge: Judge, examples: list[dict], generations: list[dict]) -> list[Verdict]:
    """Judge generations; truncated ones are rejected before the judge sees them."""
    out: list[Verdict | None] = [None] * len(generations)
    todo = []
    for i, g in enumerate(generations):
        if g.get("finish_reason") == "length":
            out[i] = Verdict(False, "truncated: hit max_new_tokens")
        else:
            todo.append(i)
    if todo:
        verdicts = judge.judge([examples[i] for i in todo], [generations[i]["text"] for i in todo])
        for i, v in zip(todo, verdicts):
            out[i] = v
    return out  # type: ignore[return-value]
