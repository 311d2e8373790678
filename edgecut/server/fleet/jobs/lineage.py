"""What the store and the job table say about an artifact: its build key, tasks, budget and parents.

The staged rollout (rollout.py) asks these to tell a new variant (held for canaries) from a refinement
of the model a device already serves, a first model, or a model for another budget (never held).
"""

from __future__ import annotations

import logging
from typing import Any

from edgecut.errors import EdgecutError
from edgecut.server.fleet.jobs.outcomes import Ready
from edgecut.server.fleet.jobs.rollout_policy import keeps_architecture
from edgecut.server.fleet.state.registry import Registry
from edgecut.server.fleet.state.store import Store
from edgecut.server.spec import Budget

logger = logging.getLogger(__name__)


class Lineage:
    def __init__(self, registry: Registry, store: Store) -> None:
        self.registry, self.store = registry, store
        self._gone: set[str] = set()  # rollouts whose missing baseline was logged

    def best(self, build_key: str) -> Ready | None:
        """The refinement the key's cache serves now, when there is one."""
        rec = self.registry.jobs.get(build_key)
        if rec is None or rec.refinement < 1 or not self.store.exists(rec.artifact_id):
            return None
        return Ready(
            build_key, self.store.get(rec.artifact_id), False, rec.parent_artifact_id, rec.refinement
        )

    def like(self, best: Ready, candidate: Ready) -> Ready:
        """The newest version of the key, from `best` back along its parents, with the architecture of
        the `candidate` the canaries measured (the candidate itself when none is)."""
        like, aid = candidate.artifact.meta, best.artifact.artifact_id
        while aid and aid != candidate.artifact.artifact_id and self.store.exists(aid):
            art = self.store.get(aid)
            if keeps_architecture(art.meta, like):
                meta = art.meta
                return Ready(best.build_key, art, False, meta.parent_artifact_id, meta.refinement)
            aid = art.meta.parent_artifact_id
        return candidate

    def same_budget(self, serving: str, build_key: str) -> bool:
        """False when the device's budget changed (e.g. re-tailored after latency drift): a smaller model
        for one device is not a new variant of its cohort's model, and is never held back."""
        old, new = self.registry.jobs.get(self.build_key(serving)), self.registry.jobs.get(build_key)
        if old is None or new is None:
            return True
        try:
            return Budget(**old.spec["budget"]).bucket() == Budget(**new.spec["budget"]).bucket()
        except (KeyError, TypeError, EdgecutError):  # a spec an older server wrote: compare as same
            return True

    def baseline(self, serving: str, ready: Ready) -> str:
        """What the cohort keeps while `ready` is judged: the device's model, or, for a refinement of the
        key it serves, the refinement's parent (what its latest offer was, though its swap to it may
        not be recorded yet)."""
        parent = ready.parent_artifact_id
        same_key = ready.refinement and parent and self.build_key(serving) == ready.build_key
        return parent if same_key and self.store.exists(parent) else serving

    def refines(self, serving: str, ready: Ready) -> bool:
        """`ready` refines the key the device serves and keeps the served model's architecture."""
        try:
            meta = self.store.meta(serving)
        except EdgecutError:
            return False
        return meta.build_key == ready.build_key and keeps_architecture(ready.artifact.meta, meta)

    def build_key(self, artifact_id: str) -> str:
        try:
            return self.store.meta(artifact_id).build_key
        except EdgecutError:
            return ""

    def same_tasks(self, artifact_id: str, tasks: tuple[str, ...]) -> bool:
        try:
            return tuple(sorted(self.store.meta(artifact_id).tasks)) == tasks
        except EdgecutError:
            return False

    def baseline_ready(self, row: dict[str, Any]) -> Ready | None:
        """A rollout's baseline as an offer; None (logged once per rollout) when it is gone from the store."""
        try:
            # as refinement 0 even when the baseline is a refinement (a from-scratch candidate's parent):
            # an agent takes no lower refinement number of the key it serves, and a rolled-back canary
            # serves the candidate, a higher one
            return Ready(row["baseline_build_key"], self.store.get(row["baseline_artifact"]))
        except EdgecutError:
            if row["id"] not in self._gone:  # once per rollout: devices ask again every few seconds
                self._gone.add(row["id"])
                logger.warning(
                    "baseline %s of rollout %s is gone from the store: devices serving it keep it, "
                    "the candidate is not offered in its place",
                    row["baseline_artifact"][:12],
                    row["id"],
                )
            return None
