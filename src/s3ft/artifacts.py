"""Run-directory artifacts: one JSONL per stage plus a `.meta.json` sidecar.

Every stage appends finished rows to its JSONL and fsyncs, so a run killed at any point
(even `kill -9`) restarts where it stopped: rows already on disk are kept and skipped, a
half-written last line is dropped. The sidecar holds a fingerprint of everything the
stage's output depends on (model, task, prompts, decoding...); a mismatch is an error
rather than a silent reuse of stale rows, and what making the artifact took (`StageCost`),
summed over every process that worked on it, so a resumed run still reports the whole cost
(its peak memory: the highest any of them reached).

`RunLock` keeps a second process out of a run directory while one is writing to it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import gzip
import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

from .errors import S3FTError


def fingerprint(obj: Any) -> str:
    blob = json.dumps(obj, sort_keys=True, default=str, ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def read_jsonl(path: str | Path) -> list[dict]:
    """Read a JSONL file; a malformed line is an error naming file and line."""
    return list(iter_jsonl(path))


def iter_jsonl(path: str | Path) -> Iterator[dict]:
    path = Path(path)
    if not path.exists():
        raise S3FTError(f"{path}: file not found")
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise S3FTError(f"{path}:{lineno}: invalid JSON ({e.msg} at column {e.colno})") from None
            if not isinstance(row, dict):
                raise S3FTError(f"{path}:{lineno}: expected a JSON object, got {type(row).__name__}")
            yield row


@contextlib.contextmanager
def disk_full_is_an_error(path: str | Path, tmp: Path | None = None) -> Iterator[None]:
    """A full disk (or quota) while writing `path`: one line naming it. Rows already appended stay
    on disk (a half-written last line is dropped on resume), so a rerun after freeing space goes on."""
    try:
        yield
    except OSError as e:
        if e.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        if tmp is not None:
            with contextlib.suppress(OSError):
                tmp.unlink()
        raise S3FTError(f"{path}: disk full ({os.strerror(e.errno)}) while writing; finished rows are kept: "
                        "free some space and run the same command again to resume") from None


def write_jsonl(path: str | Path, rows: Iterable[dict]) -> None:
    """Write a whole file atomically (temp file + rename)."""
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with disk_full_is_an_error(path, tmp):
        with tmp.open("w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)


def write_json(path: str | Path, obj: Any) -> None:
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with disk_full_is_an_error(path, tmp):
        tmp.write_text(json.dumps(obj, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8")
        os.replace(tmp, path)


def _drop_partial_tail(path: Path) -> None:
    """A crash mid-write can leave a last line without its newline: cut it off."""
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        os.truncate(path, data.rfind(b"\n") + 1)


@dataclass
class StageCost:
    """What making an artifact took: wall time, generated tokens, rows, and the peak resident memory
    (RSS) of the process that made it (of the largest process, where several worked on it)."""
    wall_s: float = 0.0
    tokens: int = 0
    rows: int = 0
    peak_rss_gib: float = 0.0

    def __add__(self, other: "StageCost") -> "StageCost":
        return StageCost(round(self.wall_s + other.wall_s, 3), self.tokens + other.tokens, self.rows + other.rows,
                         max(self.peak_rss_gib, other.peak_rss_gib))

    @staticmethod
    def parallel(costs: Iterable["StageCost"]) -> "StageCost":
        """Processes that ran side by side: the slowest one's wall time, everyone's tokens and rows, the
        largest one's peak."""
        costs = list(costs)
        return StageCost(max((c.wall_s for c in costs), default=0.0), sum(c.tokens for c in costs),
                         sum(c.rows for c in costs), max((c.peak_rss_gib for c in costs), default=0.0))


def recorded_cost(path: str | Path) -> StageCost:
    """The cost in the sidecar of the artifact at `path`; zero if it has none."""
    meta = Path(path).with_name(Path(path).stem + ".meta.json")
    try:
        return StageCost(**json.loads(meta.read_text(encoding="utf-8")).get("cost", {}))
    except (OSError, ValueError, TypeError):
        return StageCost()


class RunLock:
    """An exclusive `flock` on `<run dir>/.s3ft.lock`, held until `release()` or the process ends.

    The kernel drops a dead process's lock, so a killed run never blocks the next one; the file
    holds the holder's PID for the error message.
    """
    NAME = ".s3ft.lock"

    def __init__(self, run_dir: str | Path):
        self.fd: int | None = os.open(Path(run_dir) / self.NAME, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(self.fd, 32, 0).decode(errors="replace").strip() or "unknown"
            self.release()
            raise S3FTError(f"{run_dir}: in use by another s3ft process (pid {holder}); wait for it to "
                            "finish or use another output directory") from None
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, f"{os.getpid()}\n".encode(), 0)

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the only descriptor drops the lock
            self.fd = None


class StageArtifact:
    """The JSONL a stage writes, keyed by row `id`, resumable and fingerprinted."""

    def __init__(self, path: str | Path, inputs: dict, force: bool = False):
        self.path = Path(path)
        self.meta_path = self.path.with_name(self.path.stem + ".meta.json")
        self.inputs = inputs
        self.fingerprint = fingerprint(inputs)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        meta = self._read_meta()
        if meta is not None and meta.get("fingerprint") != self.fingerprint:
            if not force:
                changed = sorted(k for k in set(inputs) | set(meta.get("inputs", {}))
                                 if json.dumps(inputs.get(k), sort_keys=True, default=str)
                                 != json.dumps(meta.get("inputs", {}).get(k), sort_keys=True, default=str))
                raise S3FTError(
                    f"{self.path}: made with different settings (changed: {', '.join(changed) or '?'}); "
                    "use another output directory or --force to recompute it")
            meta = None
        self.cost = StageCost(**meta.get("cost", {})) if meta is not None else StageCost()
        if meta is None:
            self.path.unlink(missing_ok=True)
            self._write_meta(done=False, stats={})
        if self.path.exists():
            _drop_partial_tail(self.path)
        self.rows: dict[Any, dict] = {}
        if self.path.exists():
            for row in iter_jsonl(self.path):
                self.rows[row["id"]] = row  # a duplicate id (never written by us) keeps the last

    @staticmethod
    def finished(path: str | Path, inputs: dict) -> bool:
        """Whether the artifact at `path` is complete and made from `inputs`; reads, never writes."""
        meta = Path(path).with_name(Path(path).stem + ".meta.json")
        try:
            meta = json.loads(meta.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return False
        return meta.get("fingerprint") == fingerprint(inputs) and bool(meta.get("done"))

    def _read_meta(self) -> dict | None:
        if not self.meta_path.exists():
            return None
        try:
            return json.loads(self.meta_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            return None  # a torn sidecar: start the stage over

    def _write_meta(self, done: bool, stats: dict) -> None:
        write_json(self.meta_path, {"fingerprint": self.fingerprint, "inputs": self.inputs,
                                    "done": done, "stats": stats, "cost": asdict(self.cost)})

    @property
    def done(self) -> bool:
        meta = self._read_meta()
        return bool(meta and meta.get("done"))

    def pending(self, ids: Iterable) -> list:
        return [i for i in ids if i not in self.rows]

    def append(self, rows: Iterable[dict], cost: StageCost | None = None) -> None:
        """Add rows (and what making them took) to the file; ids already there are skipped."""
        rows = [r for r in rows if r["id"] not in self.rows]
        if rows:
            with disk_full_is_an_error(self.path), self.path.open("a", encoding="utf-8") as f:
                for row in rows:
                    f.write(json.dumps(row, ensure_ascii=False) + "\n")
                f.flush()
                os.fsync(f.fileno())
            for row in rows:
                self.rows[row["id"]] = row
        if cost is not None:
            self.add_cost(cost)

    def add_cost(self, cost: StageCost) -> None:
        self.cost += cost
        meta = self._read_meta() or {}
        self._write_meta(done=bool(meta.get("done")), stats=meta.get("stats", {}))

    def finish(self, stats: dict | None = None) -> None:
        self.path.touch()
        self._write_meta(done=True, stats=stats or {})

    def ordered(self, ids: Iterable) -> list[dict]:
        return [self.rows[i] for i in ids if i in self.rows]
