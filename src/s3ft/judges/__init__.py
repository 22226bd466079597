"""Judge registry. A judge grades responses against examples in batches (so slow judges
such as code execution or an LLM can work in parallel) and always gives a reason.

Every judge fails closed: a response it cannot parse is incorrect. A response cut off at
`max_new_tokens` is never accepted, whatever the judge (see `judge_generations`).

A judge declares its options as a dataclass, `@register_judge("name", args=NameJudgeArgs)`, each
field documented; a config sets them under `judge.args`, checked when the config loads. Every judge
is built the same way, by `Judge.from_args(args, context)`: its typed args and a `JudgeContext`,
what it may need from the run (the model, a shared backend, the run directory).
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

from ..config import JudgeConfig, ModelConfig, build_args
from ..errors import S3FTError
from ..registry import import_submodules

JUDGES: dict[str, type[Judge]] = {}


@dataclass
class NoArgs:
    """A judge without options."""


@dataclass
class JudgeContext:
    """What a judge may need from the run, given to every judge's `from_args`. Outside a run (a unit
    test, `s3ft audit`, the dry run's estimate) the defaults: the default model, nothing loaded, no files."""

    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    """The run's `model` section."""
    model_path: Callable[[], str] | None = None
    """The run's model as a local directory, resolved (downloaded if need be) on the first call; None: outside a
    run, where a judge resolves `model` itself."""
    shared_backend: Callable[[], Any] | None = None
    """The run's in-process generation backend (`hf`), loaded on the first call, so that a judge model can use its
    weights rather than load a second copy; None when the run generates elsewhere (vllm, a server)."""
    run_dir: Path | None = None
    """The run directory, for files a judge keeps (the LLM judge's verdict cache); None: keep nothing on disk."""
    batch_size: int = 8
    """Rows per generation batch (`generation.batch_size`), for a judge that generates."""
    args_key: str = "judge.args"
    """Where the judge's args were written in the config, for error messages (`judge` for options written in their
    older place, see `JudgeConfig`)."""


@dataclass(frozen=True)
class Verdict:
    correct: bool
    reason: str
    extracted: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


class Judge:
    """Base of the registered judges. `name` and `args_type` are set by `register_judge`. A judge may also define
    `version`: bump it when a change alters verdicts, so that verdicts saved by the old code are not reused."""
    name: str
    args_type: type = NoArgs
    cost_note: str | None = None
    """What a call costs where a dry run does not time it (a generation, a sandboxed program), for the cost
    table; `{n}`: its args' `max_new_tokens`. None: cheap, timed by the dry run."""

    @classmethod
    def from_args(cls, args: Any, context: JudgeContext) -> Judge:
        """Build the judge from its args (an `args_type` instance) and the run's context. This default passes the
        args' fields to the constructor as keywords; a judge that needs the run overrides it."""
        return cls(**{f.name: getattr(args, f.name) for f in dataclasses.fields(args)})

    def judge(self, examples: list[dict], responses: list[str]) -> list[Verdict]:
        raise NotImplementedError


def register_judge(name: str, args: type = NoArgs):
    """Register a `Judge` subclass as `name`; `args`: the dataclass of its options (`judge.args`)."""
    def deco(cls):
        cls.name, cls.args_type = name, args
        JUDGES[name] = cls
        return cls
    return deco


def judge_names() -> list[str]:
    import_submodules(__name__, __path__)
    return sorted(JUDGES)


def judge_class(name: str) -> type[Judge]:
    import_submodules(__name__, __path__)
    if name not in JUDGES:
        raise S3FTError(f"unknown judge '{name}' (known: {', '.join(sorted(JUDGES))})")
    return JUDGES[name]


def judge_args(name: str, config: JudgeConfig) -> Any:
    """The typed args of judge `name` from a config's `judge` section; an error names `judge.args.<key>`."""
    return build_args(judge_class(name).args_type, config.options(), config.args_key, f"judge '{name}'")


def get_judge(name: str, context: JudgeContext | None = None, /, **args) -> Judge:
    """Judge `name`, built from `args` (its options, checked against its args dataclass) and the run's context."""
    cls = judge_class(name)
    where = context.args_key if context else "judge.args"
    return cls.from_args(build_args(cls.args_type, args, where, f"judge '{name}'"), context or JudgeContext())


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
