"""Issue 31: a device's adaptation choice is rate limited in the registry (one conditional UPDATE), so two
replicas taking summaries of one device at once schedule one adaptation; on SQLite and PostgreSQL."""

from __future__ import annotations

import threading

from edgecut.server.fleet.state.registry import Registry


def test_a_device_is_adapted_at_most_once_per_interval_across_replicas(
    pair: tuple[Registry, Registry],
) -> None:
    a, b = pair
    assert a.adaptations.choose("dev", "k" * 32, "m" * 64, "-5/-5/-5|-6/-6/-6", 1, [0.0] * 6, "job-1", 600)
    a.adaptations.offered("dev", "a" * 64)
    results: list[bool] = []

    def choose(reg: Registry, seq: int) -> None:
        results.append(
            reg.adaptations.choose(
                "dev", "k" * 32, "m" * 64, "-2/-2/-2|-4/-4/-4", seq, [1.0] * 6, "job-2", 600
            )
        )

    threads = [threading.Thread(target=choose, args=(r, n)) for n, r in enumerate((a, b, a, b), 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [False] * 4  # within the interval: none taken
    row = b.adaptations.get("dev")
    assert row is not None and (row.sequence, row.job_key, row.artifact_id) == (1, "job-1", "a" * 64)
    assert [r.device_id for r in b.adaptations.waiting("job-1")] == ["dev"]
    assert b.adaptations.choose("dev", "k" * 32, "m" * 64, "-2/-2/-2|-4/-4/-4", 9, [1.0] * 6, "job-2", 0)
    row = a.adaptations.get("dev")
    # the new choice; the adapted model it runs stays until a newer one is offered
    assert row is not None and (row.sequence, row.job_key, row.artifact_id) == (9, "job-2", "a" * 64)
    assert [r.device_id for r in a.adaptations.of_key("k" * 32)] == ["dev"]
