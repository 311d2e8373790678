"""Checks shared by the curated-API tests (tests/unit/cut/test_api.py, tests/unit/mtl/test_api.py)."""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType


def light_import(package: str) -> None:
    """Importing `package` (and listing its names) loads no torch: light commands import its light modules."""
    code = (
        f"import sys, {package} as p; dir(p); "
        "assert 'torch' not in sys.modules, 'torch imported'; print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def exports_are_exactly_all(package: str) -> ModuleType:
    """Every name of `__all__` resolves, is documented, and the package's public names are exactly `__all__`."""
    pkg = importlib.import_module(package)
    names = list(pkg.__all__)
    assert len(names) == len(set(names)), "a name is listed twice in __all__"
    for name in names:
        value = getattr(pkg, name)
        if inspect.isclass(value) or inspect.isfunction(value):
            doc = value.__doc__ or ""
            # a dataclass without a docstring gets its signature as __doc__: not a docstring
            assert doc.strip() and not doc.startswith(f"{value.__name__}("), (
                f"{package}.{name} has no docstring"
            )
    public = {
        n
        for n, v in vars(pkg).items()
        if not n.startswith("_") and not inspect.ismodule(v) and n != "annotations"
    }
    assert public == set(names), f"public names not in __all__: {sorted(public - set(names))}"
    star: dict[str, object] = {}
    exec(f"from {package} import *", star)
    assert {n for n in star if not n.startswith("__")} == set(names)
    return pkg


def typed_names_match_all(pkg: ModuleType) -> None:
    """The names mypy sees (the `if TYPE_CHECKING:` imports) are the exported ones, bound to the same objects."""
    tree = ast.parse(Path(str(pkg.__file__)).read_text())
    typed: dict[str, tuple[str, str]] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING":
            for imp in node.body:
                assert isinstance(imp, ast.ImportFrom) and imp.module
                for alias in imp.names:
                    typed[alias.asname or alias.name] = (imp.module, alias.name)
    assert set(typed) == set(pkg.__all__)
    for name, (module, attr) in typed.items():
        assert getattr(pkg, name) is getattr(importlib.import_module(module), attr), name


def no_export_is_a_module_name(pkg: ModuleType) -> None:
    """Importing a submodule sets it on the package under its name, which would hide an export of that name."""
    modules = {m.name for m in pkgutil.iter_modules(pkg.__path__)}
    assert not modules & set(pkg.__all__), sorted(modules & set(pkg.__all__))


def check_api(package: str) -> ModuleType:
    """All of the above for `package`: no torch on import, exports exactly `__all__`, typed, unshadowed."""
    light_import(package)
    pkg = exports_are_exactly_all(package)
    typed_names_match_all(pkg)
    no_export_is_a_module_name(pkg)
    return pkg
