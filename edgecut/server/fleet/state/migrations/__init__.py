"""The registry's schema under Alembic: revisions in versions/, run by `upgrade()` at every start.

Configured in code (no alembic.ini): the revisions ship inside the package. `upgrade()` brings a
database to the newest revision this edgecut knows, in one transaction; on PostgreSQL it holds an
advisory lock (`pg_advisory_lock`) meanwhile, so replicas that start together migrate once and the
others find the work done. A database written before Alembic (tables, no `alembic_version`) starts at
the baseline revision, which completes its tables in place. A database whose revision this edgecut
does not know was written by a newer release and is refused.

A new column: add it to the model, then a revision in versions/ (`python -m
edgecut.server.fleet.state.migrations revision "what changed"` drafts one from the difference);
tests/unit/fleet/test_migrations.py fails while the models and the newest revision differ.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import MetaData, inspect, text
from sqlalchemy.engine import Connection, Engine

from edgecut.errors import ConfigError

logger = logging.getLogger(__name__)
if logging.getLogger("alembic").level == logging.NOTSET:
    logging.getLogger("alembic").setLevel(logging.WARNING)  # its INFO lines repeat at every start

HERE = Path(__file__).parent
LOCK_ID = 0x6564676563757401  # pg advisory lock id ("edgecut" + 1): one replica migrates at a time
PRE_ALEMBIC = "before Alembic (edgecut 0.1)"
EMPTY = "empty"


class SchemaTooNew(ConfigError):
    """The database was migrated by a newer edgecut than this one."""


@dataclass(frozen=True)
class Migration:
    """What `upgrade()` did: the revision the database had (or EMPTY / PRE_ALEMBIC) and has now."""

    before: str
    after: str

    def __str__(self) -> str:
        if self.before == self.after:
            return f"schema at revision {self.after}, the newest this edgecut knows: nothing to do"
        return f"schema upgraded from {self.before} to revision {self.after}"


def config(conn: Connection | None = None) -> Config:
    """Alembic's configuration, in code; `conn` is the connection env.py migrates on."""
    cfg = Config()
    cfg.set_main_option("script_location", str(HERE))
    cfg.attributes["connection"] = conn
    return cfg


def head() -> str:
    rev = ScriptDirectory.from_config(config()).get_current_head()
    assert rev is not None  # the package ships its baseline revision
    return rev


def metadata() -> MetaData:
    """The one metadata of every registry table (its modules imported so each has registered)."""
    from edgecut.server.fleet.state.schema import Base

    return Base.metadata


def upgrade(engine: Engine, url: str) -> Migration:
    """Bring the database at `url` (for messages) to the newest revision; see the module docstring."""
    with engine.connect() as conn:
        postgres = conn.dialect.name == "postgresql"
        if postgres:
            conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": LOCK_ID})
            conn.commit()
        try:
            with conn.begin():
                return _upgrade(conn, url)
        finally:
            if postgres and not conn.invalidated:  # a lost connection has released the lock already
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": LOCK_ID})
                conn.commit()


def _upgrade(conn: Connection, url: str) -> Migration:
    scripts = ScriptDirectory.from_config(config())
    newest = scripts.get_current_head()
    current = MigrationContext.configure(conn).get_current_revision()
    if current is None:
        before = PRE_ALEMBIC if inspect(conn).has_table("devices") else EMPTY
    elif current not in {s.revision for s in scripts.walk_revisions()}:
        raise SchemaTooNew(
            f"registry {url} has schema revision {current}, written by a newer edgecut than this one "
            f"(which knows up to {newest}): upgrade edgecut, or restore the backup taken before that upgrade"
        )
    else:
        before = current
    if before == PRE_ALEMBIC:
        logger.info("registry %s: tables from %s found, upgrading them in place", url, PRE_ALEMBIC)
    command.upgrade(config(conn), "head")
    after = MigrationContext.configure(conn).get_current_revision() or EMPTY
    if before != after:
        logger.info("registry %s: schema %s -> %s", url, before, after)
    return Migration(before, after)
