"""The Python API: run the pipeline from a config (`run`), and choose targets on records of your own
(`select`). docs/python-api.md shows each with an example.

    import s3ft
    summary = s3ft.run("configs/demo.yaml", output_dir="runs/demo", train={"epochs": 1})
    rows = s3ft.select(records, method="s3ft")
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from .checks import load_checked_config
from .config import RunConfig, to_dict
from .errors import S3FTError
from .methods import OWN_TRAINER
from .strategies import Judged, Strategy, TrainingRecord, get_strategy


# --- load_config and run -------------------------------------------------------
def load_config(path: str | Path | None = None, overrides: list[str] | None = None,
                defaults: Mapping | None = None) -> RunConfig:
    """The run config from a YAML file (None: the defaults) with `--set`-style `overrides` on top, e.g.
    ["train.lora_r=16", "methods=[sft, s3ft]"], checked as `s3ft run` checks it: unknown keys, ill-typed or
    out-of-range values, unknown methods, judges or judge options raise S3FTError naming the file and line
    (or `--set`) and the key. `defaults`: a mapping beneath the file."""
    return load_checked_config(path, overrides, dict(defaults) if defaults is not None else None)


def dotted(sections: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Keyword overrides as `--set` items: {"train": {"epochs": 1}} -> ["train.epochs=1"] (values as JSON,
    which YAML reads back unchanged)."""
    out = []
    for key, value in sections.items():
        if isinstance(value, Mapping) and value:
            out += dotted(value, f"{prefix}{key}.")
        else:
            out.append(f"{prefix}{key}={json.dumps(value)}")
    return out


def config_of(config: str | Path | RunConfig | Mapping | None, overrides: list[str] | None = None,
              **sections: Any) -> RunConfig:
    """A checked `RunConfig` from a YAML path, a `RunConfig` or a mapping, with `--set`-style `overrides` and
    keyword overrides on top (`output_dir="runs/x"`, `train={"epochs": 1}`). Errors name the key, as on the
    command line."""
    extra = [*(overrides or []), *dotted(sections)]
    if config is None or isinstance(config, (str, Path)):
        return load_config(config, extra)
    if isinstance(config, RunConfig):
        return load_config(None, extra, defaults=to_dict(config))
    if isinstance(config, Mapping):
        return load_config(None, extra, defaults=dict(config))
    raise S3FTError(f"config: expected a YAML path, a RunConfig or a mapping, got {type(config).__name__}")


def run(config: str | Path | RunConfig | Mapping | None, overrides: list[str] | None = None, *,
        until: str = "report", force: bool = False, **sections: Any) -> dict:
    """Run the pipeline (generate, judge, paraphrase, select, train, evaluate, forgetting, report), as
    `s3ft run` does, resuming whatever an earlier run in the same `output_dir` finished.

    Args:
        config: a YAML config path, a `RunConfig` (e.g. from `load_config`), or a mapping of the YAML's keys.
        overrides: `--set`-style items, e.g. ["data.train_limit=16"].
        until: the last stage to run (`data`, `generate`, `judge`, `paraphrase`, `select`, `train`, `evaluate`,
            `forgetting`, `report`).
        force: recompute artifacts made with other settings instead of stopping.
        **sections: keyword overrides, a top-level key each: `output_dir="runs/x"`, `methods=["sft", "s3ft"]`,
            `train={"epochs": 1, "lora_r": 16}` (a mapping sets the keys it names and keeps the others).

    Returns:
        The run's summary, as written to `<output_dir>/summary.json` (`in_domain`, `in_domain_ci95`,
        `target_mix_by_method`, `forgetting`, `cost`, `config`, ...); {} when `until` stops before the report.
    """
    from .pipeline import run_pipeline  # torch and transformers: imported when a run starts, not with s3ft
    return run_pipeline(config_of(config, overrides, **sections), force=force, until=until)


# --- select -------------------------------------------------------------------
def judged(part: Any, where: str) -> Judged | None:
    """A judged generation from {"text", "correct", "reason"?} (or a `Judged`); None stays None."""
    if part is None or isinstance(part, Judged):
        return part
    if not isinstance(part, Mapping) or "text" not in part or "correct" not in part:
        raise S3FTError(f"{where}: expected a mapping with 'text' and 'correct', got {part!r}")
    correct = bool(part["correct"])
    return Judged(str(part["text"]), correct, str(part.get("reason") or ("accepted" if correct else "rejected")))


def record_of(row: TrainingRecord | Mapping, index: int) -> TrainingRecord:
    """A training record from its typed form or a mapping {"id"?, "gold", "answer", "paraphrase"?, ...}; other
    keys (a question, metadata) are ignored. An error names the row and the key."""
    if isinstance(row, TrainingRecord):
        return row
    where = f"records[{index}]"
    if not isinstance(row, Mapping):
        raise S3FTError(f"{where}: expected a mapping or a TrainingRecord, got {type(row).__name__}")
    for key in ("gold", "answer"):
        if row.get(key) is None:
            raise S3FTError(f"{where}: no '{key}' (a record needs 'gold' and a judged 'answer')")
    return TrainingRecord(str(row.get("id", index)), str(row["gold"]), judged(row["answer"], f"{where}.answer"),
                          judged(row.get("paraphrase"), f"{where}.paraphrase"))


def strategy_for(method: str) -> Strategy:
    if method in OWN_TRAINER:
        raise S3FTError(f"method '{method}': chooses no targets (it learns from its own samples while training); "
                        "select takes a target-selection strategy")
    return get_strategy(method)


def select(records: Iterable[TrainingRecord | Mapping] | Any, method: str = "s3ft") -> list[dict] | Any:
    """Choose each record's training target with a registered strategy (`sft`, `ssr`, `s3ft`, `sdft`, or one
    you registered), as the pipeline's select stage does.

    Args:
        records: `TrainingRecord`s, or mappings {"id", "gold", "answer": {"text", "correct", "reason"},
            "paraphrase": {...} or None}, or a `datasets.Dataset` with those columns. `answer` is the model's own
            answer with the judge's verdict; `paraphrase` its restatement of the gold answer, where there is one.
        method: the strategy's name.

    Returns:
        For a list: one dict per record, {"id", "target", "source", "reason"}, as `train_<method>.jsonl` keeps
        them; for a `datasets.Dataset`: the dataset with `target`, `source` and `reason` columns added.
    """
    strategy = strategy_for(method)

    def choose(row: Any, index: int) -> dict:
        rec = record_of(row, index)
        target = strategy(rec)
        return {"id": rec.id, "target": target.text, "source": target.source, "reason": str(target.reason)}

    if hasattr(records, "map") and hasattr(records, "column_names"):  # a datasets.Dataset
        return records.map(lambda row, i: {k: v for k, v in choose(row, i).items() if k != "id"}, with_indices=True)
    return [choose(row, i) for i, row in enumerate(records)]
