"""A benchmark run's results kept on disk, so its report can be re-rendered without running it again
(`--render-from`). A pickle: read only files the benchmark itself wrote."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import TypeVar

from edgecut.errors import ConfigError

T = TypeVar("T")


def save(result: object, path: Path) -> None:
    """Written atomically: an interrupted save never leaves half a file under the name."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(pickle.dumps(result))
    tmp.replace(path)


def load(path: Path, kind: type[T], what: str) -> T:
    """The `kind` saved at `path`; one sentence naming `what` when it cannot be read or is another thing."""
    try:
        result = pickle.loads(path.read_bytes())
    except (OSError, pickle.UnpicklingError, EOFError, AttributeError, ImportError) as exc:
        raise ConfigError(f"cannot read {what} from {path}: {exc}") from exc
    if not isinstance(result, kind):
        raise ConfigError(f"{path} does not hold {what} (it holds a {type(result).__name__})")
    return result
