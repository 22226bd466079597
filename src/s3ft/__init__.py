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
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

from . import methods  # noqa: E402,F401  (their config sections, before any config loads)

_EXPORTS = {
    "load_config": "api", "RunConfig": "config",
    "run": "api", "select": "api",
    "TrainingRecord": "strategies", "Judged": "strategies", "Target": "strategies", "Reason": "strategies",
    "Needs": "strategies", "register_strategy": "strategies", "get_strategy": "strategies",
    "S3FTError": "errors",
}
"""Public name -> the module of `s3ft` that defines it."""

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value  # later lookups skip this function
        return value
    raise AttributeError(f"module 's3ft' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])


if TYPE_CHECKING:  # for type checkers and editors; at run time the names above load lazily
    from .api import load_config, run, select
    from .config import RunConfig
    from .errors import S3FTError
    from .strategies import Judged, Needs, Reason, Target, TrainingRecord, get_strategy, register_strategy
