"""Two replicas starting together on one PostgreSQL database: one migrates, the other finds it done."""

from __future__ import annotations

import subprocess
import sys

import psycopg
import pytest

from edgecut.server.fleet.state import migrations
from tests.support.postgres import PostgresServer
from tests.support.waiting import WAIT_S, wait_until

pytestmark = pytest.mark.integration
CLI = "from edgecut.cli import main; raise SystemExit(main())"  # `edgecut ...` with this interpreter


def test_two_replicas_starting_together_migrate_once(postgres: PostgresServer) -> None:
    url = postgres.create_database()
    with psycopg.connect(url, autocommit=True) as holder:
        # hold the migration lock so both processes are certainly inside their start-up at once
        holder.execute("SELECT pg_advisory_lock(%s)", (migrations.LOCK_ID,))
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", CLI, "server", "migrate", "--url", url],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(2)
        ]
        try:

            def both_waiting() -> bool:
                assert all(p.poll() is None for p in procs), "a replica exited before taking the lock"
                waiting = holder.execute(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
                )
                return waiting.fetchone() == (2,)

            wait_until(both_waiting)
            holder.execute("SELECT pg_advisory_unlock(%s)", (migrations.LOCK_ID,))
            outs = [p.communicate(timeout=WAIT_S) for p in procs]
        finally:
            for p in procs:
                p.kill()
        assert [p.returncode for p in procs] == [0, 0], outs
        said = sorted(out for out, _ in outs)
        head = migrations.head()
        assert f"from {migrations.EMPTY} to revision {head}" in said[1], said
        assert "nothing to do" in said[0], said
        assert holder.execute("SELECT version_num FROM alembic_version").fetchall() == [(head,)]
