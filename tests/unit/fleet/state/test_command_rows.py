"""The commands repository: an ack counts once, only from the device the command went to."""

from __future__ import annotations

from pathlib import Path

from edgecut.server.fleet.state.commands import SENT
from edgecut.server.fleet.state.registry import Registry


def _row(command_id: str, device_id: str) -> dict[str, object]:
    return {
        "command_id": command_id,
        "device_id": device_id,
        "action": "rollback",
        "args": {},
        "who": "ops",
        "origin": "test",
        "created": 1.0,
        "state": SENT,
        "message": "",
        "acked_at": None,
    }


def test_an_ack_counts_once_and_only_from_its_device(tmp_path: Path) -> None:
    reg = Registry(f"sqlite:///{tmp_path / 'r.sqlite3'}")
    try:
        reg.commands.add(_row("c1", "cam-1"))
        assert reg.commands.ack("c1", "cam-2", "ok", "", 2.0, None) == ("unknown", None)  # another device
        assert reg.commands.ack("c9", "cam-1", "ok", "", 2.0, None) == ("unknown", None)  # never sent
        result, record = reg.commands.ack("c1", "cam-1", "failed", "no model", 3.0, None)
        assert result == "acked" and record is not None
        assert (record["state"], record["message"], record["acked_at"]) == ("failed", "no model", 3.0)
        assert reg.commands.ack("c1", "cam-1", "ok", "", 4.0, None) == ("duplicate", None)
        assert reg.commands.get("c1")["state"] == "failed"  # type: ignore[index]
        # a command another process sent with the fleet's key: recorded from its ack
        result, record = reg.commands.ack(
            "c2", "cam-1", "ok", "", 5.0, {**_row("c2", "cam-1"), "created": 5.0}
        )
        assert result == "acked" and [r["command_id"] for r in reg.commands.recent("cam-1")] == ["c2", "c1"]
        reg.commands.audit("ops", "test", "sent", "rollback", "cam-1", "c1", "x" * 5000)
        [entry] = reg.commands.audit_log(device_id="cam-1")
        assert len(entry["detail"]) == 2000
    finally:
        reg.close()


def test_a_rollout_is_kept_and_decided(tmp_path: Path) -> None:
    reg = Registry(f"sqlite:///{tmp_path / 'r.sqlite3'}")
    try:
        row = {
            "id": "r1", "device_class": "x86", "budget": "macs=0.5", "tasks": ["seg"],
            "baseline_artifact": "a", "baseline_build_key": "k", "candidate_artifact": "b",
            "candidate_build_key": "k", "canaries": ["cam-1"], "cohort": ["cam-1", "cam-2"],
            "state": "canary", "reason": "", "quality": {}, "baseline_p95_ms": 3.0, "created": 1.0,
            "decided": None,
        }  # fmt: skip
        reg.rollouts.add(row)
        reg.rollouts.decide("r1", "promoted", "canaries held", 9.0)
        reg.rollouts.decide("gone", "promoted", "", 9.0)  # an unknown id changes nothing
        [kept] = reg.rollouts.all(("promoted",))
        assert (kept["state"], kept["reason"], kept["decided"]) == ("promoted", "canaries held", 9.0)
        assert reg.rollouts.all(("canary",)) == []
    finally:
        reg.close()
