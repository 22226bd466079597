"""The judge's side of a program's tests: they run here, in the judge's process, on plain data.

The program (the model's code) runs in a sandboxed child (`sandbox_child.py`); the tests (the
task's own asserts, or HumanEval's `check(candidate)`) run here. Every name a test uses that the
program defines becomes a `Remote`: calling it, reading or setting its attributes or iterating it
asks the child, whose answer is plain data (tagged Python literals, read with
`ast.literal_eval`, so nothing in it can run code or carry a class of the program's) or an
opaque handle for anything else. So `==`, `!=`, `<`... compare builtin values with the builtin
types' own methods, and "every test ran" is known here: no `__eq__`, class-name trick,
rebinding of builtins or frame walk in the child can make a test pass.

A test that needs more of a program's object than calls, attributes and iteration (comparing it,
`len` of it, using it as a number) fails with a TypeError that says the value is not plain data.
"""

from __future__ import annotations

import ast
import builtins
import importlib
import marshal
import os
import select
import sys
import time
from dataclasses import dataclass

MAX_REPLY_BYTES = 16 << 20  # one answer of the program; beyond it the program fails


class Deadline(BaseException):
    """The program's wall-clock time ran out (a BaseException: tests' `except Exception` miss it)."""


class ChildGone(BaseException):
    """The child closed its reply pipe: it exited or was killed."""


class ProtocolError(BaseException):
    """The child answered with something that is not the plain data asked for."""


class TooMuchOutput(BaseException):
    """One answer was larger than MAX_REPLY_BYTES."""


class FromProgram:
    """Marks exceptions raised by the program's code in the child (mixed into a builtin class)."""
    line = 0
    text = ""


_raised_classes: dict[str, type] = {}


def program_exception(name: str, line: int, text: str) -> BaseException:
    """An exception standing for one the program raised: of the builtin class of that name where
    there is one (tests may catch ValueError), else a plain Exception; marked FromProgram."""
    base = getattr(builtins, name, None) if name.isidentifier() else None
    if not (isinstance(base, type) and issubclass(base, Exception)):
        base, name = Exception, ""
    cls = _raised_classes.get(name)
    if cls is None:
        cls = _raised_classes[name] = type(base.__name__, (base, FromProgram), {"kind": name})
    exc = cls.__new__(cls, "raised in the program")
    exc.line, exc.text = line, text
    return exc


@dataclass
class Channel:
    """Framed messages to and from one child, each wait bounded by the program's deadline."""
    request_fd: int
    reply_fd: int
    deadline: float

    def send(self, message: tuple) -> None:
        data = marshal.dumps(message)
        data = len(data).to_bytes(4, "big") + data
        while data:
            if not select.select([], [self.request_fd], [], self._left())[1]:
                raise Deadline
            try:
                data = data[os.write(self.request_fd, data):]
            except BrokenPipeError:
                raise ChildGone from None

    def receive(self):
        size = int.from_bytes(self._read(4), "big")
        if size > MAX_REPLY_BYTES:
            raise TooMuchOutput
        try:
            return ast.literal_eval(self._read(size).decode("utf-8", "surrogatepass"))
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError, UnicodeDecodeError):
            raise ProtocolError from None

    def request(self, message: tuple):
        self.send(message)
        return self.receive()

    def _left(self) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise Deadline
        return left

    def _read(self, n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            if not select.select([self.reply_fd], [], [], self._left())[0]:
                raise Deadline
            chunk = os.read(self.reply_fd, min(n - len(buf), 1 << 20))
            if not chunk:
                raise ChildGone
            buf += chunk
        return bytes(buf)


class Remote:
    """An object of the program's, living in the child. It can be called, have its attributes
    read or set, and be iterated; anything that would need its own methods (==, <, bool, len,
    arithmetic) raises TypeError, so it never passes a comparison."""
    __slots__ = ("_r_channel", "_r_id")

    def __init__(self, channel: Channel, n: int):
        object.__setattr__(self, "_r_channel", channel)
        object.__setattr__(self, "_r_id", n)

    def __call__(self, *args, **kwargs):
        return answer(self._r_channel, ("call", to_tree(self, self._r_channel),
                                        to_tree(args, self._r_channel), to_tree(kwargs, self._r_channel)), args)

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        return answer(self._r_channel, ("getattr", to_tree(self, self._r_channel), name))

    def __setattr__(self, name: str, value) -> None:
        answer(self._r_channel, ("setattr", to_tree(self, self._r_channel), name, to_tree(value, self._r_channel)))

    def __iter__(self):
        return iter(answer(self._r_channel, ("iter", to_tree(self, self._r_channel))))

    def _r_refuse(self, *args):
        raise TypeError("a value the program returned is not plain data (only builtin types compare)")

    __eq__ = __ne__ = __lt__ = __le__ = __gt__ = __ge__ = __bool__ = __len__ = __contains__ = _r_refuse
    __add__ = __radd__ = __sub__ = __rsub__ = __mul__ = __rmul__ = __truediv__ = __mod__ = __abs__ = _r_refuse
    __float__ = __int__ = __index__ = __neg__ = __getitem__ = __round__ = _r_refuse
    __hash__ = object.__hash__

    def __repr__(self) -> str:
        return f"<the program's object #{self._r_id}>"


def to_tree(x, channel: Channel):
    """A test's value as the tagged tree the child decodes; only plain data and Remotes pass."""
    t = type(x)
    if x is None or t in (bool, int, str, bytes):
        return x
    if t is float:
        return ("f", x.hex())
    if t is complex:
        return ("c", x.real.hex(), x.imag.hex())
    if t is Remote and x._r_channel is channel:
        return ("H", x._r_id)
    if t is dict:
        return ("D", *[to_tree(v, channel) for kv in x.items() for v in kv])
    tag = {list: "L", tuple: "T", set: "S", frozenset: "F"}.get(t)
    if tag is None:
        raise TypeError(f"a test passes a {t.__name__} to the program: only plain data and the program's "
                        "own objects can be passed")
    return (tag, *[to_tree(v, channel) for v in x])


def from_tree(x, channel: Channel):
    """The child's answer as values: builtin types only, or Remote handles."""
    t = type(x)
    if x is None or t in (bool, int, float, complex, str, bytes):
        return x
    if t is list:
        return [from_tree(v, channel) for v in x]
    if t is tuple and x and type(x[0]) is str:
        tag, rest = x[0], x[1:]
        try:
            if tag == "f" and len(rest) == 1:
                return float.fromhex(rest[0])
            if tag == "c" and len(rest) == 2:
                return complex(float.fromhex(rest[0]), float.fromhex(rest[1]))
            if tag == "H" and len(rest) == 1 and type(rest[0]) is int:
                return Remote(channel, rest[0])
            items = [from_tree(v, channel) for v in rest]
            if tag == "D" and len(items) % 2 == 0:
                return dict(zip(items[::2], items[1::2]))
            if tag in ("L", "T", "S", "F"):
                return {"L": list, "T": tuple, "S": set, "F": frozenset}[tag](items)
        except (TypeError, ValueError, OverflowError):  # an unhashable key, a bad float
            pass
    raise ProtocolError


def answer(channel: Channel, message: tuple, args: tuple = ()):
    """Send one request; return its value, raise what the program raised. A call's list, dict
    and set arguments take the state they had in the child after the call."""
    reply = channel.request(message)
    if type(reply) is not tuple or not reply:
        raise ProtocolError
    if reply[0] == "raise" and len(reply) == 4:
        _, name, line, text = reply
        raise program_exception(str(name), line if type(line) is int else 0, str(text))
    if reply[0] != "ok" or len(reply) != 3 or type(reply[2]) is not tuple:
        raise ProtocolError
    changed = reply[2]
    for i, state in zip(changed[::2], changed[1::2]):
        if type(i) is int and 0 <= i < len(args):
            _write_back(args[i], from_tree(state, channel))
    return from_tree(reply[1], channel)


def _write_back(old, new) -> None:
    if type(old) is list and type(new) is list:
        old[:] = new
    elif type(old) in (dict, set) and type(new) is type(old):
        old.clear()
        old.update(new)


def names_used(tests_tree: ast.AST) -> tuple[str, ...]:
    """Every name the tests read: the ones the child is asked for once the code has run."""
    return tuple(sorted({n.id for n in ast.walk(tests_tree) if isinstance(n, ast.Name)}))


def bind_names(channel: Channel, wanted: tuple[str, ...], values) -> dict:
    """The tests' namespace: each name they use that the program defines, as plain data or a
    Remote; a module the program imported is imported here too when it is in the stdlib."""
    if type(values) is not tuple or len(values) % 2:
        raise ProtocolError
    namespace = {"__name__": "__main__", "__builtins__": builtins}
    for name, value in zip(values[::2], values[1::2]):
        if name not in wanted:
            raise ProtocolError
        if type(value) is tuple and len(value) == 2 and value[0] == "m":
            module = str(value[1])
            if module.partition(".")[0] in sys.stdlib_module_names:
                namespace[name] = importlib.import_module(module)
            continue
        namespace[name] = from_tree(value, channel)
    return namespace
