"""The fleet database: one SQLAlchemy engine, short transactions, and what differs between SQLite and PostgreSQL.

SQLite under the state dir by default (`sqlite:///path`), PostgreSQL for several server replicas
(`postgresql://user@host/db`, driven by psycopg 3). Rows are added with insert-or-ignore/upsert
statements (`insert`), so replicas writing the same row at once do not collide; times in lease
decisions are the database's clock on PostgreSQL (`db_now`), so replicas on hosts whose clocks differ
still agree on what has expired. The repositories (devices.py, offers.py, jobs.py, waiters.py) share one.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import create_engine, event, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, make_url
from sqlalchemy.engine import Engine as SqlEngine
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from edgecut.errors import ConfigError
from edgecut.server.fleet.state import migrations
from edgecut.server.fleet.state.schema import Base, now

# URL scheme -> the SQLAlchemy driver name; other databases lack the upserts the leases rely on.
_DRIVERS = {"sqlite": "sqlite", "postgresql": "postgresql+psycopg", "postgres": "postgresql+psycopg"}


def registry_url(url: str) -> URL:
    """The SQLAlchemy URL for `sqlite:///...` or `postgresql://...` (psycopg 3 unless a driver is named)."""
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError) as exc:
        raise ConfigError(f"registry URL {url!r:.120} is not a database URL: {exc}") from exc
    backend = parsed.drivername.split("+", 1)[0]
    if backend not in _DRIVERS:
        raise ConfigError(
            f"registry URL {parsed.render_as_string(hide_password=True)!r}: unsupported database "
            f"{backend!r} (use sqlite:///path or postgresql://user@host/db)"
        )
    return parsed if "+" in parsed.drivername else parsed.set(drivername=_DRIVERS[backend])


class Database:
    """Thread-safe access to the fleet database; every `transaction()` is one short transaction."""

    def __init__(self, url: str) -> None:
        parsed = registry_url(url)
        self.url = parsed.render_as_string(hide_password=True)  # safe to log
        self.dialect = parsed.get_backend_name()
        lite = self.dialect == "sqlite"
        try:
            self.engine: SqlEngine = create_engine(
                parsed,
                connect_args={"check_same_thread": False, "timeout": 30} if lite else {},
                pool_pre_ping=not lite,  # a restarted database server leaves dead pooled connections
            )
        except (SQLAlchemyError, ImportError, ValueError) as exc:
            raise ConfigError(f"registry URL {self.url!r} is not usable: {exc}") from exc
        if lite:
            event.listen(self.engine, "connect", _sqlite_pragmas)
            event.listen(self.engine, "begin", _sqlite_begin)
        # SQLite allows one writer at a time; serialising here avoids "database is locked" retries.
        self._lock: threading.Lock | None = threading.Lock() if lite else None
        self.insert = sqlite.insert if lite else postgresql.insert
        try:
            self.migration = migrations.upgrade(self.engine, self.url)  # under a lock on PostgreSQL
        except SQLAlchemyError as exc:
            raise ConfigError(f"registry {self.url!r} cannot be opened: {_first_line(exc)}") from exc
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """One short transaction (under the writer lock on SQLite)."""
        if self._lock is None:
            with self._sessions.begin() as s:
                yield s
            return
        with self._lock, self._sessions.begin() as s:
            yield s

    def db_now(self, s: Session) -> float:
        """The database's clock on PostgreSQL (shared by every replica), this host's on SQLite."""
        if self.dialect == "sqlite":
            return now()
        return float(s.scalar(text("SELECT extract(epoch FROM clock_timestamp())")))

    def close(self) -> None:
        self.engine.dispose()


def row_dict(row: Base) -> dict[str, Any]:
    return {c.key: getattr(row, c.key) for c in row.__table__.columns}


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    # pysqlite would open a transaction lazily, at the first write: a claim's read could then act on
    # rows another process changed meanwhile. Transactions are begun by `_sqlite_begin` instead.
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")  # readers do not block the writer
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def _sqlite_begin(conn: Any) -> None:
    """BEGIN IMMEDIATE: one transaction at a time holds the database, also across processes."""
    conn.exec_driver_sql("BEGIN IMMEDIATE")
