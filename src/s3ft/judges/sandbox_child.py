"""The code judge's child: runs one model-written program and reports how it ended.

The judge (`s3ft.judges.code_exec`) executes this file as `python -I sandbox_child.py <result fd>`,
inside bubblewrap or unshare when they work, with the program on stdin as "<nonce>\n<program>".
It writes "<nonce>\nstatus\ntype\nmsg" to the result fd once the program has run to its end.

It is run as a file, never imported by the judge: `-I` keeps the judge's environment, user site and
this file's own folder (s3ft/judges, whose `code.py` would shadow the stdlib's) off the program's
`sys.path`. It imports only C/startup modules: json, socket, subprocess... would double the
start-up time. Tests import it to reach its functions; importing it runs nothing.
"""

import _ast, builtins, gc, io, os, posix, sys, types

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

    # Deleting, renaming and writing files is allowed inside the work dir only (tempfile
    # needs it), so host files survive even without bwrap's read-only root. shutil.rmtree
    # and shutil.move go through these os functions, so they are covered too.
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

def strict_equality(module):
    """`==` and `!=` for assert statements: computed as Python does and again on the values
    reduced to exact builtin types, where objects of classes the program defined equal
    nothing but each other; if the two answers differ, the assert fails. So an object whose
    __eq__ always says True (an int subclass, or a class of the program's own) does not pass
    `assert f(x) == 2`, while bool, namedtuple, OrderedDict, IntEnum, Fraction, numpy
    scalars and arrays... compare as before."""
    # Bound now, so that a program rebinding builtins cannot change them. The builtin types'
    # own methods read the underlying value, which a subclass cannot override.
    type_, bool_, hash_, sub, id_, complex_, frozenset_ = type, bool, hash, issubclass, id, complex, frozenset
    as_int, as_float, as_str, real, imag = int.__int__, float.__float__, str.__str__, complex.real, complex.imag
    items_of = {bytes: bytes.__getitem__, tuple: tuple.__getitem__, list: list.__getitem__}
    everything, dict_items, set_iter, frozenset_iter = slice(None), dict.items, set.__iter__, frozenset.__iter__
    plain = {id_(t) for t in (bool, int, float, complex, str, bytes, type(None))}  # ids: no __eq__ involved
    class Foreign:  # an object of a class the program defined: equal only to another one that says so
        __slots__ = ("obj",)
        def __init__(self, obj):
            self.obj = obj
        def __eq__(self, other):
            return type_(other) is Foreign and bool_(self.obj == other.obj)
        def __hash__(self):
            return hash_(self.obj)
    def view(x):
        t = type_(x)
        if id_(t) in plain:
            return x
        if sub(t, int):
            return as_int(x)
        if sub(t, float):
            return as_float(x)
        if sub(t, complex):
            return complex_(real.__get__(x), imag.__get__(x))
        if sub(t, str):
            return as_str(x)
        if sub(t, bytes):
            return items_of[bytes](x, everything)
        if sub(t, tuple):
            return (*[view(v) for v in items_of[tuple](x, everything)],)
        if sub(t, list):
            return [view(v) for v in items_of[list](x, everything)]
        if sub(t, dict):
            return {view(k): view(v) for k, v in dict_items(x)}
        if sub(t, frozenset):
            return frozenset_([view(v) for v in frozenset_iter(x)])
        if sub(t, set):
            return {view(v) for v in set_iter(x)}
        return Foreign(x) if t.__module__ == module else x
    def checked(op, a, b, said, exact):
        if type_(exact) is not bool_:
            return exact  # numpy's elementwise answer, computed on the exact values
        if bool_(said) is not exact:  # in an assert, a lie fails the test whichever way it points
            raise AssertionError(f"{type_(a).__name__} {op} {type_(b).__name__} says {bool_(said)}, "
                                 f"but the values as builtin types say {exact}")
        return exact
    builtins.__s3ft_eq__ = lambda a, b: checked("==", a, b, a == b, view(a) == view(b))
    builtins.__s3ft_ne__ = lambda a, b: checked("!=", a, b, a != b, view(a) != view(b))

def strict_asserts(tree):
    """Rewrite `a == b` and `a != b` inside assert statements into __s3ft_eq__(a, b) and
    __s3ft_ne__(a, b) (line numbers kept). Iterative: deep programs cannot skip it."""
    names = {_ast.Eq: "__s3ft_eq__", _ast.NotEq: "__s3ft_ne__"}
    todo = [(tree, False)]
    while todo:
        node, inside = todo.pop()
        inside = inside or type(node) is _ast.Assert
        for field in node._fields:
            value = getattr(node, field, None)
            items = value if type(value) is list else [value]
            for i, child in enumerate(items):
                if not isinstance(child, _ast.AST):
                    continue
                if inside and type(child) is _ast.Compare and len(child.ops) == 1 and type(child.ops[0]) in names:
                    call = _ast.Call(_ast.Name(names[type(child.ops[0])], _ast.Load()),
                                     [child.left, child.comparators[0]], [])
                    for new in (call, call.func):
                        for attr in ("lineno", "col_offset", "end_lineno", "end_col_offset"):
                            setattr(new, attr, getattr(child, attr))
                    child = call
                    if items is value:
                        value[i] = child
                    else:
                        setattr(node, field, child)
                todo.append((child, inside))
    return tree

def main():
    result_fd, write, exit_ = int(sys.argv[1]), os.write, os._exit
    nonce, _, src = sys.stdin.buffer.read().partition(b"\n")
    null = os.open(os.devnull, os.O_RDONLY)  # the program must not read the nonce
    os.dup2(null, 0)
    os.close(null)
    src = src.decode("utf-8", "replace")
    try:
        code = compile(strict_asserts(compile(src, "program.py", "exec", _ast.PyCF_ONLY_AST)), "program.py", "exec")
    except (SyntaxError, ValueError) as e:  # ValueError: null bytes (3.11)
        outcome = ("syntax", type(e).__name__, str(e))
    else:
        mod = types.ModuleType("__main__")
        mod.__file__ = "program.py"
        sys.modules["__main__"] = mod
        strict_equality(mod.__name__)
        guard()
        try:
            exec(code, mod.__dict__)
            outcome = ("passed", "", "")
        except SystemExit as e:
            outcome = ("exit", "SystemExit", repr(e.code))
        except MemoryError:
            outcome = ("exception", "MemoryError", "")  # constant: no allocation needed
        except BaseException as e:
            outcome = ("exception", "Exception", "")
            try:
                outcome = ("exception", type(e).__name__, str(e)[:4000])  # the judge redacts, then cuts
                import linecache, traceback  # show the program's lines in the traceback
                linecache.cache["program.py"] = (len(src), None, src.splitlines(True), "program.py")
                traceback.print_exception(type(e), e, e.__traceback__.tb_next)  # its frames, not main()'s
            except BaseException:
                pass
        mod.__dict__.clear()  # free a memory bomb so that reporting can allocate
        gc.collect()
    record = "\n".join((nonce.decode(), *outcome))
    write(result_fd, record.encode("utf-8", "replace"))
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except BaseException:
        pass
    exit_(0)  # skip atexit hooks and non-daemon threads the program may have left


if __name__ == "__main__":
    main()
