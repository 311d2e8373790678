"""The agent: wires tasks, the MQTT link, downloads, the runtime and the local API together.

Slow work (download, load, validate, swap) runs on one worker thread fed by a queue, so paho's
network thread and the API threads never block on it and swaps happen one at a time.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Iterable

import grpc
import numpy as np
import psutil

from edgecut import __version__
from edgecut.v1 import agent_pb2, fleet_pb2

from . import resources
from .artifacts import ModelStore
from .errors import AgentError, FetchError, ModelRejected
from .fetch import Downloader
from .link_mqtt import LinkHandlers, MqttLink, now_ms
from .runtime import Runtime, SwapResult
from .serve import create_server
from .settings import AgentSettings
from .statefile import atomic_write
from .tasks import TaskStore

logger = logging.getLogger(__name__)


class Agent:
    def __init__(self, settings: AgentSettings) -> None:
        self.settings = settings
        self.device_id = settings.device_id
        settings.state_dir.mkdir(parents=True, exist_ok=True)
        self.tasks = TaskStore(settings.state_dir, settings.tasks)
        self.store = ModelStore(settings.state_dir)
        self.runtime = Runtime(self.store, settings.ort_threads)
        self.last_error = ""
        self.api_address = ""
        self._downloaders: dict[str, Downloader] = {}
        self._jobs: queue.Queue[Callable[[], object] | None] = queue.Queue()
        self._latest_ready: fleet_pb2.ModelReady | None = None
        self._worker: threading.Thread | None = None
        self._server: grpc.Server | None = None
        self._process = psutil.Process()
        self.link = MqttLink(
            self.device_id,
            settings.broker_url,
            LinkHandlers(
                state=self.device_state,
                needs=self.needs,
                telemetry=self.telemetry,
                on_model=self._on_model_ready,
                on_command=self._on_command,
                on_error=self._on_error,
            ),
            username=settings.mqtt_username,
            password=settings.mqtt_password.get_secret_value(),
            ca_file=settings.mqtt_ca_file,
            keepalive_s=settings.keepalive_s,
            reconnect_max_s=settings.reconnect_max_s,
            telemetry_interval_s=settings.telemetry_interval_s,
        )
        self.tasks.subscribe(lambda tasks, seq: self.link.publish_needs())

    # --- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        """Serve the model on disk at once, then open the API and the broker link (non-blocking)."""
        restored = self.runtime.restore()
        if restored is not None and not restored.ok:
            self.last_error = restored.reason
        self._worker = threading.Thread(target=self._work, name="agent-worker", daemon=True)
        self._worker.start()
        self._server, self.api_address = create_server(self.settings.listen, self)
        self._server.start()
        # lets `edgecut agent ...` find an API bound to port 0
        atomic_write(self.settings.state_dir / "api_address", self.api_address.encode())
        self.link.start()
        logger.info("agent %s up; local API on %s", self.device_id, self.api_address)

    def stop(self) -> None:
        self.link.stop()
        self._jobs.put(None)
        if self._worker:
            self._worker.join(timeout=10)
        if self._server:
            self._server.stop(grace=2).wait(5)

    def alive(self) -> bool:
        """The worker thread runs and the agent answers a status call (the systemd watchdog's check)."""
        if self._worker is None or not self._worker.is_alive():
            return False
        self.status()  # takes the runtime's and the link's state: a deadlock stops the watchdog pings
        return True

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            try:
                job()
            except Exception:
                logger.exception("agent job failed")

    # --- messages to publish ----------------------------------------------------------------
    def needs(self) -> fleet_pb2.TaskNeeds:
        res = resources.probe(self.settings.state_dir)
        if self.settings.device_class:  # declared in the config: the probe cannot tell every board apart
            res.device_class = self.settings.device_class
        return fleet_pb2.TaskNeeds(
            device_id=self.device_id,
            tasks=self.tasks.tasks,
            max_latency_ms=self.settings.max_latency_ms,
            resources=res,
            seq=self.tasks.seq,
            sent_unix_ms=now_ms(),
        )

    def device_state(self, online: bool) -> fleet_pb2.DeviceState:
        model = self.runtime.slot.current
        return fleet_pb2.DeviceState(
            device_id=self.device_id,
            status=fleet_pb2.DeviceState.ONLINE if online else fleet_pb2.DeviceState.OFFLINE,
            artifact_id=model.artifact_id if model else "",
            tasks=model.meta.tasks if model else [],
            agent_version=__version__,
            since_unix_ms=now_ms(),
        )

    def telemetry(self) -> fleet_pb2.Telemetry:
        s = self.runtime.stats
        model = self.runtime.slot.current
        return fleet_pb2.Telemetry(
            device_id=self.device_id,
            inference_count=s.inference_count,
            failed_count=s.failed_count,
            latency_p50_ms=s.percentile(0.5),
            latency_p95_ms=s.percentile(0.95),
            rss_bytes=self._process.memory_info().rss,
            cpu_percent=self._process.cpu_percent(None),
            artifact_id=model.artifact_id if model else "",
            swaps=s.swaps,
            failed_swaps=s.failed_swaps,
            sent_unix_ms=now_ms(),
        )

    # --- incoming ---------------------------------------------------------------------------
    def _on_model_ready(self, msg: fleet_pb2.ModelReady) -> None:
        if msg.device_id and msg.device_id != self.device_id:
            return
        self._latest_ready = msg
        self._jobs.put(lambda: self._handle_model_ready(msg))

    def _on_command(self, cmd: fleet_pb2.Command) -> None:
        if cmd.device_id and cmd.device_id != self.device_id:
            return
        action = cmd.WhichOneof("action")
        logger.info("operator command %s (%s)", action, cmd.command_id or "no id")
        if action == "set_tasks":
            try:
                self.tasks.set(cmd.set_tasks.tasks)
            except Exception as exc:
                self._error(f"operator set_tasks refused: {exc}")
        elif action == "rollback":
            self._jobs.put(self._do_rollback)

    def _on_error(self, err: fleet_pb2.Error) -> None:
        self._error(f"server: {fleet_pb2.Error.Code.Name(err.code)}: {err.message}")

    def _error(self, text: str) -> None:
        self.last_error = text
        logger.warning("%s", text)

    # --- the swap path ------------------------------------------------------------------------
    def _handle_model_ready(self, msg: fleet_pb2.ModelReady) -> None:
        aid = msg.artifact_id
        current = self.runtime.slot.current
        if msg is not self._latest_ready:
            return  # a newer model was announced while this one waited
        if current is not None and current.artifact_id == aid:
            return
        if aid in self.store.bad:
            logger.info("model %s was refused before (%s); not retrying", aid[:12], self.store.bad[aid])
            return
        if msg.tasks and sorted(msg.tasks) != sorted(self.tasks.tasks):
            logger.info(
                "model %s is for tasks %s, not the selected %s: waiting",
                aid[:12],
                list(msg.tasks),
                self.tasks.tasks,
            )
            return
        try:
            self._fetch(msg)
        except AgentError as exc:
            self._report(SwapResult(aid, current.artifact_id if current else "", False, str(exc)))
            return
        self._report(self.runtime.install(aid))

    def _fetch(self, msg: fleet_pb2.ModelReady) -> None:
        address = self.settings.server_address or msg.grpc_address
        if not address:
            raise FetchError("no gRPC address: set server_address or have the server announce one")
        dl = self._downloaders.get(address)
        if dl is None:
            dl = self._downloaders[address] = Downloader(address, self.device_id, self.settings.grpc_ca_file)
        dl.fetch(self.store, msg.artifact_id, msg.sha256, msg.size_bytes)

    def _report(self, result: SwapResult) -> None:
        if not result.ok:
            self._error(f"model {result.artifact_id[:12] or '-'} refused: {result.reason}")
        self.link.publish_swap(
            fleet_pb2.SwapReport(
                device_id=self.device_id,
                artifact_id=result.artifact_id,
                ok=result.ok,
                reason=result.reason,
                previous_artifact_id=result.previous_artifact_id,
                load_ms=result.load_ms,
                sent_unix_ms=now_ms(),
            )
        )
        if result.ok:
            self.link.publish_state()
            self.link.publish_telemetry()  # the server sees the new model's figures at once

    def _do_rollback(self) -> SwapResult:
        result = self.runtime.rollback()
        self._report(result)
        return result

    # --- the local API (serve.AgentControl) ---------------------------------------------------
    def infer(self, image: np.ndarray) -> tuple[str, dict[str, np.ndarray], float]:
        model, outs, ms = self.runtime.infer(image)
        return model.artifact_id, outs, ms

    def status(self) -> agent_pb2.AgentStatus:
        model = self.runtime.slot.current
        s = self.runtime.stats
        return agent_pb2.AgentStatus(
            device_id=self.device_id,
            tasks=self.tasks.tasks,
            artifact_id=model.artifact_id if model else "",
            model_tasks=model.meta.tasks if model else [],
            previous_artifact_id=self.store.previous or "",
            swaps=s.swaps,
            failed_swaps=s.failed_swaps,
            inference_count=s.inference_count,
            failed_count=s.failed_count,
            broker_connected=self.link.connected,
            last_error=self.last_error,
            model_meta_json=model.meta.model_dump_json() if model else "",
        )

    def set_tasks(self, tasks: Iterable[str]) -> agent_pb2.AgentStatus:
        self.tasks.set(tasks)
        return self.status()

    def rollback(self) -> agent_pb2.AgentStatus:
        result = self._do_rollback()
        if not result.ok:
            raise ModelRejected(f"rollback failed: {result.reason}")
        return self.status()
