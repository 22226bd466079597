"""s3ft: fine-tune LLMs on their own correct answers (SSR / S3FT) so they forget less.

    import s3ft
    cfg = s3ft.load_config("configs/demo.yaml", ["data.train_limit=16"])
    summary = s3ft.run(cfg, output_dir="runs/demo")          # the whole pipeline; returns summary.json's content
    rows = s3ft.select(records, method="s3ft")               # targets for records of your own

docs/python-api.md documents each name below. They are imported on first use, so `import s3ft` stays
light (no torch until a run starts).
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

from . import methods  # noqa: E402,F401  (their config sections, before any config loads)

_EXPORTS = {
    "load_config": "checks:load_checked_config", "RunConfig": "config",
    "run": "api", "select": "selection",
    "TrainingRecord": "strategies", "Judged": "strategies", "Target": "strategies", "Reason": "strategies",
    "Needs": "strategies", "register_strategy": "strategies", "get_strategy": "strategies",
    "S3FTError": "errors",
}
"""Public name -> the module of `s3ft` that defines it (`module:name` where the name there differs)."""

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        module, _, attr = _EXPORTS[name].partition(":")
        value = getattr(importlib.import_module(f".{module}", __name__), attr or name)
        globals()[name] = value  # later lookups skip this function
        return value
    raise AttributeError(f"module 's3ft' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])

