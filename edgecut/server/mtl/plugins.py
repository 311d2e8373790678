"""Name model classes and build them: by registered name, by `edgecut.models` entry point, or by `module:Class`.

Each way names the class once and imports it once; any failure becomes a `ModelContractError` that
names the module and the reason, so the CLI prints one sentence instead of a traceback.

- registered name: the built-in reference models are listed in `BUILTIN` (explicitly, not by importing
  a module for its side effects); `@register_model("name")` adds a class from a module that is already
  imported;
- entry point: a package that declares `[project.entry-points."edgecut.models"] name = "pkg.mod:Class"`
  is found by name once installed, with nothing to import by hand;
- `module:Class`: the module is imported from the Python path, with the current directory first (as
  `python -m` and uvicorn do), so a module beside the user is found.

Importing a module runs its code: name only modules you trust (a checkpoint records its model's module,
so load only checkpoints you trust too).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import logging
import os
import sys
from collections.abc import Callable
from typing import Any

from edgecut.server.errors import ModelContractError
from edgecut.server.mtl.contract import MultiTaskModel, instantiate
from edgecut.server.mtl.models import DenseCatMTL, ResNetMTL

logger = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "edgecut.models"
BUILTIN: tuple[type[MultiTaskModel], ...] = (ResNetMTL, DenseCatMTL)
# name -> class: the built-in models, then those registered by `register_model` or found by entry point
REGISTRY: dict[str, type[MultiTaskModel]] = {cls.arch: cls for cls in BUILTIN}


def register_model(name: str) -> Callable[[type[MultiTaskModel]], type[MultiTaskModel]]:
    """Class decorator: make a MultiTaskModel subclass buildable by name (checkpoints store the name)."""

    def deco(cls: type[MultiTaskModel]) -> type[MultiTaskModel]:
        if not issubclass(cls, MultiTaskModel):
            raise TypeError(f"{cls.__name__} must subclass MultiTaskModel")
        cls.arch = name
        REGISTRY[name] = cls
        return cls

    return deco


def registered_models() -> list[str]:
    """Registered architectures and installed `edgecut.models` entry points (none of them imported)."""
    return sorted({*REGISTRY, *entry_point_names()})


def build_model(arch: str, **config: Any) -> MultiTaskModel:
    """Build `arch` (a registered name, an entry point name or `module:Class`) with `config`."""
    return instantiate(model_class(arch), arch, **config)


def model_ref(cls: type) -> str:
    """The `module:Class` path that imports `cls` again."""
    return f"{cls.__module__}:{cls.__qualname__}"


def entry_point_names() -> list[str]:
    return sorted({ep.name for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)})


def known(name: str) -> bool:
    """Whether `name` is a registered architecture or an installed entry point (nothing is imported)."""
    return name in REGISTRY or name in entry_point_names()


def model_class(spec: str) -> type[MultiTaskModel]:
    """The class named by `spec`: a registered name, an entry point name, or `module:Class`."""
    spec = spec.strip()
    if spec in REGISTRY:
        return REGISTRY[spec]
    if ":" in spec:
        return _checked(_import(spec), spec)
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        if ep.name == spec:
            try:
                cls = _checked(ep.load(), f"{ep.value} (entry point {spec!r})")
            except ModelContractError:
                raise
            except Exception as exc:  # the user's module can raise anything on import
                raise ModelContractError(
                    f"cannot load model {spec!r} from entry point {ep.value!r}: {_reason(exc)}"
                ) from exc
            cls.arch = cls.arch or spec
            REGISTRY.setdefault(spec, cls)
            return cls
    known_names = registered_models()
    raise ModelContractError(
        f"unknown model architecture {spec!r}: known {', '.join(known_names)}; "
        "or name your class as module:Class, e.g. --model mymodels.unet:UNet"
    )


def _import(spec: str) -> Any:
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ModelContractError(f"model {spec!r} is not of the form module:Class, e.g. mymodels.unet:UNet")
    if module_name == "__main__":
        raise ModelContractError(
            f"model {spec!r} was defined in a script (__main__): move the class into a module so it can "
            "be imported again"
        )
    here = os.getcwd()
    if here not in sys.path:
        sys.path.insert(0, here)  # a module beside the user is found, as with `python -m`
    try:
        obj: Any = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise ModelContractError(
            f"cannot import model module {module_name!r} (for {spec}): {exc}; run edgecut from the "
            "folder that holds it, or add that folder to PYTHONPATH"
        ) from exc
    except Exception as exc:  # the user's module can raise anything on import
        raise ModelContractError(f"importing model module {module_name!r} failed: {_reason(exc)}") from exc
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ModelContractError(f"module {module_name!r} has no {attr!r} (for {spec})")
        obj = getattr(obj, part)
    return obj


def _checked(obj: Any, where: str) -> type[MultiTaskModel]:
    if not (isinstance(obj, type) and issubclass(obj, MultiTaskModel)):
        raise ModelContractError(
            f"{where} is {obj!r}, not a MultiTaskModel subclass: see docs/models.md for the contract"
        )
    return obj


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")
