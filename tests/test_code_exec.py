"""The execution judge must fail hostile programs in bounded time and leave the host intact."""

import json
import os
import socket
import stat
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest

from s3ft.errors import S3FTError
from s3ft.judges import code_exec
from s3ft.judges.code import CodeJudge
from s3ft.judges.code_exec import ExecResult, extract_code, isolation_in_force, run_program, run_programs

T = 3.0  # per-program timeout used throughout
NAMESPACED = not isolation_in_force().startswith("rlimits only")


def judge(program: str, **kwargs) -> ExecResult:
    start = time.monotonic()
    result = run_program(program, timeout_s=T, **kwargs)
    assert time.monotonic() - start < T + 5, "the judge itself must be bounded by the timeout"
    return result


def assert_fails(program: str, *reason_parts: str, **kwargs) -> ExecResult:
    result = judge(program, **kwargs)
    assert not result.passed, result
    assert any(part in result.reason for part in reason_parts), result
    return result


def test_isolation_is_reported():
    desc = isolation_in_force()
    assert desc.startswith(("bubblewrap", "network and pid namespaces", "rlimits only (network NOT blocked)"))
    assert isolation_in_force() == desc  # probed once, cached


@pytest.fixture
def fresh_choice(monkeypatch):
    """Forget which sandbox was chosen, so that this test's environment is probed again."""
    monkeypatch.setattr(code_exec, "_chosen", {})
    return monkeypatch


@pytest.mark.parametrize("value", ["bwrapp", "BWRAP", "docker", "", "auto"])
def test_unknown_isolation_value_is_an_error_naming_the_variable_and_the_choices(fresh_choice, value):
    fresh_choice.setenv("S3FT_CODE_EXEC_ISOLATION", value)
    fresh_choice.setenv("S3FT_ALLOW_CODE_EXEC", "1")
    for start in (isolation_in_force, lambda: run_program("assert True\n"), CodeJudge):
        with pytest.raises(S3FTError) as err:
            start()
        message = str(err.value)
        assert message.startswith(f"env S3FT_CODE_EXEC_ISOLATION={value!r}: expected one of bwrap, unshare, none")
        assert "\n" not in message


def test_requested_sandbox_that_is_missing_or_broken_is_an_error(fresh_choice, tmp_path):
    fresh_choice.setenv("PATH", str(tmp_path))  # neither bwrap nor unshare on the PATH
    for mode in ("bwrap", "unshare"):
        fresh_choice.setenv("S3FT_CODE_EXEC_ISOLATION", mode)
        with pytest.raises(S3FTError, match=f"^env S3FT_CODE_EXEC_ISOLATION={mode}: {mode} is not installed"):
            run_program("assert True\n")
    # installed but not working (as in a container without user namespaces): the error says why
    fake = tmp_path / "bwrap"
    fake.write_text("#!/bin/sh\necho 'bwrap: No permissions to create new namespace' >&2\nexit 1\n")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    fresh_choice.setattr(code_exec, "_bwrap_has_size", lambda: False)
    fresh_choice.setenv("S3FT_CODE_EXEC_ISOLATION", "bwrap")
    with pytest.raises(S3FTError, match="bwrap does not work here \\(bwrap: No permissions to create new namespace\\)"):
        isolation_in_force()


def test_weaker_isolation_comes_only_with_a_warning(fresh_choice, tmp_path):
    fresh_choice.setenv("S3FT_CODE_EXEC_ISOLATION", "none")
    with pytest.warns(RuntimeWarning, match="S3FT_CODE_EXEC_ISOLATION=none: .*network is NOT blocked"):
        assert isolation_in_force() == "rlimits only (network NOT blocked)"
    # unset and no sandbox available: falls back to rlimits only, but says so
    fresh_choice.delenv("S3FT_CODE_EXEC_ISOLATION")
    fresh_choice.setenv("PATH", str(tmp_path))
    with pytest.warns(RuntimeWarning, match="no sandbox works here .*bwrap is not installed.*network is NOT blocked"):
        assert judge("assert True\n").passed
    assert isolation_in_force() == "rlimits only (network NOT blocked)"


@pytest.fixture(params=["bwrap", "unshare", "none"])
def mode(request, monkeypatch):
    """Each sandbox that runs here, forced through S3FT_CODE_EXEC_ISOLATION, so that the
    weaker ones are tested even where bubblewrap exists."""
    monkeypatch.setenv("S3FT_CODE_EXEC_ISOLATION", request.param)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            isolation_in_force()
    except S3FTError as e:
        pytest.skip(str(e))
    return request.param


def test_correct_program_passes():
    assert judge("def f(x):\n    return x + 1\n\nassert f(1) == 2\n") == ExecResult(True, "passed")
    # stdlib imports, classes, __main__ guard, prints and threads all work
    prog = ("import collections, heapq, re, threading\nclass A: pass\nprint('hi')\n"
            "t = threading.Thread(target=lambda: None); t.start(); t.join()\n"
            "if __name__ == '__main__':\n    assert heapq.nsmallest(1, [3, 1]) == [1]\n")
    assert judge(prog).passed
    # the network prelude must not break imports or local-only uses of sockets
    prog = ("import asyncio, http.client, socket, ssl, subprocess, urllib.request, multiprocessing\n"
            "async def double(x):\n    return 2 * x\nassert asyncio.run(double(2)) == 4\n")
    assert judge(prog).passed


def test_failing_assert_syntax_error_and_exception():
    result = assert_fails("def f(x):\n    return x\nassert f(1) == 2, 'f(1) should be 2'\n", "assert")
    assert result.reason == "failed assertion: f(1) should be 2"
    assert "f(1) == 2" in result.stderr_tail  # traceback shows the program's line
    assert 'File "program.py", line 3' in result.stderr_tail and "sandbox_child" not in result.stderr_tail
    assert_fails("def f(x:\n    return x\n", "syntax error")
    assert_fails("    x = 1\n", "syntax error")  # IndentationError
    assert_fails("x = 1\0\n", "syntax error")
    assert judge("raise KeyError('k')\n").reason == "exception: KeyError: 'k'"


def test_workdir_env_and_cleanup():
    prog = ("import os, sys, tempfile\ncwd = os.getcwd()\n"
            "assert os.environ['HOME'] == os.environ['TMPDIR'] == cwd\n"
            "assert tempfile.gettempdir() == cwd\nopen('scratch.txt', 'w').write('ok')\n"
            "os.rename('scratch.txt', 'moved.txt')\nos.remove('moved.txt')\n"
            "with tempfile.NamedTemporaryFile('w') as f:\n    f.write('x')\n"
            "import shutil\nos.makedirs('d/e')\nopen('d/e/f', 'w').close()\nshutil.rmtree('d')\n"
            "assert os.listdir('.') == []\nsys.stderr.write('CWD=' + cwd)\n")
    result = judge(prog)
    assert result.passed, result
    workdir = result.stderr_tail.split("CWD=")[1]
    assert not os.path.exists(workdir)  # the temporary directory was deleted


def test_infinite_loops_time_out():
    assert judge("while True:\n    pass\n").reason == "timeout"
    assert judge("import time\nwhile True:\n    time.sleep(1)\n").reason == "timeout"  # wall clock, no CPU


def test_fork_bomb():
    assert_fails("import os\nwhile True:\n    os.fork()\n", "PermissionError", "killed")
    assert_fails("import subprocess, sys\nwhile True:\n    subprocess.Popen([sys.executable, '-c', 'pass'])\n",
                 "PermissionError", "killed")
    assert_fails("import multiprocessing as mp\nwhile True:\n    mp.Process(target=print).start()\n",
                 "PermissionError", "ImportError", "killed")
    assert_fails("import os\nos.system('sleep 100 &')\n", "PermissionError")


def test_memory_bomb():
    assert_fails("x = bytearray(10 ** 11)\n", "MemoryError", "killed")
    assert_fails("xs = []\nwhile True:\n    xs.append(' ' * 10 ** 6)\n", "MemoryError", "killed", memory_mb=256)


def test_cannot_delete_create_or_overwrite_files_outside_workdir(mode, tmp_path):
    victim, new = tmp_path / "victim.txt", tmp_path / "new"
    victim.write_text("precious")
    before = victim.stat().st_mtime_ns
    for attack in (f"import os\nos.remove({str(victim)!r})\n",
                   f"import os\nos.unlink({str(victim)!r})\n",
                   f"import pathlib\npathlib.Path({str(victim)!r}).unlink()\n",
                   f"import shutil\nshutil.rmtree({str(tmp_path)!r})\n",
                   f"import os\nos.rename({str(victim)!r}, 'stolen.txt')\n",
                   f"open({str(victim)!r}, 'w').write('overwritten')\n",
                   f"import os\nos.truncate({str(victim)!r}, 0)\n",
                   f"import os\nos.symlink({str(victim)!r}, 'link')\nopen('link', 'w').write('overwritten')\n",
                   f"import os\nos.link({str(victim)!r}, 'hard')\nopen('hard', 'w').write('overwritten')\n",
                   f"import _io\n_io.FileIO({str(new)!r}, 'w').write(b'x')\n",
                   f"import io\nio.FileIO({str(new)!r}, 'x')\n",
                   f"import _io\n_io.open({str(victim)!r}, 'w').write('overwritten')\n",
                   f"import _io, os\nos.ftruncate(_io.FileIO({str(victim)!r}, 'r+').fileno(), 0)\n",
                   f"import io, os\nos.truncate(io.FileIO({str(victim)!r}, 'a').fileno(), 0)\n",
                   f"import os\nos.close(os.open({str(new)!r}, os.O_WRONLY | os.O_CREAT))\n",
                   f"import os\nos.close(os.open({str(victim)!r}, os.O_RDWR | os.O_TRUNC))\n",
                   f"import os\nos.mkdir({str(new)!r})\n",
                   f"import os\nos.symlink('/etc/passwd', {str(new)!r})\n",
                   f"import os\nos.mkfifo({str(new)!r})\n",
                   f"import os\nos.utime({str(victim)!r}, (0, 0))\n"):
        assert_fails(attack, "PermissionError", "Read-only")
        assert victim.read_text() == "precious" and victim.stat().st_mtime_ns == before, attack
        assert sorted(os.listdir(tmp_path)) == ["victim.txt"], attack
    # /dev is open for /dev/null and friends, but not for files in the host's shared memory
    shm = Path("/dev/shm") / f"s3ft-test-{os.getpid()}"
    judge(f"open({str(shm)!r}, 'w').write('x')\n")
    assert not shm.exists()


def test_no_network(tmp_path):
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    server.settimeout(0.3)
    port = server.getsockname()[1]
    attacks = [f"import socket\ns = socket.create_connection(('127.0.0.1', {port}), timeout=2)\ns.sendall(b'hi')\n"]
    if NAMESPACED:  # bypass the prelude: only the namespace stands in the way
        attacks.append(f"import _socket\ns = _socket.socket.__mro__[1]()\ns.settimeout(2)\n"
                       f"s.connect(('127.0.0.1', {port}))\ns.sendall(b'hi')\n")
    try:
        for attack in attacks:
            assert_fails(attack, "PermissionError", "ConnectionRefused", "unreachable", "OSError")
            try:
                conn, _ = server.accept()
                conn.close()
                raise AssertionError(f"the program reached the host's server: {attack}")
            except socket.timeout:
                pass
    finally:
        server.close()


def test_cannot_kill_the_parent():
    assert_fails("import os\nos.kill(os.getppid(), 9)\n", "PermissionError")
    assert_fails("import os, signal\nos.killpg(os.getpgid(os.getppid()), signal.SIGKILL)\n", "PermissionError")
    assert_fails("import os\nos.kill(-1, 9)\n", "PermissionError")
    assert os.getpid() > 0 and judge("assert True\n").passed  # we are still here, and so is the judge


def test_no_process_outlives_the_judge(mode):
    """A daemon started through ctypes (fork, setsid, fork) leaves the process group, so a
    process-group kill misses it; it must still be gone when the judge returns."""
    name = f"s3ftd{mode[:3]}{os.getpid() % 100000}"
    prog = ("import os, sys\n"
            "for m in ('ctypes', '_ctypes'):\n    sys.modules.pop(m, None)  # undo the prelude's block\n"
            "import ctypes\nlibc = ctypes.CDLL(None)\nr, w = os.pipe()\n"
            "if libc.fork() == 0:\n    libc.setsid()\n"
            "    if libc.fork() == 0:\n"
            f"        libc.prctl(15, {name.encode()!r}, 0, 0, 0)  # PR_SET_NAME\n"
            "        libc.write(w, b'x', 1)\n        libc.sleep(60)\n"
            "    libc._exit(0)\n"
            "assert os.read(r, 1) == b'x'  # the daemon is up and named\n")

    def alive() -> list[int]:
        pids = []
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                comm = Path(f"/proc/{pid}/comm").read_text().strip()
                state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            if comm == name and state not in "ZX":  # a zombie is dead, only not yet reaped
                pids.append(int(pid))
        return pids

    try:
        assert judge(prog).passed
        assert alive() == []
    finally:
        for pid in alive():
            os.kill(pid, 9)


def test_the_judges_environment_never_reaches_a_verdict(mode):
    """Programs get a minimal environment, and whatever they find of the judge's own (here
    through /proc/<pid>/environ) is not echoed by the reason, which runs save to disk."""
    secret = f"s3cr3t-{os.urandom(8).hex()}"
    spy = ("import os, sys\nfound = [repr(dict(os.environ))]\n"
           "for pid in filter(str.isdigit, os.listdir('/proc')):\n"
           "    try:\n        data = open('/proc/%s/environ' % pid, 'rb').read()\n"
           "    except OSError:\n        continue\n"
           "    found += [v.decode() for v in data.split(b'\\0') if v.startswith(b'S3FT_TEST_SECRET=')]\n"
           "sys.stderr.write(' '.join(found))\nraise Exception(' '.join(reversed(found)))\n")
    runner = ("import json, sys\nfrom s3ft.judges.code_exec import run_program\n"
              "r = run_program(sys.stdin.read(), timeout_s=5)\nprint(json.dumps([r.reason, r.stderr_tail]))\n")
    env = {**os.environ, "S3FT_TEST_SECRET": secret, "S3FT_CODE_EXEC_ISOLATION": mode,
           "PYTHONPATH": str(Path(code_exec.__file__).parents[2])}
    out = subprocess.run([sys.executable, "-c", runner], input=spy, env=env, capture_output=True, text=True,
                         timeout=60, check=True)
    reason, stderr_tail = json.loads(out.stdout)
    assert reason.startswith("exception: Exception: "), reason
    assert secret not in reason and secret not in stderr_tail, (reason, stderr_tail)
    child_env = eval(stderr_tail[:stderr_tail.index("}") + 1])
    assert not set(child_env) & {"S3FT_TEST_SECRET", "PYTHONPATH", "S3FT_CODE_EXEC_ISOLATION"}, child_env


def test_early_exit_is_not_a_pass():
    for exit_call in ("import sys\nsys.exit(0)", "import os\nos._exit(0)", "exit()", "raise SystemExit"):
        result = assert_fails(exit_call + "\nassert False, 'tests never ran'\n", "exited before tests finished")
        assert "tests never ran" not in result.reason


LIARS = """
class Int(int):  # the known reward hack: an int that equals everything
    def __eq__(self, other):
        return True
    def __ne__(self, other):
        return True
    __hash__ = int.__hash__
class Str(str):
    def __eq__(self, other):
        return 1  # truthy, but not a bool
    __hash__ = str.__hash__
class AlwaysEqual:
    def __eq__(self, other):
        return True
    def __ne__(self, other):
        return False
    __hash__ = object.__hash__
"""


@pytest.mark.parametrize("test", [
    "assert Int(0) == 2",
    "assert 2 == Int(0)",
    "assert Int(0) != 0",
    "assert [Int(0), 1] == [2, 1]",
    "assert (Int(0), 'x') == (2, 'x')",
    "assert {'k': Int(0)} == {'k': 2}",
    "assert {type('Hash2', (Int,), {'__hash__': lambda self: hash(2)})(0)} == {2}",
    "assert Str('a') == 'b'",
    "assert AlwaysEqual() == 2",
    "assert AlwaysEqual() == [1, 2]",
    "assert not (AlwaysEqual() != 'x')",
    "def check(candidate):\n    assert candidate(1) == 2, 'HumanEval style'\ncheck(lambda x: Int(0))",
])
def test_objects_whose_equality_lies_do_not_pass(test):
    assert_fails(LIARS + test + "\n", "failed assertion")


def test_honest_values_of_other_types_still_compare_as_python_does():
    prog = LIARS + """
import collections, enum, fractions, decimal
Pair = collections.namedtuple('Pair', 'a b')
assert Pair(1, 2) == (1, 2) and (1, 2) == Pair(1, 2)
assert collections.OrderedDict(a=1, b=2) == {'b': 2, 'a': 1}
assert collections.defaultdict(int, a=1) == {'a': 1} and collections.Counter('aab') == {'a': 2, 'b': 1}
assert True == 1 and 1 == True and 2.0 == 2 and 1 != 2 and [1, [2.0]] == [1, [2]] and {1: 'a'} != {1: 'b'}
class Color(enum.IntEnum):
    RED = 1
assert Color.RED == 1 and fractions.Fraction(1, 2) == 0.5 and decimal.Decimal(3) == 3
nan = float('nan')
assert nan != nan and not (nan == nan)
class P:  # a class of the program's own, compared with its own kind
    def __init__(self, x):
        self.x = x
    def __eq__(self, other):
        return isinstance(other, P) and self.x == other.x
assert P(1) == P(1) and P(1) != P(2) and [P(1)] == [P(1)]
flag = Int(0) == 2  # outside assert statements, Python's rules apply unchanged
assert flag is True
"""
    assert judge(prog).reason == "passed"


def test_numpy_values_compare_as_numpy_does():
    pytest.importorskip("numpy")
    prog = """
import numpy as np
assert np.float64(0.5) == 0.5 and np.int64(3) == 3 and 3 == np.int64(3) and np.int64(3) != 4
assert (np.array([1, 2]) == [1, 2]).all() and not (np.array([1, 2]) != np.array([1, 2])).any()
assert [np.float64(1.5), np.int32(2)] == [1.5, 2]
"""
    assert judge(prog).reason == "passed"


def test_printing_gigabytes():
    assert judge("while True:\n    print('x' * 10 ** 6)\n").reason == "output limit exceeded"
    assert judge("import sys\nwhile True:\n    sys.stderr.write('x' * 10 ** 6)\n").reason == "output limit exceeded"
    # a huge file in the work dir hits RLIMIT_FSIZE too (EFBIG instead of a full disk)
    assert_fails("with open('big.bin', 'wb') as f:\n    while True:\n        f.write(b'x' * 10 ** 6)\n",
                 "File too large")
    # the output budget is configurable; small prints still pass
    assert judge("print('x' * 10)\n", max_output_bytes=1000).passed
    assert judge("print('x' * 2000)\n", max_output_bytes=1000).reason == "output limit exceeded"


def test_deep_recursion():
    assert_fails("def f(n):\n    return f(n + 1)\nf(0)\n", "RecursionError")
    # recursion through C code with the limit lifted overflows the C stack
    assert_fails("import sys\nsys.setrecursionlimit(10 ** 6)\ndef f(n):\n    return list(map(f, [n + 1]))\nf(0)\n",
                 "killed: SIGSEGV", "MemoryError", "RecursionError", "timeout")


def test_batch_mixes_good_and_hostile_in_order():
    good = "def f(x):\n    return x + 1\nassert f(1) == 2\n"
    batch = [
        (good, "passed"),
        ("while True:\n    pass\n", "timeout"),
        ("import os\nwhile True:\n    os.fork()\n", "exception: PermissionError"),
        (good, "passed"),
        ("x = bytearray(10 ** 11)\n", "exception: MemoryError"),
        ("import os\nos.kill(os.getppid(), 9)\n", "exception: PermissionError"),
        ("import sys\nsys.exit(0)\nassert False\n", "exited before tests finished"),
        ("while True:\n    print('y' * 10 ** 6)\n", "output limit exceeded"),
        ("assert 1 + 1 == 3\n", "failed assertion"),
        ("def g(:\n", "syntax error"),
        (good, "passed"),
    ]
    seen = []
    start = time.monotonic()
    results = run_programs([p for p, _ in batch], workers=2, timeout_s=T,
                           progress=lambda done, total: seen.append((done, total)))
    assert time.monotonic() - start < 2 * T + 10
    assert [r.reason.startswith(want) for r, (_, want) in zip(results, batch)] == [True] * len(batch), results
    assert [r.passed for r in results] == [want == "passed" for _, want in batch]
    assert seen == [(i, len(batch)) for i in range(1, len(batch) + 1)]
    assert run_programs([]) == []


def test_extract_code():
    assert extract_code("Sure!\n```python\ndef f():\n    return 1\n```\nDone.") == "def f():\n    return 1"
    # the first python block wins over an earlier non-python block and later python blocks
    text = "```bash\npip install x\n```\n```py\na = 1\n```\n```python\nb = 2\n```"
    assert extract_code(text) == "a = 1"
    assert extract_code("```Python3\nx = 1\n```") == "x = 1"
    # no python block: the first fenced block
    assert extract_code("```\nx = 1\n```\n```text\nhello\n```") == "x = 1"
    # empty blocks are skipped; CRLF is normalised; an unterminated fence runs to the end
    assert extract_code("```python\n\n```\n```python\nreal = 1\n```") == "real = 1"
    assert extract_code("```python\r\nx = 1\r\n```\r\n") == "x = 1"
    assert extract_code("```python\ndef f():\n    return 2\n") == "def f():\n    return 2"
    # MBPP style, with and without quotes, with [DONE] cut off by a stop sequence
    assert extract_code("[BEGIN]\n 'def f(a):\n  return a' \n[DONE]") == "def f(a):\n  return a"
    assert extract_code("[BEGIN]\ndef f(a):\n    return a\n[DONE]") == "def f(a):\n    return a"
    assert extract_code("[BEGIN]\ndef f(a):\n    return a\n") == "def f(a):\n    return a"
    assert extract_code("[BEGIN]\n'''doc'''\nx = 1\n'''end'''\n[DONE]") == "'''doc'''\nx = 1\n'''end'''"
    # nothing code-like
    assert extract_code("The answer is 42.") is None
    assert extract_code("") is None
    assert extract_code("use ``` inline ``` only") is None
    assert extract_code("[BEGIN]\n[DONE]") is None


def test_programs_do_not_see_the_judges_package_on_their_path(mode):
    """The child runs as a file from s3ft/judges, whose code.py and math.py would shadow the stdlib's
    if that folder were on the program's sys.path."""
    assert judge("import code, math, sys\nassert hasattr(code, 'interact') and math.sqrt(4) == 2\n"
                 "assert not any(p.endswith('judges') for p in sys.path), sys.path\n").passed
    assert_fails("import qa\n", "exception: ModuleNotFoundError: No module named 'qa'")


def test_strict_asserts_rewrites_comparisons_inside_asserts_only():
    import ast

    from s3ft.judges import sandbox_child  # importing the child's module runs nothing
    tree = sandbox_child.strict_asserts(ast.parse("assert f(x) == 2 and y != 3\nz = a == b\nassert a < b\n"))
    calls = [n.func.id for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)]
    assert sorted(calls) == ["__s3ft_eq__", "__s3ft_ne__", "f"]
    assert ast.unparse(tree.body[1]) == "z = a == b" and ast.unparse(tree.body[2]) == "assert a < b"
    assert Path(code_exec.CHILD) == Path(sandbox_child.__file__)  # the file the judge runs
