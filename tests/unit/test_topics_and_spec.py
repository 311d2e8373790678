from __future__ import annotations

import pytest

from edgecut import topics
from edgecut.server.errors import EmptyTasksError, ImpossibleBudgetError
from edgecut.server.spec import Budget, BuildSpec


def test_device_topic_round_trip() -> None:
    t = topics.device_topic("rpi-7", topics.NEEDS)
    assert t == "edgecut/v1/devices/rpi-7/needs"
    assert topics.device_of(t) == "rpi-7"
    assert topics.device_of("edgecut/v1/other/x/needs") is None
    assert topics.shared(topics.NEEDS) == "$share/edgecut-needs/edgecut/v1/devices/+/needs"


@pytest.mark.parametrize("bad", ["%00", "x" * 65, "x" * 1000, "a b", "dév", "a\x00b", "", "dev-A\n"])
def test_a_topic_naming_an_id_no_agent_may_have_names_no_device(bad: str) -> None:
    assert topics.device_of(f"edgecut/v1/devices/{bad}/telemetry") is None
    assert topics.device_of(topics.device_topic("x" * 64, topics.STATE)) == "x" * 64


def test_build_key_ignores_task_order_and_tiny_budget_changes() -> None:
    a = BuildSpec.create(["seg", "depth"], Budget(macs_fraction=0.30))
    b = BuildSpec.create(["depth", "seg", "seg"], Budget(macs_fraction=0.31))
    c = BuildSpec.create(["depth", "seg"], Budget(macs_fraction=0.5))
    assert a.build_key("m") == b.build_key("m")
    assert a.build_key("m") != c.build_key("m")
    assert a.build_key("m") != a.build_key("other-base")


def test_budget_parse_and_errors() -> None:
    assert Budget.parse("macs=0.3") == Budget(macs_fraction=0.3)
    assert Budget.parse("params=2e5") == Budget(max_params=200000)
    for bad in ("macs", "speed=3", "macs=abc", "macs=-1", "params=0"):
        with pytest.raises(ImpossibleBudgetError):
            Budget.parse(bad)
    with pytest.raises(EmptyTasksError):
        BuildSpec.create([" ", ""], Budget())


def test_each_work_topic_has_its_own_shared_group() -> None:
    """iotcore keeps one filter per shared group and client: one group for all would lose messages."""
    from edgecut.server.fleet.link.broker import server_subscriptions

    subs = dict(server_subscriptions("fleet-a"))
    groups = [f.split("/")[1] for f in subs if f.startswith("$share/")]
    assert sorted(groups) == [
        "fleet-a-ack",
        "fleet-a-needs",
        "fleet-a-stats",
        "fleet-a-swap",
        "fleet-a-telemetry",
    ]
    assert subs["edgecut/v1/devices/+/state"] == 1  # retained state: a plain subscription for every replica


def test_embedded_broker_choice_comes_from_its_own_variable() -> None:
    from edgecut.broker import BrokerError, chosen_broker

    assert chosen_broker({}) == "auto"
    assert chosen_broker({"EDGECUT_EMBEDDED_BROKER": "IOTCORE "}) == "iotcore"
    # the server's broker URL variable is another setting and must not be read as a broker kind
    assert chosen_broker({"EDGECUT_BROKER": "mqtt://10.0.0.1:1883"}) == "auto"
    with pytest.raises(BrokerError, match="EDGECUT_EMBEDDED_BROKER='amqtt'"):
        chosen_broker({"EDGECUT_EMBEDDED_BROKER": "amqtt"})
