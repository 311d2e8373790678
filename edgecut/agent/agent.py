"""The agent: wires tasks, the MQTT link, downloads, the runtime and the local API together.

Slow work (download, load, validate, swap) runs on one worker thread fed by a queue, so paho's
network thread and the API threads never block on it and swaps happen one at a time.

Trust (trust.py): an offer is acted on only when its manifest verifies against a configured fleet key
and answers this device's current needs; the agent then dials only its configured `server_address`
or the address *in the signed manifest*. Commands need an operator signature (or the broker ACL),
a fresh issue time and an unseen id; each is acknowledged on `.../ack`.

Faults end in a retry or a clear error, never a stuck agent: a download that fails (server gone,
disk full, corrupt bytes, artifact gone) is reported (SwapReport + `last_error`), the serving model
stays, and the latest offer is tried again on a backoff up to `download_retry_max_s` that never gives
up, and at once after every broker reconnect; a corrupt or vanished artifact also makes the agent ask
for its model again so the server can rebuild it. An operator rollback pins the rolled-back model
(persisted) until Unpin or a task change; `last_error` clears on the next successful swap begun after it.

Life cycle (lifecycle.py): every change of what the agent does goes through `self.life`, which logs
it and reports it in status and telemetry. The worker thread alone walks an update (offered ->
downloading -> verifying -> loading) and runs the local API's rollback and unpin too; the MQTT and API
threads only settle the agent among its rest states (needs, serving, offline, pinned).
"""

from __future__ import annotations

import json
import logging
import queue
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import asdict
from pathlib import Path

import grpc
import numpy as np
import psutil

from edgecut import __version__, tls
from edgecut.errors import ConfigError
from edgecut.signing import Keyring
from edgecut.v1 import agent_pb2, fleet_pb2

from . import precision, providers, resources
from .adapt import Adapter, StatisticsModel
from .artifacts import ModelStore, check_artifact_id, sha256_file
from .errors import (
    AgentError,
    ArtifactGone,
    ChecksumError,
    DiskSpaceError,
    FetchError,
    ModelRejected,
    Untrusted,
)
from .fetch import Downloader
from .lifecycle import UPDATE, Lifecycle, State
from .link_mqtt import LinkHandlers, MqttLink, now_ms
from .precision import Timing, TimingPolicy, VariantFile
from .proxy import ProxyResult, compare
from .reask import NeedsWatchdog, RetryTimer
from .runtime import LoadedModel, Runtime, SwapResult
from .serve import create_server
from .settings import AgentSettings
from .statefile import atomic_write
from .tasks import TaskStore
from .trust import Refused, Stale, Trust, manifest_json

MAX_REASON = 1000  # characters of a refusal reason on the wire (the broker payload limit is 16 KiB)
FIRST_RETRY_S = 1.0
# how long the local API waits for its rollback / unpin to run on the worker (the client waits 60 / 10 s)
ROLLBACK_WAIT_S = 55.0
UNPIN_WAIT_S = 8.0
MAX_VARIANTS = 4  # precision variants of one offer taken (int8, fp16, ...): a bound on downloads


def _keyring(inline: list[str], file: Path | None, what: str) -> Keyring:
    return Keyring.from_config(inline, [file] if file else [], what)


logger = logging.getLogger(__name__)


class Agent:
    def __init__(self, settings: AgentSettings) -> None:
        self.settings = settings
        self.device_id = settings.device_id
        settings.state_dir.mkdir(parents=True, exist_ok=True)
        self.tasks = TaskStore(settings.state_dir, settings.tasks)
        self.store = ModelStore(settings.state_dir)
        self.trust = Trust(
            self.device_id,
            _keyring(settings.fleet_keys, settings.fleet_keys_file, "fleet_keys"),
            _keyring(settings.operator_keys, settings.operator_keys_file, "operator_keys"),
            settings.state_dir,
            settings.command_auth,
            settings.command_max_age_s,
        )
        self.runtime = Runtime(
            self.store,
            settings.ort_threads,
            verifier=self._verify_before_load,
            providers=providers.resolve(settings.providers),
        )
        self.runtime.variant_verifier = self._verify_variant
        self.runtime.timing = TimingPolicy(settings.variant_timing_s, settings.variant_min_speedup)
        self.last_error = ""
        self._errors = 0  # errors so far: a swap clears only those from before it began
        self.api_address = ""
        self._provenance: dict[str, fleet_pb2.Manifest] = {}  # artifact id -> its verified manifest
        want_tls = settings.grpc_ca_file or settings.grpc_cert_file
        self._credentials = (
            tls.channel_credentials(settings.grpc_ca_file, settings.grpc_cert_file, settings.grpc_key_file)
            if want_tls
            else None
        )
        self._downloaders: dict[str, Downloader] = {}
        self._jobs: queue.Queue[Callable[[], object] | None] = queue.Queue()
        self._latest_ready: tuple[fleet_pb2.ModelReady, fleet_pb2.Manifest] | None = None
        self._retry = RetryTimer(self._retry_now, FIRST_RETRY_S, settings.download_retry_max_s)
        # the serving model's statistics companion, when its download failed for a network reason
        self._stats_retry = RetryTimer(
            lambda _: self._jobs.put(lambda: self._adapt_to_serving(retry=True)),
            FIRST_RETRY_S,
            settings.download_retry_max_s,
        )
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
                on_connected=self._on_connected,
                on_disconnected=self._on_disconnected,
            ),
            username=settings.mqtt_username,
            password=settings.mqtt_password.get_secret_value(),
            ca_file=settings.mqtt_ca_file,
            cert_file=settings.mqtt_cert_file,
            key_file=settings.mqtt_key_file,
            keepalive_s=settings.keepalive_s,
            reconnect_max_s=settings.reconnect_max_s,
            telemetry_interval_s=settings.telemetry_interval_s,
        )
        self.tasks.subscribe(self._on_tasks_changed)
        self._watchdog = NeedsWatchdog(
            self.link.publish_needs, settings.needs_retry_s, 10 * settings.needs_retry_s
        )
        self.life = Lifecycle(self._rest_state)
        self.adapter = Adapter(settings, self._publish_stats, now_ms)

    # --- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        """Serve the model on disk at once, then open the API and the broker link (non-blocking)."""
        restored = self.runtime.restore()
        if restored is not None and not restored.ok:
            self.last_error = restored.reason
        if self.life.state in UPDATE:  # a model on disk failed its checks or its load (logged)
            self.life.move(State.ROLLED_BACK, "no model on disk passed its checks and its load")
        self.life.settle(
            f"restored {restored.artifact_id[:12]} from disk" if restored else "no model on disk to serve",
            ending_update=True,
        )
        self._worker = threading.Thread(target=self._work, name="agent-worker", daemon=True)
        self._worker.start()
        if self.settings.adapt:
            self.adapter.start()
            self._jobs.put(self._adapt_to_serving)  # the restored model's companion, fetched if need be
        self._server, self.api_address = create_server(
            self.settings.listen,
            self,
            max_batch=self.settings.infer_max_batch,
            max_bytes=self.settings.infer_max_bytes,
        )
        self._server.start()
        # lets `edgecut agent ...` find an API bound to port 0
        atomic_write(self.settings.state_dir / "api_address", self.api_address.encode())
        self.link.start()
        self._watchdog.start()
        logger.info("agent %s up; local API on %s", self.device_id, self.api_address)

    def stop(self) -> None:
        self._watchdog.stop()
        self._retry.reset()
        self._stats_retry.reset()
        self.link.stop()
        self._jobs.put(None)
        if self._worker:
            self._worker.join(timeout=10)
        self.adapter.stop()
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
            except Exception as exc:
                logger.exception("agent job failed")
                if self.life.state in UPDATE:  # what served before serves on
                    self.life.move(State.ROLLED_BACK, f"internal error: {exc}")

    # --- messages to publish ----------------------------------------------------------------
    def needs(self) -> fleet_pb2.TaskNeeds:
        res = resources.probe(self.settings.state_dir, self.runtime.providers_in_use())
        if self.settings.device_class:  # declared in the config: the probe cannot tell every board apart
            res.device_class = self.settings.device_class
        self._watchdog.sent(self.tasks.seq)  # this is what gets published: expect an answer to it
        self.life.settle(f"needs seq {self.tasks.seq} sent")
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
            pinned_artifact_id=self.store.pinned or "",
        )

    def telemetry(self) -> fleet_pb2.Telemetry:
        s = self.runtime.stats
        model = self.runtime.slot.current
        life = self.life.snapshot()
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
            state=life.state.to_proto(),
            state_since_unix_ms=life.since_unix_ms,
            state_reason=life.reason,
            precision=model.meta.precision if model else "",
            timings=[t.to_proto() for t in self._timings(model)],
        )

    # --- incoming ---------------------------------------------------------------------------
    def _on_model_ready(self, msg: fleet_pb2.ModelReady) -> None:
        if msg.device_id and msg.device_id != self.device_id:
            return
        try:
            manifest = self.trust.check_offer(msg, self.tasks.seq)
            self._check_lineage(manifest)
        except Stale as exc:  # a genuine but outdated answer: the current one follows
            logger.info("%s", exc)
            return
        except Refused as exc:
            self._report(SwapResult(msg.artifact_id[:64], self._serving_id(), False, str(exc)))
            return
        self.trust.take_offer(manifest)
        self._watchdog.answered(manifest.needs_seq)
        self.life.settle(f"offer of {manifest.artifact_id[:12]} answers needs seq {manifest.needs_seq}")
        self._latest_ready = (msg, manifest)
        self._jobs.put(lambda: self._handle_model_ready(msg, manifest))

    def _check_lineage(self, manifest: fleet_pb2.Manifest) -> None:
        """Stale: a refinement older than the model served, or than the offer being installed."""
        self.trust.check_refinement(manifest, self._provenance.get(self._serving_id()))
        latest = self._latest_ready
        if (
            latest is not None
            and manifest.refinement
            and latest[1].build_key == manifest.build_key
            and manifest.refinement < latest[1].refinement
        ):
            raise Stale(
                f"offer of {manifest.artifact_id[:12]} is refinement {manifest.refinement}; refinement "
                f"{latest[1].refinement} of the same build is on its way: stale, not applied"
            )

    def _on_command(self, cmd: fleet_pb2.Command) -> None:
        action = cmd.WhichOneof("action") or ""
        signed = cmd  # echoed in the ack of an obeyed command: the server checks who sent it
        try:
            cmd = self.trust.check_command(cmd)
        except Refused as exc:
            logger.warning("operator command %s refused: %s", cmd.command_id[:64] or "(no id)", exc)
            self._ack(cmd.command_id, action, False, str(exc))
            return
        action = cmd.WhichOneof("action") or ""
        logger.info("operator command %s (%s)", action, cmd.command_id)
        if action == "set_tasks":
            try:
                self.tasks.set(cmd.set_tasks.tasks)
            except ConfigError as exc:
                self._error(f"operator set_tasks refused: {exc}")
                self._ack(cmd.command_id, action, False, str(exc), signed)
                return
            self._ack(cmd.command_id, action, True, "", signed)
        elif action in ("rollback", "pin", "unpin"):
            do = {"rollback": self._do_rollback, "pin": self._do_pin, "unpin": self._do_unpin}[action]
            cid = cmd.command_id

            def job() -> None:
                result = do()
                self._ack(cid, action, result.ok, result.reason, signed)

            self._jobs.put(job)
        else:
            self._ack(cmd.command_id, action, False, "no action in the command")

    def _ack(
        self,
        command_id: str,
        action: str,
        ok: bool,
        reason: str = "",
        signed: fleet_pb2.Command | None = None,
    ) -> None:
        ack = fleet_pb2.CommandAck(
            device_id=self.device_id,
            command_id=command_id[:128],
            action=action,
            ok=ok,
            reason=reason[:MAX_REASON],
            sent_unix_ms=now_ms(),
        )
        if signed is not None:
            ack.command.CopyFrom(signed)
        self.link.publish_ack(ack)

    def _on_error(self, err: fleet_pb2.Error) -> None:
        if err.about == "waiting":  # no model yet (e.g. the quick one is below the server's quality floor)
            self._error(f"server: keeping the current model: {err.message[:MAX_REASON]}")
            return  # not an answer: the server offers the model it waits for when it comes
        if err.about:  # a refused telemetry sample: not an answer to the needs, nor a model refused
            logger.warning("server refused this device's %s: %s", err.about[:32], err.message[:MAX_REASON])
            return
        if err.code not in (
            fleet_pb2.Error.RATE_LIMITED,
            fleet_pb2.Error.QUEUE_FULL,
            fleet_pb2.Error.INTERNAL,
        ):
            self._watchdog.answered(err.needs_seq)  # a final refusal; busy or broken: asked again later
        code = {v.number: v.name for v in fleet_pb2.Error.Code.DESCRIPTOR.values}.get(err.code, str(err.code))
        self._error(f"server: {code}: {err.message[:MAX_REASON]}")
        self.life.settle(f"the server answered needs seq {err.needs_seq}: {code}")

    def _on_connected(self) -> None:
        """After a reconnect, a download waiting for its retry is tried at once."""
        self.life.settle("broker connected")
        self._retry.fire()
        self._stats_retry.fire()
        self.adapter.flush()  # the latest statistics summary made while offline

    def _on_disconnected(self) -> None:
        self.life.settle("lost the broker")

    def _rest_state(self) -> State:
        """Where the agent rests between updates, from its facts (called under the life cycle's lock)."""
        serving = self.runtime.slot.current is not None
        if serving and self.store.pinned:
            return State.PINNED
        if not self.link.connected:
            return State.OFFLINE_SERVING if serving else State.WAITING_FOR_BROKER
        return State.NEEDS if self._watchdog.pending or not serving else State.SERVING

    def _on_tasks_changed(self, tasks: list[str], seq: int) -> None:
        if self.store.pinned:  # the user wants other tasks: the pinned model no longer fits
            logger.info("tasks changed: lifting the pin on %s", self.store.pinned[:12])
            self.store.set_pin(None)
        self.link.publish_needs()

    def _error(self, text: str) -> None:
        self.last_error = text[:MAX_REASON]
        self._errors += 1
        logger.warning("%s", text)

    def _serving_id(self) -> str:
        model = self.runtime.slot.current
        return model.artifact_id if model else ""

    # --- the swap path ------------------------------------------------------------------------
    def _handle_model_ready(self, msg: fleet_pb2.ModelReady, manifest: fleet_pb2.Manifest) -> None:
        latest = self._latest_ready
        if latest is None or latest[0] is not msg:
            return  # a newer model was announced while this one waited
        aid = manifest.artifact_id
        errors_before = self._errors
        if self.store.pinned:
            logger.info("pinned to %s by an operator: offer of %s ignored", self.store.pinned[:12], aid[:12])
            return
        if self._serving_id() == aid:
            self._retry.reset()
            return
        if aid in self.store.bad:
            logger.info("model %s was refused before (%s); not retrying", aid[:12], self.store.bad[aid])
            return
        if sorted(manifest.tasks) != sorted(self.tasks.tasks):
            logger.info(
                "model %s is for tasks %s, not the selected %s: waiting",
                aid[:12],
                list(manifest.tasks),
                self.tasks.tasks,
            )
            return
        if self.life.state is State.PINNED:  # lifted by a task change a moment ago
            self.life.settle("the pin was lifted")
        self.life.move(
            State.OFFERED,
            f"offer {manifest.offer_seq} of {aid[:12]} for needs seq {manifest.needs_seq} taken",
        )
        try:
            self.trust.keep_offer(self.store.offer_path(aid), msg)
            self.life.move(State.DOWNLOADING, f"fetching {aid[:12]} ({manifest.size_bytes} bytes)")
            self._fetch(manifest)
            variants, dropped = self._fetch_variants(manifest)
        except (AgentError, OSError) as exc:  # OSError: no room even for the small offer file
            reason = str(exc) if isinstance(exc, AgentError) else f"cannot write in {self.store.dir}: {exc}"
            self.life.move(State.ROLLED_BACK, f"{aid[:12]} not fetched: {reason}")
            self._report(SwapResult(aid, self._serving_id(), False, reason))
            self._schedule_retry(isinstance(exc, ChecksumError | ArtifactGone))
            return
        replaced = self.runtime.slot.current
        # a return to the model that served before (a rollout's rollback) is never judged by the one it
        # replaces: that one may be the bad model
        returning = aid == self.store.previous
        result = self.runtime.install(aid, variants)
        result.timings.extend(dropped)
        # only a model adapted to this device's statistics is judged: a normal refinement may rightly
        # disagree with the model it replaces (under a strong shift that one is largely wrong)
        adapted = manifest.adapted_from_sequence > 0
        if result.ok and replaced is not None and self.settings.adapt and adapted and not returning:
            result = self._check_proxy(replaced, result)
        self._end_update(result, f"now serving {aid[:12]} ({result.precision})")
        self._report(result, errors_before)
        if result.untrusted:
            self._schedule_retry(False)
        else:
            self._retry.reset()
        self._adapt_to_serving()

    def _fetch(self, manifest: fleet_pb2.Manifest) -> None:
        self._downloader(manifest).fetch(
            self.store, manifest.artifact_id, manifest.sha256, manifest.size_bytes
        )

    def _downloader(self, manifest: fleet_pb2.Manifest) -> Downloader:
        # only our own config or the signed manifest may name the server: never an unsigned field
        address = self.settings.server_address or manifest.grpc_address
        if not address:
            raise FetchError("no gRPC address: set server_address or have the server announce one")
        dl = self._downloaders.get(address)
        if dl is None:
            # few attempts per fetch: the agent's own retry loop (never giving up) takes over after them
            dl = self._downloaders[address] = Downloader(
                address, self.device_id, self._credentials, max_attempts=4
            )
        return dl

    def _fetch_variants(self, manifest: fleet_pb2.Manifest) -> tuple[list[VariantFile], list[Timing]]:
        """Download the signed manifest's precision variants (resumable, sha-checked like the model).

        One that fails to download is dropped with a log line and reported: the fp32 model serves
        whatever happens to a variant. Returns the files and the timings of the dropped ones.
        """
        files: list[VariantFile] = []
        dropped: list[Timing] = []
        if not self.settings.variants:
            return files, dropped
        for v in manifest.variants[:MAX_VARIANTS]:
            note = precision.unvouched(v, manifest.tasks, self.settings.variant_max_loss)
            try:
                check_artifact_id(v.artifact_id)
                logger.info(
                    "fetching %s variant %s (%d bytes)", v.precision, v.artifact_id[:12], v.size_bytes
                )
                path = self._downloader(manifest).fetch(self.store, v.artifact_id, v.sha256, v.size_bytes)
            except (AgentError, OSError) as exc:
                logger.warning("%s variant %s dropped: %s", v.precision, v.artifact_id[:12], exc)
                dropped.append(Timing(v.precision, v.artifact_id[:64], note=f"dropped: {str(exc)[:200]}"))
                continue
            files.append(VariantFile(v.artifact_id, v.precision, path, note))
        return files, dropped

    def _verify_variant(self, artifact_id: str, variant_id: str, path: Path) -> None:
        try:
            digest = sha256_file(path)
        except OSError as exc:
            raise Untrusted(f"variant {variant_id[:12]} cannot be read: {exc.strerror or exc}") from exc
        self.trust.check_stored_variant(self.store.offer_path(artifact_id), artifact_id, variant_id, digest)

    def _timings(self, model: LoadedModel | None) -> list[Timing]:
        """What the serving model's precisions took on this device when it was chosen."""
        if model is None:
            return []
        raw = self.store.served(model.artifact_id).get("timings") or []
        return [Timing.from_dict(t) for t in raw if isinstance(t, dict)]

    # --- adaptation (issue 31; adapt.py, proxy.py) --------------------------------------------------
    def _check_proxy(self, replaced: LoadedModel, result: SwapResult) -> SwapResult:
        """After a swap: the new model against the one it replaced on the recent inputs held in memory;
        clearly worse rolls it back (marked bad, so the same offer is not taken again)."""
        new = self.runtime.slot.current
        if new is None:
            return result
        try:
            proxy = compare(new, replaced, self.adapter.recent())
        except Exception as exc:  # a check that cannot run never rolls a model back
            proxy = ProxyResult(
                0, note=f"the proxy check could not run: {type(exc).__name__}: {str(exc)[:200]}"
            )
        self.adapter.proxy = proxy
        why = proxy.worse(self.settings.adapt_min_agreement, self.settings.adapt_max_entropy_rise)
        if not why:
            return result
        back = self.runtime.rollback()
        if not back.ok:
            logger.warning(
                "model %s fails the proxy check but cannot be rolled back: %s", new.artifact_id[:12], why
            )
            return result
        self.store.mark_bad(result.artifact_id, f"rolled back by the proxy check: {why}")
        logger.warning("model %s rolled back by the proxy check: %s", result.artifact_id[:12], why)
        return SwapResult(
            result.artifact_id, replaced.artifact_id, False, f"rolled back by the proxy check: {why}"
        )

    def _adapt_to_serving(self, retry: bool = False) -> None:
        """With adapt on: fetch, check and load the serving model's signed statistics companion (on the
        worker, like a variant's download); the statistics start anew for that model. A download that
        fails for a network reason is tried again on a backoff (`retry`) until it comes or the model
        changes; refused bytes are not."""
        model = self.runtime.slot.current
        if not self.settings.adapt or model is None:
            return
        aid = model.artifact_id
        if self.adapter.artifact == aid and not (retry and self.adapter.waiting_for_companion):
            return  # already measuring it (an offer that failed leaves the same model serving)
        if not retry:  # another model's companion, or a fresh start: the backoff starts over
            self._stats_retry.reset()
        manifest = self._provenance.get(aid)
        if manifest is None or not manifest.HasField("statistics"):
            self.adapter.switch(aid, None, "the model's signed manifest carries no statistics companion")
            return
        v = manifest.statistics
        try:
            check_artifact_id(v.artifact_id)
            logger.info("fetching the statistics companion %s (%d bytes)", v.artifact_id[:12], v.size_bytes)
            path = self._downloader(manifest).fetch(self.store, v.artifact_id, v.sha256, v.size_bytes)
            self.trust.check_stored_statistics(
                self.store.offer_path(aid), aid, v.artifact_id, sha256_file(path)
            )
            stats = StatisticsModel(path, v.artifact_id, model.meta.input.shape)
        except (AgentError, OSError) as exc:
            if isinstance(exc, ModelRejected):
                self.store.discard(v.artifact_id)
            network = isinstance(exc, FetchError) and not isinstance(
                exc, ChecksumError | DiskSpaceError | ArtifactGone
            )
            if network:  # tried again on a doubling delay (a success or another model ends it)
                delay = self._stats_retry.schedule(False)
                note = f"statistics companion {v.artifact_id[:12]} not fetched (retrying in {delay:.0f} s): {exc}"
            else:
                note = f"statistics companion {v.artifact_id[:12]} refused: {exc}"
            logger.warning("%s", note)
            self.adapter.switch(aid, None, note[:MAX_REASON], waiting=network)
            return
        self._stats_retry.reset()
        self.store.keep_statistics(aid, v.artifact_id)
        self.adapter.switch(aid, stats)

    def _publish_stats(self, summary: fleet_pb2.StatsSummary) -> bool:
        """Hand a summary to the broker when connected; False keeps it for the reconnect (adapt.py)."""
        if not self.link.connected:
            return False
        return self.link.publish_stats(summary)

    def _verify_before_load(self, artifact_id: str, path: Path) -> None:
        self.life.move(State.VERIFYING, f"checking {artifact_id[:12]}'s sha256 and its signed offer")
        digest = sha256_file(path)
        self._provenance[artifact_id] = self.trust.check_stored(
            self.store.offer_path(artifact_id), artifact_id, digest
        )
        self.life.move(State.LOADING, f"{artifact_id[:12]} verified: loading it beside the serving model")

    def _end_update(self, result: SwapResult, done: str) -> None:
        """Settle after a swap that worked; `rolled_back` after one that failed past its first check."""
        if result.ok:
            self.life.settle(done, ending_update=True)
        elif self.life.state in UPDATE:
            was = result.previous_artifact_id[:12] or "nothing"
            self.life.move(
                State.ROLLED_BACK, f"{result.artifact_id[:12]} refused, {was} serves on: {result.reason}"
            )

    # --- retries ------------------------------------------------------------------------------
    def _schedule_retry(self, ask_again: bool) -> None:
        """Try the latest offer again after the backoff; `ask_again` also re-sends the needs first."""
        logger.info("retrying the model download in %.0f s", self._retry.schedule(ask_again))

    def _retry_now(self, ask_again: bool = False) -> None:
        if ask_again:  # the server may have lost or corrupted the artifact: it builds and offers anew
            self.link.publish_needs()
        latest = self._latest_ready
        if latest is not None:
            self._jobs.put(lambda: self._handle_model_ready(*latest))

    def _report(self, result: SwapResult, errors_before: int | None = None) -> None:
        """Tell the fleet how a swap ended. A swap that worked clears `last_error` when no other error
        came while it ran (`errors_before`: the count when it began): a forged offer refused meanwhile
        stays in the status."""
        if result.ok:
            if errors_before is None or self._errors == errors_before:
                self.last_error = ""  # the fault it described is over
        else:
            self._error(f"model {result.artifact_id[:12] or '-'} refused: {result.reason}")
        manifest = self._provenance.get(result.artifact_id) if result.ok else None
        self.link.publish_swap(
            fleet_pb2.SwapReport(
                device_id=self.device_id,
                artifact_id=result.artifact_id,
                ok=result.ok,
                reason=result.reason[:MAX_REASON],
                previous_artifact_id=result.previous_artifact_id,
                load_ms=result.load_ms,
                sent_unix_ms=now_ms(),
                verified_key_id=manifest.key_id if manifest else "",
                precision=result.precision if result.ok else "",
                timings=[t.to_proto() for t in result.timings],
            )
        )
        if result.ok:
            self.link.publish_state()
            self.link.publish_telemetry()  # the server sees the new model's figures at once

    def _do_rollback(self) -> SwapResult:
        """Serve the previous model and pin it: the fleet's offers wait until Unpin or a task change."""
        errors_before = self._errors
        result = self.runtime.rollback()
        if result.ok:
            self.store.set_pin(result.artifact_id)
        self._end_update(result, f"operator rollback: {result.artifact_id[:12]} serves again, pinned")
        self._report(result, errors_before)
        self._adapt_to_serving()
        return result

    def _do_pin(self) -> SwapResult:
        aid = self._serving_id()
        if not aid:
            return SwapResult("", "", False, "no model to pin")
        self.store.set_pin(aid)
        self.life.settle(f"operator pin on {aid[:12]}")
        self.link.publish_state()
        return SwapResult(aid, aid, True)

    def _do_unpin(self) -> SwapResult:
        self.store.set_pin(None)
        self.life.settle("pin lifted by an operator")
        self.link.publish_state()
        self._retry.reset()
        self._retry_now(ask_again=True)  # the fleet's current offer applies again
        return SwapResult(self._serving_id(), self._serving_id(), True)

    # --- the local API (serve.AgentControl) ---------------------------------------------------
    def infer(self, image: np.ndarray) -> tuple[str, dict[str, np.ndarray], float]:
        model, outs, ms = self.runtime.infer(image)
        self.adapter.observe(model.artifact_id, image)
        return model.artifact_id, outs, ms

    def status(self) -> agent_pb2.AgentStatus:
        model = self.runtime.slot.current
        s = self.runtime.stats
        life = self.life.snapshot()
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
            provenance_json=self._provenance_json(model.artifact_id if model else ""),
            pinned_artifact_id=self.store.pinned or "",
            state=life.state.value,
            state_since_unix_ms=life.since_unix_ms,
            state_reason=life.reason,
            illegal_transitions=self.life.illegal,
            providers=model.providers if model else [],
            provider_note=model.provider_note if model else "",
            precision=model.meta.precision if model else "",
            serving_file_id=(model.file_id or model.artifact_id) if model else "",
            timings_json=json.dumps([asdict(t) for t in self._timings(model)]),
            adapt=self.settings.adapt,
            adapt_json=json.dumps(self.adapter.status()) if self.settings.adapt else "",
        )

    def _provenance_json(self, artifact_id: str) -> str:
        manifest = self._provenance.get(artifact_id)
        return json.dumps(manifest_json(manifest, manifest.key_id)) if manifest else ""

    def set_tasks(self, tasks: Iterable[str]) -> agent_pb2.AgentStatus:
        self.tasks.set(tasks)
        return self.status()

    def rollback(self) -> agent_pb2.AgentStatus:
        result = self._on_worker(self._do_rollback, ROLLBACK_WAIT_S, "rollback")
        if not result.ok:
            raise ModelRejected(f"rollback failed: {result.reason}")
        return self.status()

    def unpin(self) -> agent_pb2.AgentStatus:
        self._on_worker(self._do_unpin, UNPIN_WAIT_S, "unpin")
        return self.status()

    def _on_worker(self, do: Callable[[], SwapResult], wait_s: float, what: str) -> SwapResult:
        """Run `do` on the worker, after the swap in progress (one change at a time), and wait for it."""
        if self._worker is None or not self._worker.is_alive():
            return do()  # an API over an agent that was never started (tests): nothing else swaps
        done: Future[SwapResult] = Future()

        def job() -> None:
            try:
                done.set_result(do())
            except BaseException as exc:
                done.set_exception(exc)
                raise

        self._jobs.put(job)
        try:
            return done.result(wait_s)
        except FutureTimeout:
            raise AgentError(
                f"the {what} is queued behind a model swap still running after {wait_s:g} s; it runs "
                "when that ends (`edgecut agent status` shows the state)"
            ) from None
