"""The one helper that writes agent configs (edgecut.agent.provision) and `edgecut agent config`."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgecut.agent.provision import agent_config, write_agent_config
from edgecut.agent.settings import load_settings
from edgecut.cli import main
from edgecut.errors import ConfigError
from tests.support.keys import fleet_key


def test_written_config_pins_the_fleet_key_the_agent_then_reads(tmp_path: Path) -> None:
    key = fleet_key().public_text
    path = tmp_path / "agent.yaml"
    write_agent_config(path, key, device_id="pi-01", broker_url="mqtt://127.0.0.1:1883", state_dir=tmp_path)
    settings = load_settings(path, environ={})
    assert settings.fleet_keys == [key] and settings.state_dir == tmp_path


@pytest.mark.parametrize(
    ("key", "settings", "says"),
    [
        ("", {"device_id": "a"}, "needs the fleet's public key"),
        ("ed25519:not-base64!", {"device_id": "a"}, "fleet key"),
        (None, {"device_id": "bad id"}, "device_id"),
        (None, {"device_id": "a", "no_such_setting": 1}, "no_such_setting"),
    ],
)
def test_a_config_the_agent_would_reject_is_refused_before_it_is_written(
    key: str | None, settings: dict[str, object], says: str
) -> None:
    with pytest.raises(ConfigError, match=says):
        agent_config(fleet_key().public_text if key is None else key, **settings)


def test_agent_config_command_reads_the_servers_public_key_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pub = tmp_path / "fleet-signing.pub"
    pub.write_text(fleet_key().public_text + "\n")
    out = tmp_path / "etc" / "agent.yaml"
    argv = ["agent", "config", "--device-id", "pi-01", "--broker", "mqtts://fleet:8883", "--fleet-key"]
    code = main([*argv, str(pub), "--tasks", "seg,depth", "--set", "listen=127.0.0.1:0", "--out", str(out)])
    assert code == 0
    settings = load_settings(out, environ={})
    assert settings.fleet_keys == [fleet_key().public_text] and settings.tasks == ["seg", "depth"]
    assert settings.listen == "127.0.0.1:0"

    assert main([*argv, str(tmp_path / "missing.pub")]) == 2
    err = capsys.readouterr().err
    assert "cannot read the fleet key" in err and "Traceback" not in err
