"""Registries fill themselves by importing every module of their package once."""

from __future__ import annotations

import importlib
import pkgutil

_done: set[str] = set()


def import_submodules(package: str, path) -> None:
    """Import each module in `package` (its `__path__`), so their `@register_*` decorators run."""
    if package not in _done:
        for mod in pkgutil.iter_modules(path):
            importlib.import_module(f"{package}.{mod.name}")
        _done.add(package)
