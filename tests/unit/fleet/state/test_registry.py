from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgecut.errors import ConfigError
from edgecut.server.fleet.state.database import registry_url
from edgecut.server.fleet.state.registry import Registry
from edgecut.server.fleet.state.schema import DONE, FAILED, QUEUED, RUNNING


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
    reg.devices.record_needs("d1", ["seg", "depth"], 3, {"seq": "3"}, {"cpu_count": 4}, "rpi4", "macs=0.30")
    reg.devices.record_state("d1", "online", "", [], "0.1.0")
    reg.devices.record_telemetry("d1", {"latency_p50_ms": 12.5, "artifact_id": "ab" * 32})
    reg.offers.record_swap("d1", "cd" * 32, True, "", "ab" * 32, 40.0)
    reg.offers.record_swap("d1", "ef" * 32, False, "outputs not finite", "cd" * 32, 10.0)
    d = reg.devices.get("d1")
    assert d is not None
    assert d["needs_tasks"] == ["seg", "depth"] and d["needs_seq"] == 3 and d["device_class"] == "rpi4"
    assert d["status"] == "online" and d["telemetry"]["latency_p50_ms"] == 12.5
    assert d["artifact_id"] == "cd" * 32  # the failed swap did not change the serving model
    swaps = reg.offers.swaps("d1")
    assert [s["ok"] for s in swaps] == [False, True] and swaps[0]["reason"] == "outputs not finite"
    assert reg.devices.get("nope") is None
    assert [x["device_id"] for x in reg.devices.all()] == ["d1"]


def test_job_life_cycle_and_requeue_query(reg: Registry) -> None:
    reg.jobs.create("k1", {"tasks": ["seg"]})
    reg.jobs.create("k2", {"tasks": ["depth"]})
    reg.jobs.update("k1", state=RUNNING)
    assert {j.build_key for j in reg.jobs.all((QUEUED, RUNNING))} == {"k1", "k2"}
    reg.jobs.update("k1", state=DONE, artifact_id="ab" * 32)
    reg.jobs.update("k2", state=FAILED, error_code="BUILD_FAILED", error_message="x")
    assert reg.jobs.all((QUEUED, RUNNING)) == []
    rec = reg.jobs.get("k1")
    assert rec is not None and rec.state == DONE and rec.attempts == 1 and rec.artifact_id == "ab" * 32
    reg.jobs.create("k2", {"tasks": ["depth"]})  # a failed key can be built again
    rec2 = reg.jobs.get("k2")
    assert rec2 is not None and rec2.state == QUEUED and rec2.error_code == ""
    with pytest.raises(ValueError):
        reg.jobs.update("k1", state="bogus")
    with pytest.raises(ValueError):
        reg.jobs.update("k1", spec={})


def test_waiters_are_answered_once(reg: Registry) -> None:
    reg.jobs.create("k", {})
    reg.waiters.add("k", "d1", 1)
    reg.waiters.add("k", "d1", 2)  # newer needs of the same device replace the older
    reg.waiters.add("k", "d2", 7)
    got = sorted((w.device_id, w.needs_seq) for w in reg.waiters.take("k"))
    assert got == [("d1", 2), ("d2", 7)]
    assert reg.waiters.take("k") == []


def test_state_survives_reopen(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'r.sqlite3'}"
    r = Registry(url)
    r.jobs.create("k", {"tasks": ["seg"]})
    r.close()
    r2 = Registry(url)
    assert [j.build_key for j in r2.jobs.all((QUEUED,))] == ["k"]
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


def test_refinement_jobs_have_their_own_workers_and_adopt_only_onto_their_parent(reg: Registry) -> None:
    from edgecut.server.fleet.state.job_record import refinement_key
    from edgecut.server.fleet.state.schema import REFINE

    reg.jobs.create("k", {"tasks": ["seg"]})
    rk = refinement_key("k", 1)
    reg.jobs.create(
        rk, {"tasks": ["seg"], "refine": {"of": "k", "parent": "a" * 64, "number": 1}}, kind=REFINE
    )
    got = reg.jobs.claim("w", 30)  # a build worker takes the build, never the refinement
    assert got is not None and got.build_key == "k" and got.kind == "build"
    assert reg.jobs.claim("w", 30) is None
    ref = reg.jobs.claim("r", 30, kind=REFINE)
    assert ref is not None and ref.build_key == rk and ref.kind == REFINE
    reg.jobs.finish("k", "w", got.generation, state=DONE, artifact_id="a" * 64)
    assert not reg.jobs.adopt_refinement("k", "b" * 64, "c" * 64, 1)  # not the artifact the key serves
    assert reg.jobs.adopt_refinement("k", "a" * 64, "c" * 64, 1)
    rec = reg.jobs.get("k")
    assert rec is not None and (rec.artifact_id, rec.parent_artifact_id, rec.refinement) == (
        "c" * 64,
        "a" * 64,
        1,
    )
    assert not reg.jobs.adopt_refinement("k", "a" * 64, "d" * 64, 1)  # a second adoption of the same parent


def test_devices_on_an_artifact_are_those_whose_latest_offer_answers_their_needs(reg: Registry) -> None:
    for dev in ("d1", "d2", "d3"):
        reg.devices.record_needs(dev, ["seg"], 1, {}, {}, "x86", "macs=0.8")
        reg.offers.record(dev, "k", "a" * 64, needs_seq=1)
    reg.offers.record("d2", "k", "b" * 64, needs_seq=1)  # moved on to another artifact
    reg.devices.record_needs("d3", ["seg", "depth"], 2, {}, {}, "x86", "macs=0.8")  # asked for something else
    assert reg.offers.devices_on("a" * 64) == [("d1", 1)]
    assert reg.devices.get("d1")["latency_slowdown"] == 0.0  # type: ignore[index]
    reg.devices.set_latency_slowdown("d1", 2.5)
    assert reg.devices.get("d1")["latency_slowdown"] == 2.5  # type: ignore[index]


def test_offer_counters_only_grow_per_device_across_restarts_and_racing_replicas(reg: Registry) -> None:
    """Manifest.offer_seq: what an agent compares to refuse a replayed older offer (issue 26, item 1)."""
    assert reg.offers.next_seq("d1", now_ms=1000) == 1000  # the clock floor: above any earlier offer
    assert reg.offers.next_seq("d1", now_ms=1000) == 1001  # same millisecond: still one more
    assert reg.offers.next_seq("d1", now_ms=5) == 1002  # a clock set back never lowers it
    assert reg.offers.next_seq("d2", now_ms=7) == 7  # per device
    # two replicas on one database, both signing offers for d1 at once: every number once, increasing
    other = Registry(reg.engine.url.render_as_string(hide_password=False))
    got: dict[int, list[int]] = {0: [], 1: []}

    def sign(i: int, r: Registry) -> None:
        for _ in range(40):
            got[i].append(r.offers.next_seq("d1", now_ms=0))

    threads = [threading.Thread(target=sign, args=(i, r)) for i, r in enumerate((reg, other))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    other.close()
    assert all(seq == sorted(seq) for seq in got.values())
    assert sorted(got[0] + got[1]) == list(range(1003, 1083))
    # the registry is the memory: a restarted server continues from the last number
    assert reg.offers.next_seq("d1", now_ms=0) == 1083
