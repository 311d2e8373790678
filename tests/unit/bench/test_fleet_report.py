"""`edgecut bench fleet`: its report of replicas, fencing and the broker warning, and its refusals."""

from __future__ import annotations

import pytest

from edgecut.errors import EdgecutError
from edgecut_bench import fleet


def _outcome(**kw: object) -> fleet.Outcome:
    o = fleet.Outcome(devices=10, processes=2, build_s=2.0, broker="mosquitto", **kw)  # type: ignore[arg-type]
    o.phase_s, o.needs_per_s = [5.0, 1.0], [2.0, 10.0]
    o.latencies = [[1.0, 2.0], [0.5, 0.6]]
    return o


def test_a_replicated_run_says_how_many_replicas_and_late_results_were_refused() -> None:
    text = fleet.markdown(_outcome(replicas=2, registry="PostgreSQL", fenced=1), "edgecut bench fleet")
    assert "2 fleet server replica processes on one PostgreSQL registry" in text
    assert "builds a stopped replica woke up to and had to drop (its lease was taken over; fenced): 1" in text


def test_one_server_reads_as_before_and_a_broker_warning_is_quoted() -> None:
    text = fleet.markdown(_outcome(broker_warning="too many devices"), "edgecut bench fleet")
    assert "A real fleet server process" in text and "fenced" not in text
    assert '- the server warned: "too many devices"' in text


def test_replicas_without_a_shared_postgresql_registry_are_refused() -> None:
    with pytest.raises(EdgecutError, match="shared PostgreSQL registry"):
        fleet.run(10, 1, 1.0, False, print, replicas=2, registry_url="sqlite:///x.db")
