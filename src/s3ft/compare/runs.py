"""Run directories made by `s3ft run` / `s3ft demo`, loaded and checked to be comparable."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..config import RunConfig, load_config
from ..errors import S3FTError
from ..layout import RunLayout
from ..methods import METHODS
from ..models import materialize
from ..strategies import STRATEGIES



def method_order() -> list[str]:
    """base, then the strategies and the methods with their own trainer, in registration order."""
    return ["base", *STRATEGIES, *METHODS]


# Fields that must agree between run directories compared together (a different seed is fine).
IDENTITY_FIELDS = [("model", "name_or_path"), ("model", "gguf_file"), ("data", "task"), ("data", "task_args"),
                   ("data", "test_rows")]
IDENTITY_FIELDS += [("forgetting", k) for k in ("text_file", "text_limit", "text_max_tokens", "prompts_file",
                                                "prompts_limit", "max_new_tokens", "benchmarks", "benchmark_limit")]
SEED_FIELDS = [("data", "seed"), ("train", "seed"), ("generation", "seed")]


@dataclass
class RunDir:
    path: Path
    config: RunConfig
    """The run's config.json, loaded as `s3ft run` loads a config."""
    label: str
    methods: list[str]
    group: str = ""
    """The label its models are reported under: its own, or (a `variant` run) that of the run with the same
    seeds and no variant, so that one seed's arms pair item by item."""

    @property
    def variant(self) -> str:
        return self.config.variant or ""

    def model(self, method: str) -> str:
        """A method's name in the comparison: `s3ft` in a run of variant `+replay` is `s3ft+replay`."""
        return method if method == "base" or not self.variant else method + self.variant

    @property
    def merged(self) -> bool:
        """Its models join another run's (its base model is that run's, and is not reported twice)."""
        return self.group != self.label

    @property
    def layout(self) -> RunLayout:
        return RunLayout(self.path)

    def get(self, section: str, key: str):
        """`config.<section>.<key>`, for the fields named as pairs (`IDENTITY_FIELDS`, `SEED_FIELDS`)."""
        return getattr(getattr(self.config, section), key)

    @property
    def seeds(self) -> dict:
        return {f"{s}.{k}": self.get(s, k) for s, k in SEED_FIELDS}


def load_run(path: str | Path) -> RunDir:
    path = Path(path)
    cfg_path = RunLayout(path).config
    if not path.is_dir():
        raise S3FTError(f"{path}: not a directory (expected a run directory made by `s3ft run` or `s3ft demo`)")
    if not cfg_path.is_file():
        raise S3FTError(f"{path}: no config.json (not a run directory made by `s3ft run` or `s3ft demo`)")
    config = load_config(cfg_path)  # errors name the file, line and key
    wanted = (["base"] if config.eval.base else []) + list(config.methods)
    missing = [m for m in wanted if not RunLayout(path).eval_metrics(m).is_file()]
    if missing:
        raise S3FTError(f"{path}: no in-domain evaluation for {', '.join(missing)} "
                        f"(eval/{missing[0]}.metrics.json missing); finish the run first (`s3ft evaluate`)")
    if "base" not in wanted:
        raise S3FTError(f"{path}: the base model was not evaluated (eval.base: false); nothing to compare against")
    methods = sorted(dict.fromkeys(wanted), key=lambda m: (method_order().index(m) if m in method_order() else 99, m))
    return RunDir(path, config, path.name + (config.variant or ""), methods)


def load_runs(run_dirs: list[Path]) -> list[RunDir]:
    if not run_dirs:
        raise S3FTError("compare: give at least one run directory")
    seen = {}
    runs = []
    for d in run_dirs:
        key = Path(d).resolve()
        if key in seen:
            raise S3FTError(f"{d}: given twice (same directory as {seen[key]})")
        seen[key] = d
        runs.append(load_run(d))
    first = runs[0]
    for r in runs[1:]:
        for section, key in IDENTITY_FIELDS:
            a, b = first.get(section, key), r.get(section, key)
            if json.dumps(a, sort_keys=True) != json.dumps(b, sort_keys=True):
                raise S3FTError(f"{r.path}: {section}.{key} is {b!r} but {first.path} (the first run directory) "
                                f"has {a!r}; compare only runs of the same task and model")
    labels = [r.label for r in runs]
    for i, r in enumerate(runs):  # unique, readable labels
        if labels.count(r.label) > 1:
            r.label = f"{r.label}#{i + 1}"
    _group_variants(runs)
    return runs


def _group_variants(runs: list[RunDir]) -> None:
    """Give each run its group: a `variant` run joins the run of the same seeds without one, if given."""
    plain = {}
    for r in runs:
        r.group = r.label
        if not r.variant:
            plain.setdefault(json.dumps(r.seeds, sort_keys=True), r)
    names: dict[str, dict[str, RunDir]] = {}
    for r in runs:
        home = plain.get(json.dumps(r.seeds, sort_keys=True)) if r.variant else None
        r.group = home.label if home is not None else r.label
        for m in r.methods:
            if m == "base" and r.merged:
                continue
            other = names.setdefault(r.group, {}).setdefault(r.model(m), r)
            if other is not r:
                raise S3FTError(f"{r.path}: {r.model(m)} of seeds {r.seeds} is also in {other.path}; give the "
                                "runs different `variant`s to compare them")


def model_path_of(run: RunDir) -> str:
    return materialize(run.config.model)

