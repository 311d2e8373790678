from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from edgecut.agent import resources
from edgecut.agent.settings import load_settings
from edgecut.agent.tasks import TaskStore, parse_tasks
from edgecut.errors import ConfigError


def test_settings_from_yaml_then_env(tmp_path: Path) -> None:
    cfg = tmp_path / "agent.yaml"
    cfg.write_text(
        f"device_id: rpi-1\nbroker_url: mqtt://10.0.0.2:1883\nstate_dir: {tmp_path}\ntasks: [seg]\n"
    )
    s = load_settings(cfg, environ={"EDGECUT_DEVICE_ID": "rpi-2", "EDGECUT_TASKS": "seg,depth"})
    assert s.device_id == "rpi-2"
    assert s.broker_url == "mqtt://10.0.0.2:1883"
    assert s.tasks == ["seg", "depth"]
    assert s.state_dir == tmp_path


def test_settings_reject_unknown_and_bad_values(tmp_path: Path) -> None:
    cfg = tmp_path / "agent.yaml"
    cfg.write_text("device_id: a/b\nbroker: mqtt://x\ntelemetry_interval_s: -1\n")
    with pytest.raises(ConfigError) as err:
        load_settings(cfg, environ={})
    text = str(err.value)
    assert "broker" in text and "unknown key" in text
    assert "device_id = 'a/b'" in text
    assert "telemetry_interval_s" in text
    assert err.value.exit_code == 2
    cfg.write_text("- just a list\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_settings(cfg, environ={})


def test_bad_config_exits_with_code_2(tmp_path: Path) -> None:
    cfg = tmp_path / "agent.yaml"
    cfg.write_text("device_id: d1\nbogus_key: 1\n")
    proc = subprocess.run(
        [sys.executable, "-m", "edgecut.agent", "agent", "run", "--config", str(cfg)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 2
    assert "bogus_key" in proc.stderr and "unknown key" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_task_store_persists_and_counts_changes(tmp_path: Path) -> None:
    store = TaskStore(tmp_path, ["seg"])
    seen: list[tuple[list[str], int]] = []
    store.subscribe(lambda t, s: seen.append((t, s)))
    assert store.tasks == ["seg"] and store.seq == 0
    assert store.set(["Seg,depth", "depth"]) is True
    assert store.set(["seg", "depth"]) is False  # unchanged: nobody is told
    assert seen == [(["seg", "depth"], 1)]
    again = TaskStore(tmp_path, ["count"])  # the persisted choice wins over the config default
    assert again.tasks == ["seg", "depth"] and again.seq == 1
    again.set(["count"])
    assert TaskStore(tmp_path).seq == 2


def test_parse_tasks_rejects_bad_names() -> None:
    assert parse_tasks(["seg, depth ,seg"]) == ["seg", "depth"]
    for bad in (["se/g"], [" , "], ["x" * 40]):
        with pytest.raises(ConfigError):
            parse_tasks(bad)


def test_resources_probe() -> None:
    r = resources.probe("/")
    assert r.cpu_count >= 1
    assert r.ram_total_bytes > r.ram_available_bytes > 0
    assert "CPUExecutionProvider" in r.ort_providers
    assert r.arch and r.os and r.device_class
    assert r.disk_free_bytes > 0


@pytest.mark.parametrize(
    ("arch", "model", "want"),
    [
        ("aarch64", "NVIDIA Jetson Nano Developer Kit", "jetson-nano"),
        ("aarch64", "NVIDIA Jetson AGX Orin", "jetson-orin"),
        ("aarch64", "Raspberry Pi 4 Model B Rev 1.4", "rpi4"),
        ("armv7l", "Raspberry Pi 3 Model B Plus Rev 1.3", "rpi3"),
        ("x86_64", "", "x86"),
    ],
)
def test_device_class(arch: str, model: str, want: str) -> None:
    assert resources.device_class(arch, model) == want


def test_declared_device_class_replaces_the_probed_one_in_needs(tmp_path: Path) -> None:
    from edgecut.agent.agent import Agent

    cfg = tmp_path / "agent.yaml"
    cfg.write_text(f"device_id: pi-9\nstate_dir: {tmp_path}\ntasks: [seg, depth]\ndevice_class: rpi4\n")
    needs = Agent(load_settings(cfg, environ={})).needs()
    assert needs.resources.device_class == "rpi4"
    assert list(needs.tasks) == ["seg", "depth"] and needs.device_id == "pi-9"
    assert needs.resources.cpu_count >= 1  # the rest still comes from the probe
