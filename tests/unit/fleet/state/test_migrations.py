"""The registry's schema under Alembic: a database written by edgecut 0.1 (before Alembic) upgrades in
place with nothing lost, an older layout gains its missing columns, a newer release's database is
refused, and the models never drift from the newest revision."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import (
    BigInteger,
    Column,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    create_engine,
    inspect,
    text,
)

from edgecut.cli import main as edgecut_main
from edgecut.server.fleet.commands.desk import CommandDesk, open_operator_key
from edgecut.server.fleet.jobs.rollout import RolloutManager
from edgecut.server.fleet.jobs.rollout_policy import RolloutSettings
from edgecut.server.fleet.state import migrations
from edgecut.server.fleet.state.history import FleetHistory
from edgecut.server.fleet.state.registry import Registry
from edgecut.server.fleet.state.store import LocalStore
from tests.support.postgres import PostgresServer

FIXTURES = Path(__file__).parents[3] / "fixtures" / "release_0_1"
TABLES = [
    "devices", "swaps", "jobs", "job_leases", "job_waiters", "offers", "operator_commands", "audit_log",
    "telemetry_samples", "build_runs", "artifact_latency", "rollouts",
]  # fmt: skip


def release_0_1(request: pytest.FixtureRequest, backend: str, tmp_path: Path) -> str:
    """A copy of the database edgecut 0.1 wrote (tests/fixtures/release_0_1/make.py); its URL."""
    if backend == "sqlite":
        shutil.copy(FIXTURES / "release_0_1.sqlite3", tmp_path / "old.sqlite3")
        return f"sqlite:///{tmp_path / 'old.sqlite3'}"
    pg: PostgresServer = request.getfixturevalue("postgres")
    url = pg.create_database()
    sql = FIXTURES / "release_0_1.postgresql.sql"
    subprocess.run(
        [str(pg.bindir / "psql"), "-q", "-v", "ON_ERROR_STOP=1", "-f", str(sql), url],
        check=True,
        capture_output=True,
    )
    return url


def dump(url: str) -> dict[str, list[dict[str, Any]]]:
    """Every row of every table, in primary-key order."""
    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
    out: dict[str, list[dict[str, Any]]] = {}
    with engine.connect() as conn:
        insp = inspect(conn)
        for table in TABLES:
            pk = ", ".join(insp.get_pk_constraint(table)["constrained_columns"])
            out[table] = [
                dict(r._mapping) for r in conn.execute(text(f"SELECT * FROM {table} ORDER BY {pk}"))
            ]
    engine.dispose()
    return out


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_release_0_1_database_upgrades_in_place_with_nothing_lost(
    request: pytest.FixtureRequest, backend: str, tmp_path: Path
) -> None:
    url = release_0_1(request, backend, tmp_path)
    before = dump(url)
    assert all(before[t] for t in TABLES), "the fixture has rows in every table"

    reg = Registry(url)
    assert reg.migration == migrations.Migration(migrations.PRE_ALEMBIC, migrations.head())
    after = dump(url)  # later revisions add columns (swaps.precision): the old ones must be unchanged
    assert [len(after[t]) for t in TABLES] == [len(before[t]) for t in TABLES]  # nothing lost
    old_columns = {
        t: [{k: r[k] for k in was} for r, was in zip(after[t], before[t], strict=True)] for t in TABLES
    }
    assert old_columns == before  # nothing changed
    assert {r["precision"] for r in after["swaps"]} == {""}  # what 0.1's agents served: fp32, unsaid

    # the app reads what 0.1 wrote ...
    assert [d["device_id"] for d in reg.devices.all()] == ["cam-0", "cam-1", "cam-2"]
    assert reg.devices.get("cam-1")["offer_seq"] == 8  # type: ignore[index]
    assert {j.build_key[0] for j in reg.jobs.all()} == {"b", "c", "d"}
    assert reg.waiters.waiting() == {"cam-1": "c" * 64}
    history = FleetHistory(reg)
    assert [t["latency_p95_ms"] for t in history.telemetry("cam-2")] == [14.5]
    assert history.latency(["a" + "0" * 63]) == {"a" + "0" * 63: 11.0}
    rollouts = RolloutManager(reg, LocalStore(tmp_path / "store"), RolloutSettings())
    assert [(r["id"], r["state"]) for r in rollouts.rollouts()] == [("r1", "canary")]
    desk = CommandDesk(reg, open_operator_key(None, tmp_path), lambda d, p: None, lambda: ["seg", "depth"])
    assert desk.get("c0")["state"] == "ok"  # type: ignore[index]
    assert [a["who"] for a in desk.audit()] == ["alice"]
    # ... and writes after it (autoincrement ids continue past the old rows on PostgreSQL too)
    reg.offers.record_swap("cam-0", "e" * 64, True, "", "a" + "0" * 63, 30.0)
    history.add_telemetry("cam-0", 1_780_000_100.0, {"latency_p95_ms": 9.0})
    assert len(reg.offers.swaps("cam-0")) == 2 and len(history.telemetry("cam-0")) == 2
    reg.close()

    # a second start finds the schema current
    again = Registry(url)
    assert again.migration.before == again.migration.after == migrations.head()
    again.close()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_an_older_layout_gains_the_columns_and_indexes_it_lacked(
    request: pytest.FixtureRequest, backend: str, tmp_path: Path
) -> None:
    """Releases before 0.1 created fewer columns; the hand-rolled step never covered rollouts or telemetry."""
    url = (
        f"sqlite:///{tmp_path / 'old.sqlite3'}"
        if backend == "sqlite"
        else request.getfixturevalue("postgres").create_database()
    )
    old = MetaData()
    Table("devices", old, Column("device_id", String(128), primary_key=True), Column("status", String(16)),
          Column("needs_seq", BigInteger))  # fmt: skip
    Table("telemetry_samples", old, Column("id", Integer, primary_key=True), Column("device_id", String(128)),
          Column("at", Float))  # fmt: skip
    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
    old.create_all(engine)
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO devices VALUES ('old-1', 'online', 3)"))
        conn.execute(text("INSERT INTO telemetry_samples (device_id, at) VALUES ('old-1', 5.0)"))
    engine.dispose()

    reg = Registry(url)
    assert reg.migration.before == migrations.PRE_ALEMBIC
    device = reg.devices.get("old-1")
    assert device is not None and device["status"] == "online" and device["needs_seq"] == 3
    assert device["serving_tasks"] == [] and device["provenance"] == {} and device["offer_seq"] == 0
    assert FleetHistory(reg).telemetry("old-1")[0]["latency_p95_ms"] == 0.0
    insp = inspect(reg.engine)
    assert "cpu_percent" in {c["name"] for c in insp.get_columns("telemetry_samples")}
    assert "ix_telemetry_device_id" in {i["name"] for i in insp.get_indexes("telemetry_samples")}
    assert "rollouts" in insp.get_table_names()
    reg.close()


def test_a_database_from_a_newer_release_is_refused_untouched(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'r.sqlite3'}"
    Registry(url).close()
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '0099'"))
    engine.dispose()
    with pytest.raises(migrations.SchemaTooNew, match="written by a newer edgecut"):
        Registry(url)
    assert edgecut_main(["server", "migrate", "--url", url]) == 2
    err = capsys.readouterr().err
    assert "revision 0099" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_edgecut_server_migrate_says_from_which_revision_to_which(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shutil.copy(FIXTURES / "release_0_1.sqlite3", tmp_path / "registry.sqlite3")
    assert edgecut_main(["server", "migrate", "--state-dir", str(tmp_path)]) == 0
    assert f"from {migrations.PRE_ALEMBIC} to revision {migrations.head()}" in capsys.readouterr().out
    assert edgecut_main(["server", "--state-dir", str(tmp_path), "migrate"]) == 0
    assert "nothing to do" in capsys.readouterr().out


@pytest.fixture
def fresh(url: str) -> Registry:
    return Registry(url)


def diff(reg: Registry, metadata: MetaData) -> list[Any]:
    with reg.engine.connect() as conn:
        return compare_metadata(MigrationContext.configure(conn), metadata)


def test_the_models_match_the_newest_revision(fresh: Registry) -> None:
    """Fails when a model changes without a revision in edgecut/server/fleet/state/migrations/versions."""
    assert diff(fresh, migrations.metadata()) == []
    fresh.close()


def test_a_column_added_without_a_revision_is_caught(fresh: Registry) -> None:
    changed = MetaData()
    for table in migrations.metadata().tables.values():
        table.to_metadata(changed)
    changed.tables["rollouts"].append_column(Column("owner", String(64)))
    assert [(d[0], d[2], d[3].name) for d in diff(fresh, changed)] == [("add_column", "rollouts", "owner")]
    fresh.close()
