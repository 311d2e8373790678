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
