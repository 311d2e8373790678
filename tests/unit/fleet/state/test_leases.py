"""Job leases: the single flight across server replicas, on SQLite and on a real PostgreSQL server.

Two `Registry` objects on one database stand for two replicas (each has its own connection pool).
"""

from __future__ import annotations

import threading
import time
from collections import Counter

from edgecut.server.fleet.state.registry import Registry
from edgecut.server.fleet.state.schema import DONE, QUEUED, RUNNING


def test_a_held_lease_keeps_others_out_until_it_expires(pair: tuple[Registry, Registry]) -> None:
    a, b = pair
    a.jobs.ensure("k", {"tasks": ["seg"]})
    got = a.jobs.claim("replica-a", lease_s=0.5)
    assert got is not None and got.state == RUNNING and got.owner == "replica-a" and got.attempts == 1
    assert b.jobs.claim("replica-b", lease_s=30) is None  # single flight
    assert a.jobs.renew_leases("replica-a", ["k"], lease_s=0.5) == set()
    time.sleep(0.7)  # replica a "died": no renewal
    taken = b.jobs.claim("replica-b", lease_s=30)
    assert taken is not None and taken.owner == "replica-b" and taken.attempts == 2
    assert a.jobs.renew_leases("replica-a", ["k"], lease_s=30) == {"k"}  # a learns it lost the job
    b.jobs.finish(
        "k", "replica-b", taken.generation, state=DONE, stage="ready", fraction=1.0, artifact_id="ab" * 32
    )
    done = a.jobs.get("k")
    assert done is not None and done.state == DONE and done.owner == ""
    assert b.jobs.claim("replica-b", lease_s=30) is None


def test_a_released_job_is_free_at_once(pair: tuple[Registry, Registry]) -> None:
    a, b = pair
    a.jobs.ensure("k1", {})
    a.jobs.ensure("k2", {})
    assert a.jobs.claim("replica-a", 30) is not None
    a.jobs.release("k1", "replica-a")  # graceful stop
    j = b.jobs.get("k1")
    assert j is not None and j.state == QUEUED and j.owner == ""
    got = b.jobs.claim("replica-b", 30)
    assert got is not None and got.build_key == "k1"
    # a replica restarting under its old id takes back what it held before it died
    got2 = a.jobs.claim("replica-a", 30)
    assert got2 is not None and got2.build_key == "k2"
    assert a.jobs.release_leases("replica-a") == ["k2"]
    j2 = a.jobs.get("k2")
    assert j2 is not None and j2.state == QUEUED


def test_concurrent_claims_build_each_job_once(pair: tuple[Registry, Registry]) -> None:
    a, b = pair
    keys = [f"k{i:02d}" for i in range(24)]
    for k in keys:
        a.jobs.ensure(k, {})
    claims: list[tuple[str, str]] = []
    lock = threading.Lock()

    def worker(reg: Registry, name: str) -> None:
        while (rec := reg.jobs.claim(name, 60)) is not None:
            with lock:
                claims.append((rec.build_key, name))
            reg.jobs.finish(rec.build_key, name, rec.generation, state=DONE, artifact_id="ab" * 32)

    threads = [
        threading.Thread(target=worker, args=(r, f"{n}-{i}"))
        for i in range(3)
        for n, r in (("a", a), ("b", b))
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    per_key = Counter(k for k, _ in claims)
    assert sorted(per_key) == keys and set(per_key.values()) == {1}, per_key


def test_replicas_joining_one_key_share_one_job_and_its_waiters(pair: tuple[Registry, Registry]) -> None:
    a, b = pair
    barrier = threading.Barrier(8)
    errors: list[BaseException] = []

    def ask(reg: Registry, i: int) -> None:
        try:
            barrier.wait()
            reg.jobs.ensure("k", {"tasks": ["seg"]})
            reg.waiters.add("k", f"dev-{i}", i)
            reg.devices.record_state(f"new-{i % 2}", "online", "", [], "0.1")  # every replica sees each state
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=ask, args=(a if i % 2 else b, i)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors, errors
    assert [j.build_key for j in a.jobs.all()] == ["k"]
    taken: list[list[str]] = [[], []]

    def take(reg: Registry, slot: int) -> None:
        taken[slot] = [w.device_id for w in reg.waiters.take("k")]

    ts = [threading.Thread(target=take, args=(r, i)) for i, r in enumerate((a, b))]
    for t in ts:
        t.start()
    for t in ts:
        t.join(30)
    assert sorted(taken[0] + taken[1]) == sorted(f"dev-{i}" for i in range(8))  # each answered once
    assert {d["device_id"] for d in a.devices.all()} == {"new-0", "new-1"}
