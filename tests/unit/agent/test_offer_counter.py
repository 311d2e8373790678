"""The agent's offer counter (Manifest.offer_seq): kept across restarts, never taken backwards."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from edgecut.agent.trust import Stale, Trust
from edgecut.signing import Keyring
from tests.support.agent_helpers import signed_offer
from tests.support.keys import fleet_key


def _trust(state_dir: Path) -> Trust:
    return Trust("dev", Keyring([fleet_key().public]), Keyring(), state_dir)


def _take(trust: Trust, data: bytes, offer_seq: int) -> None:
    trust.take_offer(trust.check_offer(signed_offer(data, "dev", 3, offer_seq=offer_seq), 3))


def test_a_lower_counter_is_stale_also_after_a_restart(tmp_path: Path) -> None:
    trust = _trust(tmp_path)
    _take(trust, b"old", 10)
    _take(trust, b"new", 11)
    with pytest.raises(Stale, match="offer #10; this device took #11"):
        trust.check_offer(signed_offer(b"old", "dev", 3, offer_seq=10), 3)
    again = _trust(tmp_path)  # the agent restarted: offers.json holds what it took
    with pytest.raises(Stale, match="stale or replayed"):
        again.check_offer(signed_offer(b"old", "dev", 3, offer_seq=10), 3)
    # the same offer again (the retained one after a reconnect) is no replay; the same number for
    # other bytes never comes from the fleet and is refused
    again.check_offer(signed_offer(b"new", "dev", 3, offer_seq=11), 3)
    with pytest.raises(Stale):
        again.check_offer(signed_offer(b"other", "dev", 3, offer_seq=11), 3)
    _take(again, b"old", 12)  # the server moved the device back: a new offer, taken


def test_offers_of_an_older_server_count_only_until_a_counted_one_was_taken(tmp_path: Path) -> None:
    trust = _trust(tmp_path)
    _take(trust, b"a", 0)  # a server that does not count yet
    _take(trust, b"b", 0)
    _take(trust, b"c", 5)
    with pytest.raises(Stale):
        trust.check_offer(signed_offer(b"a", "dev", 3, offer_seq=0), 3)


def test_an_unreadable_counter_file_starts_from_nothing(tmp_path: Path) -> None:
    (tmp_path / "offers.json").write_text('{"offer_seq": "x"}')
    _take(_trust(tmp_path), b"a", 1)


def test_a_damaged_counter_file_is_said_not_silently_reset(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "offers.json").write_bytes(b"\0\0\0")  # a torn or damaged file
    with caplog.at_level(logging.WARNING, logger="edgecut.agent.trust"):
        _take(_trust(tmp_path), b"a", 1)
    assert "offers.json cannot be read: the offer counter starts again from 0" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="edgecut.agent.trust"):
        _trust(tmp_path / "fresh")  # no file yet: a new device, nothing to say
    assert caplog.text == ""


def test_a_model_adapted_to_the_device_is_off_the_refinement_chain() -> None:
    """Issue 31: the device serves a model adapted from the quick model; the base's refinement 1 adapted
    again (its parent: the refinement, not the served model) and a re-adaptation to a new bucket of that
    refinement are both applied, where the same plain offers would be stale."""
    from edgecut.v1 import fleet_pb2 as pb

    serving = pb.Manifest(artifact_id="a0" * 32, build_key="k", refinement=0, adapted_from_sequence=1)
    again = pb.Manifest(
        artifact_id="a1" * 32,
        build_key="k",
        refinement=1,
        parent_artifact_id="r1" * 32,
        adapted_from_sequence=1,
    )
    Trust.check_refinement(again, serving)
    moved = pb.Manifest(artifact_id="a2" * 32, build_key="k", refinement=1, parent_artifact_id="r1" * 32)
    moved.adapted_from_sequence = 9
    Trust.check_refinement(moved, again)
    for plain in (again, moved):
        unflagged = pb.Manifest()
        unflagged.CopyFrom(plain)
        unflagged.adapted_from_sequence = 0
        with pytest.raises(Stale):
            Trust.check_refinement(unflagged, again)
