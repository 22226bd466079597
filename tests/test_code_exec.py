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
from s3ft.judges.code_exec import ExecResult, Program, extract_code, isolation_in_force, run_program, run_programs

T = 3.0  # per-program timeout used throughout
NAMESPACED = not isolation_in_force().startswith("rlimits only")


def judge(program: Program | str, **kwargs) -> ExecResult:
    start = time.monotonic()
    result = run_program(program, timeout_s=T, **kwargs)
    assert time.monotonic() - start < T + 5, "the judge itself must be bounded by the timeout"
    return result


def assert_fails(program: Program | str, *reason_parts: str, **kwargs) -> ExecResult:
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


def test_weaker_isolation_needs_an_explicit_opt_in_that_says_what_is_weaker(fresh_choice, tmp_path):
    fresh_choice.setenv("S3FT_CODE_EXEC_ISOLATION", "none")
    with pytest.warns(RuntimeWarning, match="S3FT_CODE_EXEC_ISOLATION=none: .*network is NOT blocked.*files"):
        assert isolation_in_force() == "rlimits only (network NOT blocked)"
    # unset and no bubblewrap: an error that names both opt-ins and what each gives up, never a silent fallback
    fresh_choice.delenv("S3FT_CODE_EXEC_ISOLATION")
    fresh_choice.setenv("PATH", str(tmp_path))
    with pytest.raises(S3FTError) as err:
        judge("assert True\n")
    message = str(err.value)
    assert "bwrap is not installed (apt-get install -y bubblewrap)" in message and "\n" not in message
    assert "S3FT_CODE_EXEC_ISOLATION=unshare (no network" in message and "/dev/shm" in message
    assert "S3FT_CODE_EXEC_ISOLATION=none (rlimits only: the network is NOT blocked" in message


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
    result = assert_fails(Program("def f(x):\n    return x\n", ("assert f(2) == 2", "assert f(1) == 2, 'f(1) should be 2'")),
                          "assert")
    assert result.reason == "failed assertion (tests.py line 2): f(1) should be 2"
    assert judge(Program("def f(x):\n    return x\n", ("assert f(2) == 2",))).reason == "passed"
    assert_fails("def f(x:\n    return x\n", "syntax error (program.py line 1)")
    assert_fails("    x = 1\n", "syntax error")  # IndentationError
    assert_fails("x = 1\0\n", "syntax error")
    assert judge("raise KeyError('k')\n").reason == "exception while loading: KeyError (program.py line 1): 'k'"
    # raised in a call from the tests: kind and both locations
    reason = judge(Program("def f(x):\n    return {}[x]\n", ("assert f(1) == 2",))).reason
    assert reason == "exception (called from tests.py line 1): KeyError (program.py line 2): 1"
    # a test may expect the program's exception, by its builtin class
    assert judge(Program("def f(x):\n    raise ValueError(x)\n",
                         ("try:\n    f(1)\n    raise AssertionError('no error')\nexcept ValueError:\n    pass",))).passed


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
        assert_fails(attack, "PermissionError", "Read-only", "FileNotFoundError")
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
    assert reason.startswith("exception while loading: Exception (program.py line 10)"), reason
    assert secret not in reason and secret not in stderr_tail, (reason, stderr_tail)
    child_env = eval(stderr_tail[:stderr_tail.index("}") + 1])
    assert not set(child_env) & {"S3FT_TEST_SECRET", "PYTHONPATH", "S3FT_CODE_EXEC_ISOLATION"}, child_env


def test_early_exit_is_not_a_pass():
    for exit_call in ("import sys\nsys.exit(0)", "import os\nos._exit(0)", "exit()", "raise SystemExit",
                      "def f(x):\n    import os\n    os._exit(0)"):
        result = assert_fails(Program(exit_call + "\n", ("assert f(1) is None", "assert False, 'tests never ran'")),
                              "exited before tests finished")
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


@pytest.mark.parametrize("returned, test", [
    ("Int(0)", "assert f() == 2"),
    ("Int(0)", "assert 2 == f()"),
    ("Int(0)", "assert f() != 0"),
    ("[Int(0), 1]", "assert f() == [2, 1]"),
    ("(Int(0), 'x')", "assert f() == (2, 'x')"),
    ("{'k': Int(0)}", "assert f() == {'k': 2}"),
    ("{type('Hash2', (Int,), {'__hash__': lambda self: hash(2)})(0)}", "assert f() == {2}"),
    ("Str('a')", "assert f() == 'b'"),
    ("AlwaysEqual()", "assert f() == 2"),
    ("AlwaysEqual()", "assert f() == [1, 2]"),
    ("AlwaysEqual()", "assert not (f() != 'x')"),
    ("AlwaysEqual()", "assert f()"),
    ("AlwaysEqual()", "assert abs(f() - 2) < 1e-9"),
    ("AlwaysEqual()", "assert f() in [2]"),
    ("Int(0)", "def check(candidate):\n    assert candidate() == 2, 'HumanEval style'\ncheck(f)"),
])
def test_objects_whose_equality_lies_do_not_pass(returned, test):
    assert_fails(Program(LIARS + f"def f():\n    return {returned}\n", (test,)), "not plain data", "failed assertion")


def test_mock_any_does_not_pass():
    """unittest.mock.ANY equals everything; it is no builtin type, so it never reaches a comparison."""
    code = "from unittest import mock\ndef f(x):\n    return mock.ANY\n"
    for test in ("assert f(1) == 2", "assert [f(1)] == [2]", "assert f(1) == f(2) == 3"):
        assert_fails(Program(code, (test,)), "not plain data")
    assert_fails(Program(code.replace("mock.ANY", "[mock.ANY]"), ("assert f(1) == [2]",)), "not plain data")


def test_a_class_that_claims_to_be_builtin_does_not_pass():
    code = ("class int(int):\n    __module__ = 'builtins'\n    __qualname__ = 'int'\n"
            "    def __eq__(self, other):\n        return True\n    __hash__ = object.__hash__\n"
            "def f(x):\n    return int(0)\n")
    assert_fails(Program(code, ("assert f(1) == 2",)), "not plain data")
    assert_fails(Program(code, ("assert f(1) + 2 == 4",)), "not plain data")


def test_rebinding_builtins_in_the_program_does_not_pass():
    """What the program rebinds lives in its own process: the tests compare in the judge's."""
    code = ("import builtins, operator\n"
            "for name in ('__s3ft_eq__', '__s3ft_ne__', 'isinstance', 'repr', 'AssertionError', 'abs'):\n"
            "    setattr(builtins, name, lambda *a, **k: True)\n"
            "operator.eq = lambda a, b: True\n"
            "def f(x):\n    return x\n")
    assert_fails(Program(code, ("assert f(1) == 2",)), "failed assertion")
    assert_fails(Program(code, ("assert len(f([1])) == 2",)), "failed assertion")
    # rebinding what the child's own loop uses breaks only the program's answers
    for name in ("type", "len", "str"):
        broken = f"import builtins\nbuiltins.{name} = lambda *a: True\ndef f(x):\n    return x\n"
        assert_fails(Program(broken, ("assert f(1) == 2",)), "failed assertion", "protocol error", "exception")


def test_walking_frames_to_forge_completion_does_not_pass():
    """The program finds the child's reply channel through sys._getframe and answers for the judge
    (ready, names, results): the judge still runs every test itself and sees the lie."""
    forge = ("import sys, os\nframe = sys._getframe()\n"
             "while frame is not None and 'reply' not in frame.f_locals:\n    frame = frame.f_back\n"
             "reply = frame.f_locals['reply']\n"
             "for msg in (b\"('ready',('f',('H',0),))\", b\"('ok',True,())\", b\"('passed',)\", b\"('ok',True,())\"):\n"
             "    reply(msg)\n"
             "def f(x):\n    return x\n")
    for end in ("os._exit(0)\n", "sys.exit(0)\n", "pass\n"):
        assert_fails(Program(forge + end, ("assert f(1) == 2", "assert f(3) == 4")),
                     "exited before tests finished", "failed assertion", "protocol error", "not plain data")


def test_the_program_never_sees_the_tests():
    """The tests stay in the judge's process: nothing in the child holds their text or expected values."""
    spy = ("import gc\n"
           "def f(x):\n"
           "    return sum(1 for o in gc.get_objects() if type(o) in (str, bytes) and '98765' in str(o))\n")
    assert judge(Program(spy, ("assert f(1) == 0  # 98765",))).passed


def test_honest_values_of_builtin_types_compare_as_python_does():
    prog = """
import collections
def f(kind):
    return {
        'od': collections.OrderedDict(b=2, a=1), 'dd': collections.defaultdict(int, a=1),
        'counter': collections.Counter('aab'), 'deque': collections.deque([1, 2]),
        'nested': [1, (2.0, {3}), {'k': [True, None, b'x', 1j]}], 'nan': float('nan'), 'inf': float('-inf'),
        'big': 10 ** 100, 'frozen': frozenset({1}), 'text': 'caf\\u00e9 \\n \\'"',
    }[kind]
def g(xs):
    xs.append(4)
    xs.sort()
"""
    tests = ("assert f('od') == {'a': 1, 'b': 2} and f('dd') == {'a': 1} and f('counter') == {'a': 2, 'b': 1}",
             "assert f('deque') == [1, 2] and f('nested') == [1, (2, {3}), {'k': [1, None, b'x', 1j]}]",
             "nan = f('nan')\nassert nan != nan and f('inf') == float('-inf') and f('big') == 10 ** 100",
             "assert f('frozen') == {1} and f('text') == 'caf\\u00e9 \\n \\'\"'",
             "xs = [3, 1]\ng(xs)\nassert xs == [1, 3, 4]  # in-place changes to a list argument are seen")
    assert judge(Program(prog, tests)).reason == "passed"


def test_values_of_other_types_are_not_plain_data():
    """A namedtuple, a numpy scalar or an IntEnum is no builtin type: comparing one fails, even when
    honest; solutions return builtin values (MBPP's 500 reference solutions all do)."""
    prog = "import collections\nPair = collections.namedtuple('Pair', 'a b')\ndef f():\n    return Pair(1, 2)\n"
    assert_fails(Program(prog, ("assert f() == (1, 2)",)), "not plain data")
    # but the program's objects can be built, changed, passed back and called by the tests
    prog = ("class Node:\n    def __init__(self, v):\n        self.v, self.left = v, None\n"
            "def depth(n):\n    return 0 if n is None else 1 + depth(n.left)\n")
    assert judge(Program(prog, ("root = Node(1)\nroot.left = Node(2)\nassert depth(root) == 2 and root.left.v == 2",))
                 ).passed


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
        ("import os\nwhile True:\n    os.fork()\n", "exception while loading: PermissionError"),
        (good, "passed"),
        ("x = bytearray(10 ** 11)\n", "exception while loading: MemoryError"),
        ("import os\nos.kill(os.getppid(), 9)\n", "exception while loading: PermissionError"),
        ("import sys\nsys.exit(0)\nassert False\n", "exited before tests finished"),
        ("while True:\n    print('y' * 10 ** 6)\n", "output limit exceeded"),
        (Program("x = 1\n", ("assert x + 1 == 3",)), "failed assertion"),
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
    assert_fails("import qa\n", "exception while loading: ModuleNotFoundError (program.py line 1): No module named 'qa'")


def test_the_child_encodes_builtin_types_only():
    import ast

    from s3ft.judges import sandbox_child  # importing the child's module runs nothing
    codec = sandbox_child.Codec()
    class Int(int):
        pass
    text = codec.encode([1, 2.5, "x", (None, True), {1: b"y"}, {3}, Int(4)])
    assert ast.literal_eval(text) == ("L", 1, ("f", (2.5).hex()), "x", ("T", None, True), ("D", 1, b"y"), ("S", 3),
                                      ("H", 0))
    assert codec.objects == [Int(4)] and type(codec.objects[0]) is Int
    assert Path(code_exec.CHILD) == Path(sandbox_child.__file__)  # the file the judge runs


def test_base_class_fileio_and_shared_memory_fail_in_the_default_mode(fresh_choice, tmp_path):
    """The prelude guards io.FileIO, but `_io.FileIO.__mro__[1]` is the unguarded base class, and
    `_posixshmem` creates files in /dev/shm: without an opt-in the sandbox itself stops both."""
    fresh_choice.delenv("S3FT_CODE_EXEC_ISOLATION", raising=False)
    hidden, visible = tmp_path / "fileio.txt", Path(sys.prefix) / f"s3ft-test-{os.getpid()}.txt"
    for target in (hidden, visible):
        assert_fails(f"import _io\n_io.FileIO.__mro__[1]({str(target)!r}, 'w').write(b'x')\n",
                     "FileNotFoundError", "OSError")
        assert not target.exists()
    name = f"/s3ft-test-{os.getpid()}"
    assert_fails(f"import _posixshmem, os\nfd = _posixshmem.shm_open({name!r}, os.O_CREAT | os.O_RDWR, 0o600)\n"
                 "os.write(fd, b'x')\n", "OSError", "PermissionError")
    assert not Path("/dev/shm" + name).exists()


def test_the_home_directory_and_other_private_paths_are_not_visible_under_bwrap(fresh_choice, tmp_path):
    """Only system directories and the Python install are there; of a home directory that holds
    the Python install (pyenv, uv), only the path down to it."""
    fresh_choice.delenv("S3FT_CODE_EXEC_ISOLATION", raising=False)
    (tmp_path / "secret.txt").write_text("private")
    home = os.path.realpath(os.path.expanduser("~"))
    private = [str(tmp_path), home, "/root", "/home", "/work", "/mnt", "/var/tmp", "/run/user"]
    visible = [*code_exec._visible_paths(), code_exec.CHILD]  # and the child program itself
    allowed = {p: sorted({Path(v).relative_to(p).parts[0] for v in visible if v.startswith(p.rstrip("/") + "/")})
               for p in private}
    code = "import os\ndef ls(p):\n    return sorted(os.listdir(p)) if os.path.isdir(p) else []\n"
    tests = tuple(f"assert ls({p!r}) == {want!r}" for p, want in allowed.items())
    assert judge(Program(code, tests)).passed
    assert not any(p.startswith(str(tmp_path)) for p in visible)
