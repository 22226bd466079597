"""The Python API's runs: `s3ft.run`, the pipeline from a path, a config or a mapping, with keyword
overrides. (`s3ft.load_config` is `s3ft.checks.load_checked_config`; `s3ft.select`, targets for records of
your own, is `s3ft.selection.select`.) docs/python-api.md shows each with an example.

    import s3ft
    summary = s3ft.run("configs/demo.yaml", output_dir="runs/demo", train={"epochs": 1})
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .checks import load_checked_config as load_config
from .config import RunConfig, to_dict
from .errors import S3FTError
from .pipeline import run_pipeline


# --- run ----------------------------------------------------------------------
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
    return run_pipeline(config_of(config, overrides, **sections), force=force, until=until)
