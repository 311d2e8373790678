"""Only the fleet's server can give a device a model, and only an operator can command it.

An attacker here is any client of the broker: it publishes (retained) offers naming its own gRPC
server and the sha256 of its own file, commands for the device, or replays genuine signed messages.
"""

from __future__ import annotations

from collections.abc import Iterator

import paho.mqtt.client as mqtt
import pytest

from edgecut import topics
from edgecut.agent.agent import Agent
from edgecut.agent.trust import Stale
from edgecut.envelopes import now_ms, sign_command, sign_manifest
from edgecut.v1 import fleet_pb2
from tests.support.agent_helpers import publish_as, serving, signed_offer, wait_serving, wait_until
from tests.support.download_faults import DownloadServicer, start_download_server
from tests.support.keys import operator_key, operator_key_path, other_key
from tests.support.onnx_models import build_model

pytestmark = pytest.mark.integration


@pytest.fixture
def evil_server() -> Iterator[tuple[DownloadServicer, str]]:
    servicer = DownloadServicer()
    server, address = start_download_server(servicer)
    yield servicer, address
    server.stop(0)


def _refusals(fleet, agent: Agent, artifact_id: str) -> list[dict]:
    return [r for r in fleet.swaps(agent.device_id) if r["artifact_id"] == artifact_id and not r["ok"]]


def test_forged_model_offers_are_refused_and_the_agent_keeps_serving(
    make_agent, fleet, attacker, evil_server
) -> None:
    agent = make_agent(tasks=["seg"])
    seg_id = wait_serving(agent, ["seg"])
    servicer, evil_address = evil_server
    evil = build_model(["seg"], seed=66)
    evil_id = servicer.add(evil)
    seq = agent.tasks.seq
    base = dict(device_id=agent.device_id, artifact_id=evil_id, sha256=evil_id, size_bytes=len(evil))
    forged = {
        # the attack of issue 15: plain fields only, retained, naming the attacker's server
        "unsigned": fleet_pb2.ModelReady(**base, tasks=["seg"], grpc_address=evil_address, needs_seq=seq),
        # a well-formed manifest, signed by a key the device does not trust
        "unknown key": _signed(base, evil_address, seq, key=other_key()),
        # a genuine manifest from the fleet (for other bytes) with the artifact swapped in the envelope
        "tampered": _tampered(base, evil_address, seq),
    }
    for name, msg in forged.items():
        before = len(_refusals(fleet, agent, evil_id))
        publish_as(attacker, agent.device_id, topics.MODEL, msg.SerializeToString(), retain=True)
        wait_until(lambda before=before: len(_refusals(fleet, agent, evil_id)) > before)
        assert serving(agent) == seg_id, name
        assert "refused" in agent.status().last_error, name
    assert servicer.requests == []  # it never even dialled the address an unsigned field named
    assert not agent.store.has(evil_id) and not agent.store.part_path(evil_id).exists()


def test_a_forged_offer_refused_while_a_swap_runs_stays_in_the_status(
    make_agent, fleet, attacker, evil_server
) -> None:
    """A swap that worked clears the error before it; a refusal that came while it ran is newer and stays
    (the fleet-as-shipped CI run on iotcore saw the first swap's report wipe a forged offer's refusal)."""
    agent = make_agent(tasks=["seg"])
    wait_serving(agent, ["seg"])
    _, evil_address = evil_server
    forged = fleet_pb2.ModelReady(
        device_id=agent.device_id, artifact_id="e" * 64, sha256="e" * 64, size_bytes=10, tasks=["seg", "depth"],
        grpc_address=evil_address, needs_seq=agent.tasks.seq + 1,
    )  # fmt: skip
    install = agent.runtime.install

    def install_while_attacked(*args, **kwargs):
        publish_as(attacker, agent.device_id, topics.MODEL, forged.SerializeToString())
        wait_until(lambda: "refused" in agent.last_error)
        return install(*args, **kwargs)

    agent.runtime.install = install_while_attacked  # type: ignore[method-assign]
    agent.set_tasks(["seg", "depth"])
    wait_serving(agent, ["seg", "depth"])
    wait_until(lambda: fleet.swaps(agent.device_id) and fleet.swaps(agent.device_id)[-1]["ok"])
    assert "no signed manifest" in agent.status().last_error


def test_genuine_offers_for_another_device_or_older_needs_are_not_taken(make_agent, fleet, attacker) -> None:
    agent = make_agent(tasks=["seg"])
    seg_id = wait_serving(agent, ["seg"])
    other = fleet.prebuild(agent, ["seg", "depth"])  # signed by the fleet for the twin device
    replay = fleet_pb2.ModelReady()
    replay.CopyFrom(other)
    replay.device_id = agent.device_id  # the plain field lies; the signed manifest names the twin
    publish_as(attacker, agent.device_id, topics.MODEL, replay.SerializeToString())
    wait_until(lambda: _refusals(fleet, agent, other.artifact_id))
    assert "signed for device" in _refusals(fleet, agent, other.artifact_id)[0]["reason"]
    # a genuine offer for this device, but for needs it no longer has (seq 0 -> now 1): ignored
    agent.set_tasks(["seg", "depth"])
    both_id = wait_serving(agent, ["seg", "depth"])
    agent.set_tasks(["seg"])
    assert wait_serving(agent, ["seg"]) == seg_id
    old = signed_offer(b"x", agent.device_id, needs_seq=1, tasks=["seg", "depth"])
    with pytest.raises(Stale, match="stale or replayed"):
        agent.trust.check_offer(old, agent.tasks.seq)
    latest = agent._latest_ready
    agent._on_model_ready(old)  # as if the broker delivered it now: not even queued
    assert agent._latest_ready is latest and serving(agent) == seg_id and both_id != seg_id


def test_forged_replayed_stale_and_retained_commands_are_refused(make_agent, fleet, attacker) -> None:
    agent = make_agent(tasks=["seg"])
    wait_serving(agent, ["seg"])
    acks: list[fleet_pb2.CommandAck] = []
    watcher = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="ack-watch")
    watcher.on_message = lambda c, u, m: acks.append(fleet_pb2.CommandAck.FromString(m.payload))
    watcher.connect("127.0.0.1", int(fleet.broker_url.rsplit(":", 1)[1]))
    watcher.subscribe(topics.device_topic(agent.device_id, topics.ACK), 1)
    watcher.loop_start()
    try:
        wait_until(lambda: watcher.is_connected())

        def command(cid: str, key=None, issued: int | None = None, device: str | None = None) -> bytes:
            cmd = fleet_pb2.Command(
                device_id=device or agent.device_id,
                command_id=cid,
                set_tasks=fleet_pb2.SetTasks(tasks=["count"]),
            )
            return sign_command(key or operator_key(), cmd, issued).SerializeToString()

        unsigned = fleet_pb2.Command(
            device_id=agent.device_id, command_id="u1", set_tasks=fleet_pb2.SetTasks(tasks=["count"])
        )
        cases = [
            ("u1", unsigned.SerializeToString(), False, "not signed"),
            ("k1", command("k1", key=other_key()), False, "not trusted"),
            ("s1", command("s1", issued=now_ms() - 2 * 3600 * 1000), False, "stale"),
            ("d1", command("d1", device="someone-else"), False, "not us"),
        ]
        for cid, payload, retain, why in cases:
            publish_as(attacker, agent.device_id, topics.COMMAND, payload, retain=retain)
            ack = wait_until(lambda cid=cid: next((a for a in acks if a.command_id == cid), None))
            assert not ack.ok and why in ack.reason, (cid, ack.reason)
        assert agent.tasks.tasks == ["seg"]
        # a genuine command is obeyed once; the same bytes replayed are refused
        good = command("g1")
        publish_as(attacker, agent.device_id, topics.COMMAND, good)
        wait_until(lambda: any(a.command_id == "g1" and a.ok for a in acks))
        assert agent.tasks.tasks == ["count"]
        agent.set_tasks(["seg"])
        publish_as(attacker, agent.device_id, topics.COMMAND, good)
        wait_until(lambda: sum(a.command_id == "g1" for a in acks) == 2)
        assert [a.ok for a in acks if a.command_id == "g1"] == [True, False]
        assert agent.tasks.tasks == ["seg"]
        # a retained command reaches the agent again at every (re)connect: refused unread there
        publish_as(attacker, agent.device_id, topics.COMMAND, command("r1"), retain=True)
        wait_until(lambda: any(a.command_id == "r1" for a in acks))  # live delivery: a normal command
        agent.set_tasks(["seg"])
        agent.stop()
        again = make_agent(device_id=agent.device_id, state_dir=agent.settings.state_dir)
        # a clean session on both brokers: the retained command comes with the subscription, flagged
        wait_until(lambda: any(a.reason == "retained command ignored" for a in acks))
        assert again.link.wait_connected(10) and again.tasks.tasks == ["seg"]
        publish_as(attacker, agent.device_id, topics.COMMAND, b"", retain=True)  # clear it
    finally:
        watcher.disconnect()
        watcher.loop_stop()


@pytest.mark.parametrize("target", ["model", "manifest"])
def test_tampered_model_or_manifest_on_disk_is_refused_before_load(make_agent, fleet, target) -> None:
    agent = make_agent(tasks=["seg"])
    seg_id = wait_serving(agent, ["seg"])
    agent.stop()
    path = agent.store.path(seg_id) if target == "model" else agent.store.offer_path(seg_id)
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    path.write_bytes(bytes(raw))
    restarted = Agent(agent.settings)
    assert restarted.runtime.restore() is None  # nothing trustworthy to serve: nothing loaded
    assert restarted.runtime.slot.current is None
    assert not restarted.store.has(seg_id)  # forgotten; the fleet's next offer brings it again


def _signed(base: dict, address: str, seq: int, key) -> fleet_pb2.ModelReady:
    manifest = fleet_pb2.Manifest(
        artifact_id=base["artifact_id"],
        sha256=base["sha256"],
        size_bytes=base["size_bytes"],
        tasks=["seg"],
        device_id=base["device_id"],
        needs_seq=seq,
        grpc_address=address,
    )
    data, sig = sign_manifest(key, manifest)
    return fleet_pb2.ModelReady(**base, tasks=["seg"], grpc_address=address, manifest=data, signature=sig)


def _tampered(base: dict, address: str, seq: int) -> fleet_pb2.ModelReady:
    genuine = signed_offer(
        b"the fleet's own model", base["device_id"], seq, tasks=["seg"], grpc_address=address
    )
    manifest = fleet_pb2.Manifest.FromString(genuine.manifest)
    manifest.artifact_id = manifest.sha256 = base["artifact_id"]  # Mallory's bytes
    msg = fleet_pb2.ModelReady()
    msg.CopyFrom(genuine)
    msg.manifest = manifest.SerializeToString()  # the fleet's signature no longer matches
    msg.artifact_id = base["artifact_id"]
    return msg


def test_operator_cli_sends_signed_commands_and_reports_the_ack(make_agent, fleet, capsys) -> None:
    from edgecut.cli import main

    agent = make_agent(tasks=["seg"])
    seg_id = wait_serving(agent, ["seg"])
    operator_key()  # make sure the key file exists
    argv = [
        "command",
        agent.device_id,
        "pin",
        "--key",
        str(operator_key_path()),
        "--broker",
        fleet.broker_url,
    ]
    assert main(argv) == 0 and "did pin" in capsys.readouterr().out
    assert agent.status().pinned_artifact_id == seg_id
    assert main([*argv[:2], "set-tasks", "nope!", *argv[3:]]) == 1  # refused by the device: exit 1
    assert "refused set-tasks" in capsys.readouterr().err
    assert main([*argv[:2], "unpin", *argv[3:]]) == 0
    assert agent.status().pinned_artifact_id == ""
