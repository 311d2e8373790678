"""Issue 31: a device's summary sequence is kept in the registry, so two replicas (or one after a
restart) never both take one sequence, and a replay is refused by all; on SQLite and PostgreSQL."""

from __future__ import annotations

import threading

from edgecut.server.fleet.state.registry import Registry


def test_one_sequence_is_taken_once_across_replicas_and_restarts(
    pair: tuple[Registry, Registry], url: str
) -> None:
    a, b = pair
    a.statistics.record_companion("m" * 64, "s" * 64, {"input": 3, "bn": 8})
    b.statistics.record_companion("m" * 64, "t" * 64, {"input": 3})  # the first record stays
    companion = b.statistics.companion("m" * 64)
    assert companion is not None and companion.statistics_id == "s" * 64
    results: list[int | None] = []

    def take(reg: Registry) -> None:
        results.append(reg.statistics.take("dev", "m" * 64, 7, 32, "d" * 64, b"x"))

    threads = [threading.Thread(target=take, args=(r,)) for r in (a, b, a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results, key=lambda r: r or 0) == [None, 7, 7, 7]  # one taken, three told the last
    again = Registry(url)  # a restarted replica
    try:
        assert again.statistics.take("dev", "m" * 64, 7, 32, "e" * 64, b"y") == 7
        assert again.statistics.take("dev", "m" * 64, 3, 32, "e" * 64, b"y") == 7
        assert again.statistics.take("dev", "m" * 64, 8, 64, "f" * 64, b"z") is None
        kept = again.statistics.latest("dev", "m" * 64)
        assert kept is not None and (kept.sequence, kept.images, kept.digest, kept.summary) == (
            8,
            64,
            "f" * 64,
            b"z",
        )
        assert again.statistics.devices()["dev"]["taken"] == 2
        assert [s.sequence for s in a.statistics.of_device("dev")] == [8]
    finally:
        again.close()
