"""What the agent believes: signed model offers from the fleet, signed commands from operators.

Offers: a ModelReady is acted on only when its Manifest verifies against a fleet key from the
agent's config, names this device, answers its current needs seq and carries an offer counter
(`offer_seq`) no lower than the highest this device took. The counter is kept in
`<state_dir>/offers.json` across restarts, so a genuine older offer replayed later (a quick model
replayed over a refinement, answering the same needs) is stale, while a server that rolls a device
back signs a *new* offer with a higher counter. The same offer delivered again (the retained
message after a reconnect) is no replay. The offer is kept beside the model as `<id>.offer` and
checked again, with the file's sha256, right before every load (docs/security.md).

Commands: signed by an operator key (`command_auth: signed`, the default) or, with `command_auth:
broker_acl`, trusted because the broker's ACL lets only operators publish on the command topic.
Either way a command must name this device, carry an id and an issue time no older than
`command_max_age_s` (and not from the future beyond the clock skew), and is done at most once: the
ids seen within the window are kept in `<state_dir>/commands.json`, so a replay after a restart is
refused too. Retained commands are refused by the MQTT link before they get here.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from google.protobuf.json_format import MessageToDict
from google.protobuf.message import DecodeError

from edgecut.envelopes import now_ms, open_command, open_offer
from edgecut.signing import Keyring, SignatureError
from edgecut.v1 import fleet_pb2

from .errors import Untrusted
from .statefile import atomic_write, read_json, write_json

logger = logging.getLogger(__name__)

CLOCK_SKEW_MS = 5 * 60 * 1000
MAX_SEEN = 10_000


class Refused(SignatureError):
    """An offer or command the agent will not act on; the message says why."""


class Stale(Refused):
    """A genuine offer that answers an older needs seq (the answer to the current one follows)."""


class Trust:
    def __init__(
        self,
        device_id: str,
        fleet: Keyring,
        operators: Keyring,
        state_dir: Path,
        command_auth: str = "signed",
        command_max_age_s: float = 3600.0,
    ) -> None:
        self.device_id, self.fleet, self.operators = device_id, fleet, operators
        self.command_auth = command_auth
        self.max_age_ms = int(command_max_age_s * 1000)
        self._seen_path = Path(state_dir) / "commands.json"
        doc = read_json(self._seen_path)
        self._seen: dict[str, int] = (
            {str(k): int(v) for k, v in (doc or {}).items()} if isinstance(doc, dict) else {}
        )
        self._lock = threading.Lock()
        self._offers_path = Path(state_dir) / "offers.json"
        taken = read_json(self._offers_path)
        if not isinstance(taken, dict) and self._offers_path.exists():
            # written atomically, so only a damaged disk or a hand edit gets here
            logger.warning(
                "%s cannot be read: the offer counter starts again from 0, so an older genuine offer "
                "could be taken once",
                self._offers_path,
            )
        taken = taken if isinstance(taken, dict) else {}
        seq = taken.get("offer_seq", 0)
        self._offer_seq = seq if isinstance(seq, int) else 0
        self._offer_artifact = str(taken.get("artifact_id", ""))

    # --- model offers ---------------------------------------------------------------------------
    def check_offer(self, ready: fleet_pb2.ModelReady, needs_seq: int) -> fleet_pb2.Manifest:
        """The offer's verified manifest; Refused when it is not the fleet's answer to our current needs."""
        if not len(self.fleet):
            raise Refused("no fleet public key is configured (fleet_keys): every model offer is refused")
        try:
            manifest = open_offer(self.fleet, ready)
        except SignatureError as exc:
            raise Refused(f"offer of {ready.artifact_id[:12] or '?'} refused: {exc}") from exc
        if manifest.device_id != self.device_id:
            raise Refused(
                f"offer of {manifest.artifact_id[:12]} is signed for device {manifest.device_id[:64]!r}, not us"
            )
        if manifest.needs_seq != needs_seq:
            raise Stale(
                f"offer of {manifest.artifact_id[:12]} answers needs seq {manifest.needs_seq}, "
                f"ours is {needs_seq}: stale or replayed"
            )
        taken = self._offer_seq
        if manifest.offer_seq < taken or (
            manifest.offer_seq == taken and taken and manifest.artifact_id != self._offer_artifact
        ):
            raise Stale(
                f"offer of {manifest.artifact_id[:12]} is offer #{manifest.offer_seq}; this device took "
                f"#{taken} already: stale or replayed, not applied"
            )
        return manifest

    def take_offer(self, manifest: fleet_pb2.Manifest) -> None:
        """Remember the offer the agent acts on: no lower counter is taken again, even after a restart."""
        if manifest.offer_seq > self._offer_seq:
            self._offer_seq, self._offer_artifact = manifest.offer_seq, manifest.artifact_id
            write_json(self._offers_path, {"offer_seq": self._offer_seq, "artifact_id": self._offer_artifact})

    @staticmethod
    def check_refinement(offer: fleet_pb2.Manifest, serving: fleet_pb2.Manifest | None) -> None:
        """Stale when a refinement offer would not move the device forward on its build's lineage.

        Within one build key the refinements form a chain (the server adopts n only while it serves
        n - 1): an offer whose number is not above the served model's is older than what the device
        serves, and refinement n + 1 of another parent than the served one belongs to a lineage the
        device left. A further refinement (the device missed one while offline) or a refinement of
        another key (it answers the current needs, which the seq check proved) is applied.
        A model adapted to this device's statistics (`adapted_from_sequence`, issue 31) is off that chain:
        it is the server's answer to the device's own summary (a new bucket, a new base model adapted
        again), ordered by the offer counter alone like a rollback.
        """
        if offer.adapted_from_sequence:
            return
        if offer.refinement == 0 or serving is None or serving.build_key != offer.build_key:
            return
        if offer.refinement <= serving.refinement:
            raise Stale(
                f"offer of {offer.artifact_id[:12]} is refinement {offer.refinement} of build "
                f"{offer.build_key[:12]}; we serve refinement {serving.refinement}: stale, not applied"
            )
        if offer.refinement == serving.refinement + 1 and offer.parent_artifact_id != serving.artifact_id:
            raise Stale(
                f"offer of {offer.artifact_id[:12]} refines {offer.parent_artifact_id[:12]}, we serve "
                f"{serving.artifact_id[:12]}: stale, not applied"
            )

    def check_stored(self, offer_path: Path, artifact_id: str, digest: str) -> fleet_pb2.Manifest:
        """Before a load: the kept offer verifies and vouches for exactly these bytes (`digest`)."""
        manifest = self.check_stored_offer(offer_path, artifact_id)
        if manifest.artifact_id != artifact_id or manifest.sha256 != digest:
            raise Untrusted(
                f"the file of {artifact_id[:12]} hashes to {digest[:12]}, its signed manifest says "
                f"{manifest.sha256[:12]}: tampered on disk, not loaded"
            )
        return manifest

    def check_stored_offer(self, offer_path: Path, artifact_id: str) -> fleet_pb2.Manifest:
        """The verified manifest of the offer kept for `artifact_id` (Untrusted when it does not verify)."""
        try:
            ready = fleet_pb2.ModelReady.FromString(offer_path.read_bytes())
        except (OSError, DecodeError) as exc:
            raise Untrusted(f"no readable signed offer kept for {artifact_id[:12]}") from exc
        try:
            manifest = open_offer(self.fleet, ready)
        except SignatureError as exc:
            raise Untrusted(f"the kept manifest of {artifact_id[:12]} does not verify: {exc}") from exc
        if manifest.artifact_id != artifact_id:
            raise Untrusted(f"the offer kept for {artifact_id[:12]} is for {manifest.artifact_id[:12]}")
        return manifest

    def check_stored_variant(
        self, offer_path: Path, artifact_id: str, variant_id: str, digest: str
    ) -> fleet_pb2.ModelVariant:
        """Before a variant's load: the model's kept offer verifies and lists exactly these bytes."""
        manifest = self.check_stored_offer(offer_path, artifact_id)
        for v in manifest.variants:
            if v.artifact_id == variant_id:
                if v.sha256 != digest:
                    raise Untrusted(
                        f"variant {variant_id[:12]} hashes to {digest[:12]}, the signed manifest says "
                        f"{v.sha256[:12]}: tampered, not loaded"
                    )
                return v
        raise Untrusted(f"{variant_id[:12]} is not a variant the signed manifest of {artifact_id[:12]} lists")

    def check_stored_statistics(
        self, offer_path: Path, artifact_id: str, stats_id: str, digest: str
    ) -> fleet_pb2.ModelVariant:
        """Before a statistics companion's load: the model's kept offer verifies and names these bytes."""
        manifest = self.check_stored_offer(offer_path, artifact_id)
        v = manifest.statistics
        if not manifest.HasField("statistics") or v.artifact_id != stats_id:
            raise Untrusted(f"{stats_id[:12]} is not the statistics companion the signed manifest names")
        if v.sha256 != digest:
            raise Untrusted(
                f"statistics companion {stats_id[:12]} hashes to {digest[:12]}, the signed manifest says "
                f"{v.sha256[:12]}: tampered, not loaded"
            )
        return v

    @staticmethod
    def keep_offer(offer_path: Path, ready: fleet_pb2.ModelReady) -> None:
        atomic_write(offer_path, ready.SerializeToString())

    # --- commands -------------------------------------------------------------------------------
    def check_command(self, command: fleet_pb2.Command) -> fleet_pb2.Command:
        """The command to act on (the verified inner one when signed); Refused otherwise."""
        if self.command_auth == "signed":
            if not len(self.operators):
                raise Refused("no operator key is configured (operator_keys): MQTT commands are refused")
            try:
                command = open_command(self.operators, command)
            except SignatureError as exc:
                raise Refused(f"command refused: {exc}") from exc
        if command.device_id != self.device_id:
            raise Refused(f"command is for device {command.device_id[:64]!r}, not us")
        if not command.command_id:
            raise Refused("command has no command_id")
        now = now_ms()
        issued = command.issued_unix_ms
        if issued <= 0 or now - issued > self.max_age_ms:
            raise Refused(f"command {command.command_id[:64]} is stale (issued {issued}, now {now})")
        if issued - now > CLOCK_SKEW_MS:
            raise Refused(f"command {command.command_id[:64]} is issued in the future ({issued} > {now})")
        with self._lock:
            if command.command_id in self._seen:
                raise Refused(f"command {command.command_id[:64]} was already done: replay ignored")
            self._seen = {k: v for k, v in self._seen.items() if now - v <= self.max_age_ms + CLOCK_SKEW_MS}
            self._seen[command.command_id] = issued
            while len(self._seen) > MAX_SEEN:
                self._seen.pop(next(iter(self._seen)))
            write_json(self._seen_path, self._seen)
        return command


def manifest_json(manifest: fleet_pb2.Manifest, verified_key_id: str) -> dict[str, object]:
    """The provenance shown by `edgecut agent status`."""
    return {"verified_key_id": verified_key_id, **MessageToDict(manifest, preserving_proto_field_name=True)}
