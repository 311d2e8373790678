"""Lazy exports: a package's curated names, imported from their modules on first use (PEP 562).

`edgecut.cut` and `edgecut.server.mtl` export a few names whose modules import torch. Importing
those modules eagerly in `__init__` would load torch for every light command that only reads a task
spec or registers a CLI option (tests/unit/cli/test_cli_light.py), so each name is imported when it is
first read, then kept on the package like a plain attribute.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any


def exports(package: str, names: Mapping[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """`__getattr__` and `__dir__` for `package`, whose name `n` is `names[n]`: "module" or "module:attr"."""

    def __getattr__(name: str) -> Any:
        where = names.get(name)
        if where is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module, _, attr = where.partition(":")
        value = getattr(importlib.import_module(module), attr or name)
        setattr(sys.modules[package], name, value)  # later reads skip __getattr__
        return value

    def __dir__() -> list[str]:
        return sorted({*vars(sys.modules[package]), *names})

    return __getattr__, __dir__
