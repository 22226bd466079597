"""Methods with a trainer of their own, one folder each (TRL style: config, trainer, glue), registered here.

The strategies in `s3ft.strategies` choose one SFT target per row and share `s3ft.train`; the
methods here learn otherwise (e.g. `opsd`: on-policy from the model's own samples) and only
share the pipeline's stages around training: data, selection record, adapter, evaluation. A
method declares once what the pipeline, the checks, the cost table and the report need from it
(`register_method`); nothing outside its folder names it.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable

from ..config import register_section
from ..errors import S3FTError
from ..registry import import_submodules
from ..rows import SelectionStats, TrainRow


def _no_problems(cfg) -> list[tuple[str, str]]:
    return []


def _no_sampling(stats: dict) -> dict:
    return {}


def _no_lines(stages: dict[str, dict], name: str) -> list[str]:
    return []


@dataclass(frozen=True)
class TrainingShape:
    """What a method's training looks like to `--dry-run`'s cost estimate."""

    sequences: list[int]
    """Tokens of every sequence one epoch trains on (prompt + completion)."""
    batch_size: int
    """Sequences per device batch."""
    grad_accum: int
    """Batches per optimizer step."""
    full_logits_row: int = 0
    """Tokens per sequence whose whole vocabulary-wide logits the trainer holds (0: TRL's fused loss)."""
    sampled_prompts: list[int] = field(default_factory=list)
    """Prompt tokens of every completion sampled while training, over all epochs (priced as generation)."""
    sample_max_tokens: int = 0
    """Longest sampled completion, in tokens."""


@dataclass(frozen=True)
class Method:
    """A method with a trainer of its own: what the run needs from it."""

    name: str
    config: type
    """Its config section's dataclass: the run config's `<name>:` section, read as `cfg.<name>`."""
    select: Callable[[Any, list, Any], tuple[list[TrainRow], SelectionStats]]
    """(task, training examples, its section) -> (the rows of train_<name>.jsonl, their stats): what its
    trainer reads, from the data alone (no answers, paraphrases or verdicts)."""
    train: str | Callable[..., dict]
    """Its trainer, or "module:function" to import it only when it trains (trainers import heavy libraries):
    (model path, ModelConfig, TrainConfig, its section, rows, output dir) -> training stats."""
    check: Callable[[Any], list[tuple[str, str]]] = _no_problems
    """(run config) -> [(dotted key, what is wrong)]: checks against the rest of the config."""
    sampling_cost: Callable[[dict], dict] = _no_sampling
    """(training stats) -> what it sampled while training, added to its `train:<name>` cost."""
    cost_lines: Callable[[dict, str], list[str]] = _no_lines
    """(cost stages, its name) -> Markdown lines for report.md's cost section."""
    ranges: dict = field(default_factory=dict)
    """{field of its section: rule}, checked with the config's other ranges."""
    training_shape: Callable[[Any, Any, list[int]], TrainingShape] | None = None
    """(its section, TrainConfig, prompt tokens of each training row) -> what it trains on and samples, for
    `--dry-run`; None: priced like SFT on its selected targets."""

    def trainer(self) -> Callable[..., dict]:
        if callable(self.train):
            return self.train
        module, _, fn = self.train.partition(":")
        return getattr(importlib.import_module(module), fn)


METHODS: dict[str, Method] = {}
"""Methods with a trainer of their own, by name, in registration order (after the strategies in every listing)."""


def register_method(name: str, *, config: type, select: Callable, train: str | Callable, **declared) -> Method:
    """Register a method with its config section (`<name>:`), selection, trainer and the rest of `Method`."""
    if name in METHODS:
        raise S3FTError(f"method '{name}': registered twice")
    method = Method(name, config, select, train, **declared)
    register_section(name, config, method.ranges)
    METHODS[name] = method
    return method


def get_method(name: str) -> Method | None:
    """The method with a trainer of its own called `name`; None for a strategy (SFT on selected targets)."""
    _load()
    return METHODS.get(name)


def _load() -> None:
    import_submodules(__name__, __path__)


_load()
