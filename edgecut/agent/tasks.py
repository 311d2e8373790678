"""The user's selected tasks, persisted in `<state_dir>/tasks.json` with a change counter.

The counter (`seq`) is sent in every TaskNeeds so the server and the agent can tell an answer to
the current selection from a stale one; it survives restarts so it only ever increases.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable, Iterable
from pathlib import Path

from edgecut.errors import ConfigError

from .statefile import read_json, write_json

logger = logging.getLogger(__name__)

_TASK = re.compile(r"^[a-z][a-z0-9_]{0,31}$")

Listener = Callable[[list[str], int], None]


def parse_tasks(items: Iterable[str]) -> list[str]:
    """Clean a selection ("seg,depth" items allowed): lower case, order kept, duplicates dropped."""
    out: list[str] = []
    for item in items:
        for raw in item.split(","):
            name = raw.strip().lower()
            if not name:
                continue
            if not _TASK.match(name):
                raise ConfigError(f"bad task name {raw.strip()!r}: use a-z, 0-9 and '_', e.g. seg,depth")
            if name not in out:
                out.append(name)
    if not out:
        raise ConfigError("no task given: name at least one, e.g. `edgecut agent tasks set seg,depth`")
    return out


class TaskStore:
    """Selected tasks; `set()` persists first, then tells the listeners (who publish new needs)."""

    def __init__(self, state_dir: Path, default: list[str] | None = None) -> None:
        self.path = Path(state_dir) / "tasks.json"
        self._lock = threading.Lock()
        self._listeners: list[Listener] = []
        doc = read_json(self.path)
        if isinstance(doc, dict) and isinstance(doc.get("tasks"), list):
            self._tasks = [str(t) for t in doc["tasks"]]
            self._seq = int(doc.get("seq", 0))
        else:
            self._tasks = parse_tasks(default) if default else []
            self._seq = 0

    @property
    def tasks(self) -> list[str]:
        return list(self._tasks)

    @property
    def seq(self) -> int:
        return self._seq

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def set(self, tasks: Iterable[str]) -> bool:
        """Select `tasks`; returns False (and tells nobody) when the selection is unchanged."""
        clean = parse_tasks(tasks)
        with self._lock:
            if clean == self._tasks:
                return False
            self._tasks, self._seq = clean, self._seq + 1
            write_json(self.path, {"tasks": clean, "seq": self._seq})
            tasks_now, seq = list(clean), self._seq
        logger.info("tasks set to %s (seq %d)", ",".join(tasks_now), seq)
        for listener in self._listeners:
            try:
                listener(tasks_now, seq)
            except Exception:  # a failing listener must not undo the user's choice
                logger.exception("task listener failed")
        return True
