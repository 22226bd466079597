"""Checks of a loaded config against the registries: methods and their sections, the task and its
args, the judge's name and args.

`s3ft.config` parses and range-checks a config without importing any registry; the CLI and `Run`
call `check_config` after loading, so a name or an argument no registration knows is still a
one-line error naming where it was written (`file:line`, `--set`, or `config`) and the key.
"""

from __future__ import annotations

from pathlib import Path

from .config import DataConfig, Origins, RunConfig, load_config
from .errors import S3FTError
from .judges import judge_args, judge_names
from .methods import METHODS
from .strategies import STRATEGIES
from .tasks import get_task, task_args


def load_checked_config(path: str | Path | None = None, overrides: list[str] | None = None,
                        defaults: dict | None = None) -> RunConfig:
    """`load_config`, then `check_config`: what the CLI runs, and `s3ft.load_config`. The YAML file (None: the
    defaults) with `--set`-style `overrides` on top, e.g. ["train.lora_r=16", "methods=[sft, s3ft]"];
    `defaults`: a mapping beneath the file. Unknown keys, ill-typed or out-of-range values, unknown methods,
    judges or judge options raise S3FTError naming the file and line (or `--set`) and the key."""
    cfg = load_config(path, overrides, defaults)
    check_config(cfg)
    return cfg


def check_config(cfg: RunConfig, origin: Origins | None = None) -> None:
    """Methods (and each method's own checks), the task's args, the judge's name and args; `origin` defaults to where
    `load_config` read `cfg` from."""
    origin = origin or cfg.origin
    _check_methods(cfg, origin)
    _check_task(cfg, origin)
    _check_judge(cfg, origin)


def _check_methods(cfg: RunConfig, origin: Origins) -> None:
    for m in cfg.methods:
        if m not in STRATEGIES and m not in METHODS:
            raise S3FTError(f"{origin('methods')}: methods: unknown strategy '{m}' "
                            f"(known: {', '.join([*STRATEGIES, *METHODS])})")
    for method in METHODS.values():  # a section is checked whether or not its method runs, as any section
        for key, problem in method.check(cfg):
            raise S3FTError(f"{origin(key)}: {key}: {problem}")


def _check_task(cfg: RunConfig, origin: Origins) -> None:
    """The task's name and its typed args (a typo names `data.task_args.<key>` and the known keys)."""
    try:
        task_args(cfg.data.task, cfg.data)
    except S3FTError as e:
        key = str(e).split(":")[0]  # these errors start with the key
        raise S3FTError(f"{origin(key)}: {e}") from None


def _check_judge(cfg: RunConfig, origin: Origins) -> None:
    if cfg.judge.name is not None and cfg.judge.name not in judge_names():
        raise S3FTError(f"{origin('judge.name')}: judge.name: unknown judge '{cfg.judge.name}' "
                        f"(known: {', '.join(judge_names())})")
    try:
        options = cfg.judge.options()
        name = cfg.judge.name or (_task_judge(cfg.data) if options else None)  # no options: the defaults hold
        if name in judge_names():
            judge_args(name, cfg.judge)
    except S3FTError as e:
        key = str(e).split(":")[0]  # these errors start with the key
        raise S3FTError(f"{origin(key)}: {e}") from None


def _task_judge(data: DataConfig) -> str | None:
    """The judge the task names (a `jsonl` task: its `task_args.judge`); None for a task that does not
    load, which the run reports itself, naming `data.task` or `data.task_args`."""
    try:
        return get_task(data).judge
    except S3FTError:
        return None
