"""A benchmark run's results kept on disk, so its report can be re-rendered without running it again
(`--render-from`). A pickle: read only files the benchmark itself wrote."""

from __future__ import annotations

import argparse
import pickle
import sys
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


def keep(result: object, path: Path) -> None:
    """`save`, and tell the user (on stderr, beside the progress) where the rows went and how to re-render."""
    save(result, path)
    print(f"rows saved to {path} (re-render with --render-from {path})", file=sys.stderr)


def load(path: Path, kind: type[T], what: str) -> T:
    """The `kind` saved at `path`; one sentence naming `what` when it cannot be read or is another thing."""
    try:
        result = pickle.loads(path.read_bytes())
    except (OSError, pickle.UnpicklingError, EOFError, AttributeError, ImportError) as exc:
        raise ConfigError(f"cannot read {what} from {path}: {exc}") from exc
    if not isinstance(result, kind):
        raise ConfigError(f"{path} does not hold {what} (it holds a {type(result).__name__})")
    return result


def add_arguments(p: argparse.ArgumentParser, rows: str | Path) -> None:
    """A bench's --rows, --render-from and --out: where its rows go, a re-render from them, the markdown.
    `rows` is the default's name in the help (a path under DATA_DIR, or a fixed path)."""
    p.add_argument(
        "--rows",
        type=Path,
        default=rows if isinstance(rows, Path) else None,
        help="where the run's rows are saved for --render-from "
        + ("(default: %(default)s)" if isinstance(rows, Path) else f"(default: DATA_DIR/{rows})"),
    )
    p.add_argument(
        "--render-from", type=Path, metavar="ROWS", help="no run: rewrite the section from rows a run saved"
    )
    p.add_argument(
        "--out", type=Path, default=Path("docs/benchmarks.md"), help="markdown to update ('' = none)"
    )
