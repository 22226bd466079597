"""The code judge's child: runs one model-written program and answers the judge's calls into it.

The judge (`s3ft.judges.code_exec`) executes this file as `python -I sandbox_child.py <request fd> <reply fd>`,
inside bubblewrap (or unshare, when asked for), with /dev/null on stdin. Messages both ways are
framed as a 4-byte big-endian length and a payload.

1. The judge sends ``marshal((code, names))``; the child runs the code as ``__main__`` behind the
   prelude of `guard()` and replies ``("ready", (name, value, ...))`` with the values of those of
   `names` (the ones the tests use) that the code defined, or how the code ended (`_ended`).
2. The judge then sends requests (`serve`): calls of the program's functions,
   attribute reads and writes on the program's objects, iteration. Each reply carries values only
   as plain data: a value whose type is exactly a builtin one (None, bool, int, float, complex,
   str, bytes, list, tuple, dict, set, frozenset; and a few stdlib containers by exact type,
   read through their builtin base) is written as a tagged literal (`encode`); anything else
   stays here and goes out as an opaque handle ``("H", n)``.

The tests never run here: the judge runs them in its own process, on these plain values, and
decides there whether every test ran and passed. Whatever the program does in this process
(rebinding builtins, walking frames, writing to the reply fd) changes only what its own
functions answer, never how the answers are compared.

It is run as a file, never imported by the judge: `-I` keeps the judge's environment, user site and
this file's own folder (s3ft/judges, whose `code.py` would shadow the stdlib's) off the program's
`sys.path`. It imports only C/startup modules: json, socket, subprocess... would double the
start-up time. Tests import it to reach its functions; importing it runs nothing.
"""

import builtins, marshal, os, posix, sys, types

_MAX_DEPTH = 60  # deeper values go out as handles; the judge's literal parser allows ~200 brackets
_MAX_ITEMS = 1_000_000  # iteration of a handle stops here


def guard():
    import _io, _posixsubprocess, _socket
    def blocked(name):
        def refuse(*args, **kwargs):
            raise PermissionError(name + " is disabled by the code judge")
        return refuse
    for mod in (os, posix):  # os.kill is posix.kill: patch both names
        for name in ("kill", "killpg", "pidfd_open", "system", "popen", "fork", "forkpty",
                     "posix_spawn", "posix_spawnp", "execv", "execve", "execl", "execle",
                     "execlp", "execlpe", "execvp", "execvpe", "spawnl", "spawnle", "spawnlp",
                     "spawnlpe", "spawnv", "spawnve", "spawnvp", "spawnvpe", "link", "chmod",
                     "fchmod", "lchmod", "chown", "fchown", "lchown", "chroot", "setuid",
                     "setgid", "setreuid", "setresuid", "setsid", "setpgid", "setpgrp"):
            if hasattr(mod, name):
                setattr(mod, name, blocked(mod.__name__ + "." + name))
    # subprocess.Popen binds this when subprocess is imported (after us), multiprocessing
    # looks it up at call time: either way they get the blocked version.
    _posixsubprocess.fork_exec = blocked("subprocess.Popen/_posixsubprocess.fork_exec")
    if "subprocess" in sys.modules:
        sys.modules["subprocess"].Popen = blocked("subprocess.Popen")
    class NoSocket(_socket.socket):  # socket.socket subclasses this and calls its __init__
        __slots__ = ()  # socket.socket adds __weakref__ itself
        def __init__(self, family=-1, type=-1, proto=-1, fileno=None):
            if fileno is None:  # wrapping an fd is fine: asyncio's socketpair() self-pipe
                raise PermissionError("network access is disabled by the code judge")
            super().__init__(family, type, proto, fileno)
    _socket.socket = _socket.SocketType = NoSocket
    for name in ("ctypes", "_ctypes", "resource"):
        sys.modules[name] = None
    guard_files(_io)


def guard_files(_io):
    """Deleting, renaming and writing files is allowed inside the work dir only (tempfile needs
    it). This catches accidents; bubblewrap's read-only mounts are what hold against intent
    (`_io.FileIO.__mro__[1]`, for one, reaches the unguarded base class)."""
    import io
    root = os.path.realpath(os.getcwd()) + os.sep
    def check(path, dir_fd=None, follow=True, dev_ok=False):
        if isinstance(path, int):  # an open fd (ftruncate): the file it is open on
            try:
                path = os.readlink("/proc/self/fd/%d" % path)
            except OSError:
                return  # not open: the call itself fails
            if not path.startswith("/"):
                return  # a pipe or socket
        p = os.fsdecode(path)
        if dir_fd is not None and not os.path.isabs(p):  # shutil.rmtree works with dir_fd
            p = os.path.join(os.readlink("/proc/self/fd/%d" % dir_fd), p)
        p = os.path.abspath(p)
        if dev_ok and p.startswith("/dev/") and not p.startswith(("/dev/shm/", "/dev/mqueue/")):
            return  # /dev/null, /dev/stdout...; shm and mqueue are shared with the host
        # follow: open() goes through symlinks; unlink/rename act on the link itself
        real = os.path.realpath(p) if follow else os.path.join(
            os.path.realpath(os.path.dirname(p)), os.path.basename(p))
        if not (real + os.sep).startswith(root):  # the work dir itself is fine too
            raise PermissionError("changing files outside the work dir is disabled by the code judge: " + real)
    real_os = {n: getattr(os, n) for n in ("remove", "unlink", "rmdir", "mkdir", "mkfifo", "mknod", "utime",
                                           "rename", "replace", "symlink", "truncate", "ftruncate", "open")}
    def one_path(name):  # f(path, ..., dir_fd=None), acting on path itself rather than on a link's target
        def guarded(path, *args, dir_fd=None, **kwargs):
            check(path, dir_fd, follow=False)
            return real_os[name](path, *args, dir_fd=dir_fd, **kwargs)
        return guarded
    def two_paths(name):
        def guarded(src, dst, *, src_dir_fd=None, dst_dir_fd=None):
            check(src, src_dir_fd, follow=False)
            check(dst, dst_dir_fd, follow=False)
            return real_os[name](src, dst, src_dir_fd=src_dir_fd, dst_dir_fd=dst_dir_fd)
        return guarded
    def symlink(src, dst, *args, dir_fd=None):
        check(dst, dir_fd, follow=False)
        return real_os["symlink"](src, dst, *args, dir_fd=dir_fd)
    def truncate(path, length):  # path may be an fd
        check(path)
        return real_os["truncate"](path, length)
    def ftruncate(fd, length):
        check(fd)
        return real_os["ftruncate"](fd, length)
    def os_open(path, flags, mode=0o777, *, dir_fd=None):
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND):
            check(path, dir_fd, dev_ok=True)
        return real_os["open"](path, flags, mode, dir_fd=dir_fd)
    real_open = builtins.open
    def guarded_open(file, mode="r", *args, **kwargs):
        if not isinstance(file, int) and any(c in mode for c in "wax+"):  # an fd was checked when opened
            check(file, dev_ok=True)
        return real_open(file, mode, *args, **kwargs)
    class FileIO(_io.FileIO):  # io.FileIO opens files itself, not through open()
        def __init__(self, file, mode="r", closefd=True, opener=None):
            if not isinstance(file, int) and any(c in mode for c in "wax+"):
                check(file, dev_ok=True)
            super().__init__(file, mode, closefd, opener)
    for mod in (os, posix):
        for name in ("remove", "unlink", "rmdir", "mkdir", "mkfifo", "mknod", "utime"):
            setattr(mod, name, one_path(name))
        for name in ("rename", "replace"):
            setattr(mod, name, two_paths(name))
        mod.symlink, mod.truncate, mod.ftruncate, mod.open = symlink, truncate, ftruncate, os_open
    builtins.open = io.open = _io.open = guarded_open
    io.FileIO = _io.FileIO = FileIO


class Codec:
    """Plain data out (tagged Python literals, read by the judge with `ast.literal_eval`), the
    judge's arguments in (`marshal` of the same tagged tree), and the handle table."""

    def __init__(self):
        self.objects = []  # handle n -> the object it stands for
        import _collections
        # Containers of the stdlib, by exact type, read through their builtin base's methods.
        self.as_dict = {_collections.OrderedDict, _collections.defaultdict}
        self.as_list = {_collections.deque}
        try:
            import collections
            self.as_dict.add(collections.Counter)
        except ImportError:
            pass
        self.float_hex, self.int_repr, self.str_repr = float.hex, int.__repr__, str.__repr__

    def handle(self, x):
        self.objects.append(x)
        return "('H',%d)" % (len(self.objects) - 1)

    def encode(self, x, depth=0):
        t = type(x)
        if x is None or t is bool:
            return "True" if x is True else "False" if x is False else "None"
        if t is int:
            try:
                return self.int_repr(x)
            except ValueError:  # more digits than int <-> str allows
                return self.handle(x)
        if t is str:
            return self.str_repr(x)
        if t is bytes:
            return bytes.__repr__(x)
        if t is float:
            return "('f','%s')" % self.float_hex(x)
        if t is complex:
            return "('c','%s','%s')" % (self.float_hex(x.real), self.float_hex(x.imag))
        if depth >= _MAX_DEPTH:
            return self.handle(x)
        tag = {list: "L", tuple: "T", set: "S", frozenset: "F", dict: "D"}.get(t)
        if tag is None and t in self.as_dict:
            tag = "D"
        if tag is None and t in self.as_list:
            tag, x = "L", [*x]
        if tag is None:
            return self.handle(x)
        if tag == "D":
            parts = [self.encode(k, depth + 1) + "," + self.encode(v, depth + 1) for k, v in dict.items(x)]
        else:
            items = {"L": list.__iter__, "T": tuple.__iter__, "S": set.__iter__, "F": frozenset.__iter__}[tag](x)
            parts = [self.encode(v, depth + 1) for v in items]
        return "('%s',%s)" % (tag, "".join(p + "," for p in parts))

    def decode(self, x):
        if type(x) is not tuple:
            return x
        tag, rest = x[0], x[1:]
        if tag == "f":
            return float.fromhex(rest[0])
        if tag == "c":
            return complex(float.fromhex(rest[0]), float.fromhex(rest[1]))
        if tag == "H":
            return self.objects[rest[0]]
        items = [self.decode(v) for v in rest]
        if tag == "D":
            return dict(zip(items[::2], items[1::2]))
        return {"L": list, "T": tuple, "S": set, "F": frozenset}[tag](items)


def _where(tb):
    """The last line of the program (`program.py`) in a traceback: where a failure happened."""
    line = 0
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == "program.py":
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def _failure(e):
    """("raise", type name, line, text) for an exception of the program; the judge keeps the name
    only for builtin exceptions, and the text only after redaction and truncation."""
    try:
        return "('raise',%s,%d,%s)" % (str.__repr__(type(e).__name__[:60]), _where(e.__traceback__),
                                       str.__repr__(str(e)[:2000]))
    except BaseException:
        return "('raise','',0,'')"


def serve(codec, namespace, read, reply):
    """Answer the judge's requests until stdin closes. Calls return the result, plus the state
    after the call of each list, dict or set argument (tests read in-place changes)."""
    while True:
        request = read()
        if request is None:
            return
        op, args = request[0], request[1:]
        try:
            if op == "call":
                fn, pos, kw = codec.decode(args[0]), codec.decode(args[1]), codec.decode(args[2])
                result = fn(*pos, **kw)
                changed = "".join("%d,%s," % (i, codec.encode(a)) for i, a in enumerate(pos)
                                  if type(a) in (list, dict, set))
                out = "('ok',%s,%s)" % (codec.encode(result), "(" + changed + ")")
            elif op == "getattr":
                out = "('ok',%s,())" % codec.encode(getattr(codec.decode(args[0]), args[1]))
            elif op == "setattr":
                setattr(codec.decode(args[0]), args[1], codec.decode(args[2]))
                out = "('ok',None,())"
            elif op == "iter":
                items, it = [], iter(codec.decode(args[0]))
                for v in it:
                    items.append(v)
                    if len(items) >= _MAX_ITEMS:
                        break
                out = "('ok',%s,())" % codec.encode(items)
            else:
                out = "('raise','ValueError',0,'unknown request')"
        except MemoryError:
            out = "('raise','MemoryError',0,'')"
        except BaseException as e:
            out = _failure(e)
        reply(out.encode("utf-8", "surrogatepass"))


def names(codec, namespace, wanted):
    """"(name, value, ...)" for the names in `wanted` that `namespace` defines."""
    return "(%s)" % "".join("%s,%s," % (str.__repr__(n), describe(codec, namespace[n]))
                            for n in wanted if type(n) is str and n in namespace)


def describe(codec, value):
    """A name's value for the judge: ('m', module name) for a module, else plain data or a handle."""
    if type(value) is types.ModuleType:
        return "('m',%s)" % str.__repr__(str(value.__name__))
    return codec.encode(value)


def _ended(e):
    if isinstance(e, SystemExit):
        return "('exit',)"
    if isinstance(e, MemoryError):
        return "('raise','MemoryError',0,'')"
    if isinstance(e, (SyntaxError, ValueError)) and getattr(e, "_s3ft_compile", False):
        return "('syntax',%d)" % (getattr(e, "lineno", 0) or 0)
    return _failure(e)


def main():
    request_fd, reply_fd, write, exit_ = int(sys.argv[1]), int(sys.argv[2]), os.write, os._exit
    def read():
        head = _read_exact(request_fd, 4)
        body = None if head is None else _read_exact(request_fd, int.from_bytes(head, "big"))
        return None if body is None else marshal.loads(body)
    def reply(payload):
        data = len(payload).to_bytes(4, "big") + payload
        while data:
            data = data[write(reply_fd, data):]
    code, wanted = read()
    mod = types.ModuleType("__main__")
    mod.__file__ = "program.py"
    sys.modules["__main__"] = mod
    codec = Codec()
    try:
        try:
            compiled = compile(code, "program.py", "exec")
        except (SyntaxError, ValueError) as e:  # ValueError: null bytes (3.11)
            e._s3ft_compile = True
            raise
        guard()
        exec(compiled, mod.__dict__)
        outcome = "('ready',%s)" % names(codec, mod.__dict__, wanted)
    except BaseException as e:
        outcome = _ended(e)
    try:  # the judge may end the process as soon as it has its answers
        sys.stdout.flush()
        sys.stderr.flush()
    except BaseException:
        pass
    reply(outcome.encode("utf-8", "surrogatepass"))
    if outcome.startswith("('ready',"):
        serve(codec, mod.__dict__, read, reply)
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except BaseException:
        pass
    exit_(0)  # skip atexit hooks and non-daemon threads the program may have left


def _read_exact(fd, n):
    buf = b""
    while len(buf) < n:
        chunk = os.read(fd, n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return buf


if __name__ == "__main__":
    main()
