"""CommandDesk: signed, recorded, audited, never retained; refusals say why; only the right device acks."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from edgecut.envelopes import open_command, sign_command
from edgecut.server.fleet.commands import client as commands
from edgecut.server.fleet.commands.desk import FAILED, OK, SENT, CommandDesk, CommandError, open_operator_key
from edgecut.server.fleet.events import FleetEvent, Observers
from edgecut.server.fleet.link import wire
from edgecut.server.fleet.state.registry import Registry
from edgecut.server.web.metrics import FleetMetrics
from edgecut.signing import Keyring, parse_public_key
from edgecut.v1 import fleet_pb2 as pb

TASKS = ["seg", "depth", "normals"]


class Desk:
    def __init__(self, root: Path) -> None:
        self.registry = Registry(f"sqlite:///{root / 'r.sqlite3'}")
        self.key = open_operator_key(None, root)
        self.sent: list[tuple[str, bytes]] = []
        self.events: list[FleetEvent] = []
        observers = Observers()
        observers.add(self.events.append)
        self.desk = CommandDesk(
            self.registry, self.key, lambda d, p: self.sent.append((d, p)), lambda: TASKS, observers
        )
        self.registry.devices.record_needs("pi-1", ["seg"], 1, {}, {}, "rpi4", "macs=0.3")
        self.registry.devices.record_needs("pi-2", ["seg"], 1, {}, {}, "rpi4", "macs=0.3")

    def opened(self, payload: bytes) -> pb.Command:
        keyring = Keyring([parse_public_key(self.key.public_text)])
        return open_command(keyring, pb.Command.FromString(payload))

    def ack(
        self,
        device: str,
        command_id: str,
        ok: bool = True,
        reason: str = "",
        action: str = "",
        echo: pb.Command | None = None,
    ) -> None:
        """An ack as the bridge hands it on; `echo` is the signed command the device obeyed."""
        msg = pb.CommandAck(device_id=device, command_id=command_id, ok=ok, reason=reason, action=action)
        if echo is not None:
            msg.command.CopyFrom(echo)
        self.desk(FleetEvent("ack", device, wire.to_dict(msg)))


@pytest.fixture
def d(tmp_path: Path) -> Iterator[Desk]:
    desk = Desk(tmp_path)
    yield desk
    desk.registry.close()


def test_a_command_is_signed_recorded_audited_and_published(d: Desk) -> None:
    rec = d.desk.send("pi-1", "set_tasks", "alice", "127.0.0.1", [" Seg", "depth", "seg"])
    assert rec["state"] == SENT and rec["args"] == {"tasks": ["seg", "depth"]} and rec["who"] == "alice"
    ((device, payload),) = d.sent
    cmd = d.opened(payload)  # verifies against the operator's public key
    assert device == "pi-1" and cmd.device_id == "pi-1" and list(cmd.set_tasks.tasks) == ["seg", "depth"]
    assert cmd.command_id == rec["command_id"] and cmd.issued_unix_ms > 0
    (audit,) = d.desk.audit()
    assert (audit["who"], audit["origin"], audit["event"], audit["detail"]) == (
        "alice",
        "127.0.0.1",
        "sent",
        "tasks=seg,depth",
    )
    assert [e.data["result"] for e in d.events if e.kind == "command"] == ["sent"]
    for action, field in (("pin", "pin"), ("unpin", "unpin"), ("rollback", "rollback")):
        d.desk.send("pi-1", action, "alice")
        assert d.opened(d.sent[-1][1]).WhichOneof("action") == field


def test_the_key_is_generated_once_with_its_public_line(tmp_path: Path) -> None:
    key = open_operator_key(None, tmp_path)
    assert (tmp_path / "operator.pub").read_text().strip() == key.public_text
    assert open_operator_key(None, tmp_path).key_id == key.key_id  # loaded, not made again


@pytest.mark.parametrize(
    ("device", "action", "tasks", "status", "says"),
    [
        ("nobody", "pin", None, 404, "no device 'nobody' in the registry"),
        ("pi-1/#", "pin", None, 400, "is not valid"),
        ("pi-1", "reboot", None, 400, "unknown action 'reboot'"),
        (
            "pi-1",
            "set_tasks",
            ["sky"],
            400,
            "unknown task 'sky': this fleet's model knows seg, depth, normals",
        ),
        ("pi-1", "set_tasks", [" "], 400, "needs at least one task"),
        ("pi-1", "pin", ["seg"], 400, "pin takes no tasks"),
    ],
)
def test_refusals_say_why_and_are_audited(
    d: Desk, device: str, action: str, tasks: list[str] | None, status: int, says: str
) -> None:
    with pytest.raises(CommandError) as err:
        d.desk.send(device, action, "mallory", "10.0.0.9", tasks)
    assert err.value.status == status and says in str(err.value)
    assert d.sent == [] and d.desk.recent() == []
    (audit,) = d.desk.audit()
    assert audit["event"] == "refused" and audit["who"] == "mallory" and says in audit["detail"]


def test_acks_land_once_and_only_from_the_device_commanded(d: Desk) -> None:
    rec = d.desk.send("pi-1", "rollback", "alice")
    cid = rec["command_id"]
    d.ack("pi-2", cid)  # another device answering for pi-1: ignored
    d.ack("pi-1", "../" * 12)  # not a command id at all: ignored
    assert d.desk.get(cid)["state"] == SENT  # type: ignore[index]
    d.ack("pi-1", cid, ok=False, reason="no previous model to roll back to")
    d.ack("pi-1", cid, ok=True)  # QoS 1 may deliver twice; the first answer stands
    got = d.desk.get(cid)
    assert (
        got is not None and got["state"] == FAILED and got["message"] == "no previous model to roll back to"
    )
    assert got["acked_at"] is not None
    assert [a["event"] for a in d.desk.audit()] == ["failed", "sent"]
    ok = d.desk.send("pi-1", "pin", "alice")
    d.ack("pi-1", ok["command_id"])
    assert d.desk.get(ok["command_id"])["state"] == OK  # type: ignore[index]
    results = [e.data["result"] for e in d.events if e.kind == "command"]
    assert results == ["sent", "failed", "sent", "ok"]


def test_a_command_sent_by_edgecut_command_is_recorded_audited_and_counted_from_its_ack(d: Desk) -> None:
    metrics = FleetMetrics(dict, dict, frozenset({"rpi4"}))
    d.desk.observers.add(metrics)
    sent = sign_command(
        d.key, commands.build("pi-1", "rollback")
    )  # what `edgecut command pi-1 rollback` sends
    cid = sent.command_id
    d.ack("pi-1", cid, ok=True, action="rollback", echo=sent)
    d.ack("pi-1", cid, ok=True, action="rollback", echo=sent)  # delivered twice: recorded once
    got = d.desk.get(cid)
    assert got is not None and (got["device_id"], got["action"], got["state"], got["who"]) == (
        "pi-1",
        "rollback",
        OK,
        "outside the dashboard",
    )
    (audit,) = d.desk.audit(device_id="pi-1")
    assert (audit["event"], audit["action"], audit["who"], audit["command_id"]) == (
        "ok",
        "rollback",
        "outside the dashboard",
        cid,
    )
    text = metrics.render().decode()
    assert 'edgecut_rollbacks_total{reason="operator"} 1.0' in text
    assert 'edgecut_operator_commands_total{action="rollback",result="ok"} 1.0' in text


def test_a_device_cannot_write_operator_commands_into_the_audit_log_by_acking_made_up_ids(
    d: Desk, tmp_path: Path
) -> None:
    """An ack of an id the desk never sent is recorded only with this fleet's signature for that device."""
    metrics = FleetMetrics(dict, dict, frozenset({"rpi4"}))
    d.desk.observers.add(metrics)
    made_up = commands.build("pi-1", "rollback")
    d.ack("pi-1", made_up.command_id, action="rollback")  # no echo at all
    d.ack("pi-1", made_up.command_id, action="rollback", echo=made_up)  # echoed but unsigned
    stranger = open_operator_key(None, tmp_path / "stranger")
    forged = sign_command(stranger, commands.build("pi-1", "rollback"))  # another operator key
    d.ack("pi-1", forged.command_id, action="rollback", echo=forged)
    for_other = sign_command(d.key, commands.build("pi-2", "rollback"))  # genuine, but for pi-2
    d.ack("pi-1", for_other.command_id, action="rollback", echo=for_other)
    genuine = sign_command(d.key, commands.build("pi-1", "pin"))
    d.ack("pi-1", "f" * 32, action="pin", echo=genuine)  # a genuine echo under another id
    assert d.desk.recent() == [] and d.desk.audit() == []
    assert 'edgecut_rollbacks_total{reason="operator"} 0.0' in metrics.render().decode()
