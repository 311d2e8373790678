from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from edgecut.errors import ConfigError
from edgecut.server.fleet.registry import DONE, FAILED, QUEUED, RUNNING, Registry, registry_url


@pytest.fixture(params=["sqlite", "postgresql"])
def reg(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Registry]:
    """The same registry contract on SQLite and on a real PostgreSQL server."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'r.sqlite3'}"
    else:
        url = request.getfixturevalue("postgres").create_database()
    r = Registry(url)
    yield r
    r.close()


def test_device_needs_state_telemetry_and_swaps(reg: Registry) -> None:
    reg.record_needs("d1", ["seg", "depth"], 3, {"seq": "3"}, {"cpu_count": 4}, "rpi4", "macs=0.30")
    reg.record_state("d1", "online", "", [], "0.1.0")
    reg.record_telemetry("d1", {"latency_p50_ms": 12.5, "artifact_id": "ab" * 32})
    reg.record_swap("d1", "cd" * 32, True, "", "ab" * 32, 40.0)
    reg.record_swap("d1", "ef" * 32, False, "outputs not finite", "cd" * 32, 10.0)
    d = reg.device("d1")
    assert d is not None
    assert d["needs_tasks"] == ["seg", "depth"] and d["needs_seq"] == 3 and d["device_class"] == "rpi4"
    assert d["status"] == "online" and d["telemetry"]["latency_p50_ms"] == 12.5
    assert d["artifact_id"] == "cd" * 32  # the failed swap did not change the serving model
    swaps = reg.swaps("d1")
    assert [s["ok"] for s in swaps] == [False, True] and swaps[0]["reason"] == "outputs not finite"
    assert reg.device("nope") is None
    assert [x["device_id"] for x in reg.devices()] == ["d1"]


def test_job_life_cycle_and_requeue_query(reg: Registry) -> None:
    reg.create_job("k1", {"tasks": ["seg"]})
    reg.create_job("k2", {"tasks": ["depth"]})
    reg.update_job("k1", state=RUNNING)
    assert {j.build_key for j in reg.jobs((QUEUED, RUNNING))} == {"k1", "k2"}
    reg.update_job("k1", state=DONE, artifact_id="ab" * 32)
    reg.update_job("k2", state=FAILED, error_code="BUILD_FAILED", error_message="x")
    assert reg.jobs((QUEUED, RUNNING)) == []
    rec = reg.job("k1")
    assert rec is not None and rec.state == DONE and rec.attempts == 1 and rec.artifact_id == "ab" * 32
    reg.create_job("k2", {"tasks": ["depth"]})  # a failed key can be built again
    rec2 = reg.job("k2")
    assert rec2 is not None and rec2.state == QUEUED and rec2.error_code == ""
    with pytest.raises(ValueError):
        reg.update_job("k1", state="bogus")
    with pytest.raises(ValueError):
        reg.update_job("k1", spec={})


def test_waiters_are_answered_once(reg: Registry) -> None:
    reg.create_job("k", {})
    reg.add_waiter("k", "d1", 1)
    reg.add_waiter("k", "d1", 2)  # newer needs of the same device replace the older
    reg.add_waiter("k", "d2", 7)
    got = sorted((w.device_id, w.needs_seq) for w in reg.take_waiters("k"))
    assert got == [("d1", 2), ("d2", 7)]
    assert reg.take_waiters("k") == []


def test_state_survives_reopen(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'r.sqlite3'}"
    r = Registry(url)
    r.create_job("k", {"tasks": ["seg"]})
    r.close()
    r2 = Registry(url)
    assert [j.build_key for j in r2.jobs((QUEUED,))] == ["k"]
    r2.close()


@pytest.mark.parametrize(
    "url",
    [
        "postgresql+psycopg://u@127.0.0.1:1/x",
        "postgresql://u@127.0.0.1:1/x",
        "nosuchdb://x",
        "mysql://u@h/db",
        "not a url",
        "sqlite:////nonexistent/dir/r.db",
    ],
)
def test_an_unusable_registry_url_is_a_config_error(url: str) -> None:
    with pytest.raises(ConfigError, match="registry"):
        Registry(url)


def test_a_password_in_the_url_never_reaches_a_message() -> None:
    with pytest.raises(ConfigError) as err:
        Registry("postgresql://fleet:s3cret-pw@127.0.0.1:1/fleet")
    assert "s3cret-pw" not in str(err.value) and "***" in str(err.value)


def test_postgresql_urls_use_psycopg_3() -> None:
    assert registry_url("postgresql://u@h/db").drivername == "postgresql+psycopg"
    assert registry_url("postgres://u@h/db").drivername == "postgresql+psycopg"
    assert registry_url("postgresql+psycopg://u@h/db").drivername == "postgresql+psycopg"
