"""Store scrubbing: hash stored artifacts, quarantine corrupt ones and build again what they served.

`scrub()` runs every `scrub_interval_s` (the server's scrub thread); `recheck(artifact_id)` when a device
reports an artifact whose bytes do not hash to its id. The devices last offered a corrupt artifact wait
for the rebuilt one (registry waiters), so they are answered when it is ready.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from edgecut.server.errors import ServerError
from edgecut.server.fleet.state.registry import Registry
from edgecut.server.fleet.state.store import Store
from edgecut.server.spec import BuildSpec, spec_from_dict

logger = logging.getLogger(__name__)


class Scrubber:
    def __init__(self, store: Store, registry: Registry, submit: Callable[[BuildSpec], str]) -> None:
        """`submit(spec) -> build key`: queue a build (the job manager's; a good stored artifact answers it)."""
        self.store, self.registry, self.submit = store, registry, submit

    def scrub(self) -> list[str]:
        """Hash every stored artifact; build again each done job whose artifact was corrupt.

        Returns the quarantined artifact ids.
        """
        bad = [aid for aid in self.store.ids() if not self.store.verify(aid, force=True)]
        for aid in bad:
            self._rebuild(aid)
        return bad

    def recheck(self, artifact_id: str) -> bool:
        """Hash one artifact now (a device reported bad bytes); True when it was corrupt and is rebuilt."""
        if self.store.verify(artifact_id, force=True):
            return False
        self._rebuild(artifact_id)
        return True

    def _rebuild(self, aid: str) -> None:
        """Queue the builds that made `aid` again; the devices last offered it wait for the new one."""
        for rec in self.registry.jobs.with_artifact(aid):
            try:
                spec = spec_from_dict(rec.spec)
                key = self.submit(spec)
            except ServerError as exc:
                logger.warning("cannot rebuild %s after scrub: %s", rec.build_key, exc)
                continue
            for device_id, seq in self.registry.offers.devices_offered(aid):
                self.registry.waiters.add(key, device_id, seq)
