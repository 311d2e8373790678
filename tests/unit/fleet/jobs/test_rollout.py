"""RolloutManager on a real registry and store, with the bridge replaced by a recorder of offers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from edgecut.server.fleet.events import FleetEvent, Observers
from edgecut.server.fleet.jobs.outcomes import Ready
from edgecut.server.fleet.jobs.rollout import RolloutManager
from edgecut.server.fleet.jobs.rollout_policy import CANARY, PROMOTED, REJECTED, ROLLED_BACK, RolloutSettings
from edgecut.server.fleet.state.registry import Registry
from edgecut.server.fleet.state.schema import DONE
from edgecut.server.fleet.state.store import LocalStore
from edgecut.server.spec import Budget, BuildSpec, Refinement
from tests.support.onnx_engine import OnnxTestEngine

BUDGET = "macs=0.8"
SETTINGS = RolloutSettings(observe_s=0, min_inferences=10, canary_fraction=0.25, latency_slack_ms=1)


class Offers:
    def __init__(self) -> None:
        self.sent: list[tuple[str, str]] = []  # (device, artifact)
        self.readies: list[tuple[str, Ready]] = []

    def offer(self, device_id: str, seq: int, ready: Ready, held: bool = False) -> None:
        self.sent.append((device_id, ready.artifact.artifact_id))
        self.readies.append((device_id, ready))

    def to(self, device: str) -> list[str]:
        return [a for d, a in self.sent if d == device]


class World:
    def __init__(self, root: Path) -> None:
        self.registry = Registry(f"sqlite:///{root / 'r.sqlite3'}")
        self.store = LocalStore(root / "store")
        self.root = root
        self.events: list[FleetEvent] = []
        self.observers = Observers()
        self.observers.add(self.events.append)
        self.offers = Offers()
        self.manager = self.new_manager()

    def new_manager(self, settings: RolloutSettings = SETTINGS) -> RolloutManager:
        m = RolloutManager(self.registry, self.store, settings, self.observers)
        m.offerer = self.offers  # no ticker thread: tests call evaluate() themselves
        return m

    def build(self, base: str, fault: str | None = None, tasks: tuple[str, ...] = ("seg",)) -> Ready:
        engine = OnnxTestEngine(self.root / f"engine-{base}", base_model_id=base)
        if fault:
            engine.faults[tasks] = fault
        spec = BuildSpec.create(list(tasks), Budget(macs_fraction=0.8))
        built = engine.build(spec, lambda *_: None)
        return Ready(spec.build_key(base), self.store.put_file(built.onnx_path, built.meta))

    def device(
        self, device_id: str, serving: Ready | None, tasks: list[str] | None = None, p95: float = 1.0
    ) -> None:
        tasks = tasks or ["seg"]
        self.registry.devices.record_needs(device_id, tasks, 1, {}, {}, "x86", BUDGET)
        aid = serving.artifact.artifact_id if serving else ""
        self.registry.devices.record_state(device_id, "online", aid, tasks if serving else [], "t")
        if serving:
            self.registry.devices.record_telemetry(device_id, {"artifact_id": aid, "latency_p95_ms": p95})

    def telemetry(self, device: str, ready: Ready, count: int, failed: int, p95: float) -> None:
        data = {"artifact_id": ready.artifact.artifact_id, "inference_count": count, "failed_count": failed}
        self.manager(FleetEvent("telemetry", device, {**data, "latency_p95_ms": p95}))

    def swap(self, device: str, ready: Ready, ok: bool = True, reason: str = "") -> None:
        self.manager(
            FleetEvent(
                "swap", device, {"artifact_id": ready.artifact.artifact_id, "ok": ok, "reason": reason}
            )
        )

    def prove(self, canary: str, candidate: Ready, rest: list[str], baseline: Ready) -> None:
        """The canary swaps to `candidate` and answers 30 requests at the p95 the rest show on `baseline`."""
        self.swap(canary, candidate)
        for d in rest:
            self.telemetry(d, baseline, 100, 0, 1.0)
        self.telemetry(canary, candidate, 0, 0, 0.0)
        self.telemetry(canary, candidate, 30, 0, 1.0)

    def close(self) -> None:
        self.registry.close()


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = World(tmp_path)
    yield w
    w.close()


def fleet_on(world: World, baseline: Ready, n: int = 4) -> list[str]:
    devices = [f"d{i}" for i in range(n)]
    for d in devices:
        world.device(d, baseline)
    return devices


def test_a_first_model_and_new_tasks_are_never_held(world: World) -> None:
    a = world.build("v1")
    world.device("fresh", None)
    assert world.manager.gate("fresh", 1, a) is a
    depth = world.build("v1", tasks=("depth",))
    world.device("d0", a, tasks=["depth"])  # serves seg, now selects depth
    assert world.manager.gate("d0", 2, depth) is depth
    assert world.manager.rollouts() == []


def test_a_new_variant_goes_to_canaries_first_and_is_promoted(world: World) -> None:
    a, b = world.build("v1"), world.build("v2")
    devices = fleet_on(world, a)
    # every device asks (the server refreshed them after an upgrade); d3 asks first
    answers = {d: world.manager.gate(d, 1, b) for d in ["d3", "d0", "d1", "d2"]}
    (r,) = world.manager.rollouts()
    assert r["state"] == CANARY and r["canaries"] == ["d0"] and sorted(r["cohort"]) == devices
    assert answers["d0"] is b  # the canary gets the variant
    assert world.offers.sent == [("d0", b.artifact.artifact_id)]  # at once, though d3 asked first
    for d in ("d1", "d2", "d3"):  # the rest are offered the model they serve
        held = answers[d]
        assert held is not None and held.artifact.artifact_id == a.artifact.artifact_id
    # the control group runs at ~1 ms, the canary at 1.5 ms: within 1.5 x + 1 ms
    world.swap("d0", b)
    for d in ("d1", "d2", "d3"):
        world.telemetry(d, a, 100, 0, 1.0)
    world.telemetry("d0", b, 0, 0, 0.0)
    world.telemetry("d0", b, 30, 0, 1.5)
    world.manager.evaluate()
    (r,) = world.manager.rollouts()
    assert r["state"] == PROMOTED, r["reason"]
    promoted = {d for d, aid in world.offers.sent[1:] if aid == b.artifact.artifact_id}
    assert promoted == {"d1", "d2", "d3"}
    assert world.manager.gate("d2", 2, b) is b  # later asks get it too


def test_a_slow_canary_is_rolled_back_and_the_rest_never_get_the_variant(world: World) -> None:
    a, slow = world.build("v1"), world.build("v2", fault="slow")
    fleet_on(world, a)
    for d in ("d0", "d1", "d2", "d3"):
        world.manager.gate(d, 1, slow)
    world.swap("d0", slow)
    for d in ("d1", "d2", "d3"):
        world.telemetry(d, a, 100, 0, 1.0)
    world.telemetry("d0", slow, 0, 0, 0.0)
    world.telemetry("d0", slow, 30, 0, 12.0)  # p95 12 ms against a bound of 1.5 x 1 + 1 = 2.5 ms
    (r,) = world.manager.rollouts()
    assert r["state"] == ROLLED_BACK and "p95 12.0 ms above the bound 2.5 ms" in r["reason"]
    assert world.offers.to("d0")[-1] == a.artifact.artifact_id  # the canary is offered the old model
    got_slow = {d for d, aid in world.offers.sent if aid == slow.artifact.artifact_id}
    assert got_slow <= {"d0"}
    # after the verdict, and for a manager started anew (a server restart), nobody else gets it
    again = world.new_manager()
    for d in ("d1", "d2", "d3", "d0"):
        answer = again.gate(d, 2, slow)
        assert answer is not None and answer.artifact.artifact_id == a.artifact.artifact_id
    rolled = [e for e in world.events if e.kind == "rollout" and e.data.get("rolled_back_device")]
    assert [e.device_id for e in rolled] == ["d0"]


def test_a_canary_refusing_the_variant_rolls_it_back(world: World) -> None:
    a, b = world.build("v1"), world.build("v2")
    fleet_on(world, a, n=2)
    world.manager.gate("d0", 1, b)
    world.swap("d0", b, ok=False, reason="outputs not finite")
    (r,) = world.manager.rollouts()
    assert r["state"] == ROLLED_BACK and "refused the variant: outputs not finite" in r["reason"]


def test_a_variant_below_the_quality_floor_reaches_nobody(world: World) -> None:
    a, bad = world.build("v1"), world.build("v2", fault="low_quality")
    fleet_on(world, a)
    for d in ("d0", "d1", "d2", "d3"):
        answer = world.manager.gate(d, 1, bad)
        assert answer is not None and answer.artifact.artifact_id == a.artifact.artifact_id
    (r,) = world.manager.rollouts()
    assert r["state"] == REJECTED and "task seg" in r["reason"]
    assert not [1 for _, aid in world.offers.sent if aid == bad.artifact.artifact_id]


def test_a_device_joining_during_the_canary_phase_gets_the_trusted_model(world: World) -> None:
    a, b = world.build("v1"), world.build("v2")
    fleet_on(world, a)
    world.manager.gate("d0", 1, b)
    world.device("late", None)  # no model yet, same class, budget and tasks
    answer = world.manager.gate("late", 1, b)
    assert answer is not None and answer.artifact.artifact_id == a.artifact.artifact_id


def test_a_live_rollout_survives_a_restart_of_the_manager(world: World) -> None:
    a, b = world.build("v1"), world.build("v2")
    fleet_on(world, a)
    world.manager.gate("d0", 1, b)
    world.manager = world.new_manager()  # the server restarted mid-rollout
    world.telemetry("d0", b, 0, 0, 0.0)  # the canary swapped before the restart; counting starts now
    world.telemetry("d0", b, 20, 0, 1.0)
    world.manager.evaluate()
    (r,) = world.manager.rollouts()
    assert r["state"] == PROMOTED


def test_disabled_rollouts_offer_everything_at_once(world: World) -> None:
    a, b = world.build("v1"), world.build("v2")
    fleet_on(world, a)
    off = world.new_manager(SETTINGS.model_copy(update={"enabled": False}))
    assert all(off.gate(d, 1, b) is b for d in ("d0", "d1", "d2", "d3"))


def _refine(world: World, quick: Ready, base: str, retrained: bool = False) -> Ready:
    """Refinement 1 of `quick`'s key, made what the key's cache serves (as the refiner would);
    `retrained`: another architecture (the engine's from-scratch candidate)."""
    engine = OnnxTestEngine(
        world.root / f"engine-{base}-r", base_model_id=base, retrained={1} if retrained else None
    )
    spec = BuildSpec.create(["seg"], Budget(macs_fraction=0.8))
    parent = Refinement(quick.artifact.artifact_id, quick.artifact.meta, 1)
    built = engine.refine(spec, parent, lambda *_: None)
    assert built is not None
    stored = world.store.put_file(built.onnx_path, built.meta)
    world.registry.jobs.create(quick.build_key, {})
    world.registry.jobs.update(quick.build_key, state=DONE, artifact_id=quick.artifact.artifact_id)
    assert world.registry.jobs.adopt_refinement(
        quick.build_key, quick.artifact.artifact_id, stored.artifact_id, 1
    )
    return Ready(quick.build_key, stored, False, quick.artifact.artifact_id, 1)


def test_a_refinement_of_the_served_key_is_not_a_new_variant(world: World) -> None:
    a = world.build("v1")
    devices = fleet_on(world, a)
    refined = _refine(world, a, "v1")
    for d in devices:
        assert world.manager.gate(d, 1, refined) is refined
    assert world.manager.rollouts() == [] and not world.manager.refinements_held(refined)


def test_a_refinement_with_another_architecture_goes_to_canaries_first(world: World) -> None:
    a = world.build("v1")
    devices = fleet_on(world, a)
    scratch = _refine(world, a, "v1", retrained=True)  # narrower: what a canary measures may differ
    assert scratch.artifact.meta.params < a.artifact.meta.params
    answers = {d: world.manager.gate(d, 1, scratch) for d in devices}
    (r,) = world.manager.rollouts()
    assert r["state"] == CANARY and r["baseline_artifact"] == a.artifact.artifact_id
    (canary,) = r["canaries"]
    assert answers[canary] is scratch
    for d in devices:
        if d != canary:  # the rest keep the model they serve until the canary has proven it
            held = answers[d]
            assert held is not None and held.artifact.artifact_id == a.artifact.artifact_id
    world.prove(canary, scratch, [d for d in devices if d != canary], a)
    (r,) = world.manager.rollouts()
    assert r["state"] == PROMOTED, r["reason"]
    # the canary got it as the gate's answer; promotion offers it to the rest
    assert {d for d, aid in world.offers.sent if aid == scratch.artifact.artifact_id} == set(devices) - {
        canary
    }


def test_a_rolled_back_from_scratch_canary_is_offered_its_parent_as_a_first_model(world: World) -> None:
    a = world.build("v1")
    devices = fleet_on(world, a)
    scratch = _refine(world, a, "v1", retrained=True)
    for d in devices:
        world.manager.gate(d, 1, scratch)
    (r,) = world.manager.rollouts()
    (canary,) = r["canaries"]
    world.swap(canary, scratch, ok=False, reason="warm-up failed")
    (r,) = world.manager.rollouts()
    assert r["state"] == ROLLED_BACK
    back = [ready for d, ready in world.offers.readies if d == canary]
    # refinement 0: an agent serving refinement 1 of the key would refuse a lower number as stale
    assert back[-1].artifact.artifact_id == a.artifact.artifact_id and back[-1].refinement == 0


def test_a_from_scratch_refinement_adopted_during_a_canary_gets_its_own_rollout(world: World) -> None:
    a, b = world.build("v1"), world.build("v2")
    devices = fleet_on(world, a)
    for d in devices:
        world.manager.gate(d, 1, b)  # b, a new base model's quick build, goes to one canary
    scratch = _refine(world, b, "v2", retrained=True)  # adopted for b's key while it is judged
    assert world.manager.refinements_held(scratch)
    world.prove("d0", b, ["d1", "d2", "d3"], a)
    first, second = sorted(world.manager.rollouts(), key=lambda r: r["created"])
    assert first["state"] == PROMOTED and first["candidate_artifact"] == b.artifact.artifact_id
    # the cohort gets b, what the canary proved; the retrained model is judged on canaries of its own
    assert {d for d, aid in world.offers.sent if aid == b.artifact.artifact_id} >= {"d1", "d2", "d3"}
    assert second["state"] == CANARY and second["candidate_artifact"] == scratch.artifact.artifact_id
    assert second["baseline_artifact"] == b.artifact.artifact_id
    offered = {d for d, aid in world.offers.sent if aid == scratch.artifact.artifact_id}
    assert offered == set(second["canaries"]) and len(offered) == 1


def test_refinements_wait_for_the_canary_verdict_and_promotion_offers_the_best(world: World) -> None:
    a, b = world.build("v1"), world.build("v2")
    fleet_on(world, a)
    for d in ("d0", "d1", "d2", "d3"):
        world.manager.gate(d, 1, b)
    refined = _refine(world, b, "v2")  # refinement 1 of the variant, made while d0 canaries it
    assert world.manager.refinements_held(refined)
    world.prove("d0", b, ["d1", "d2", "d3"], a)
    (r,) = world.manager.rollouts()
    assert r["state"] == PROMOTED, r["reason"]
    assert not world.manager.refinements_held(refined)
    best = refined.artifact.artifact_id
    assert {d for d, aid in world.offers.sent if aid == best} == {"d0", "d1", "d2", "d3"}


def test_a_rejected_variant_moves_nobody_when_the_baseline_rotted_and_that_is_logged_once(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 26, item 5: the devices' model rotted in the store (quarantined, its key rebuilt) and the
    rebuilt variant is worse: it was rejected, yet offered in place of the baseline that was gone."""
    a, worse = world.build("v1"), world.build("v2", fault="low_quality")
    devices = fleet_on(world, a)
    path = world.store.root / a.artifact.artifact_id[:2] / f"{a.artifact.artifact_id}.onnx"
    path.write_bytes(b"rotted")
    assert not world.store.verify(a.artifact.artifact_id, force=True)  # quarantined, as the scrub does
    for _ in range(30):  # the devices ask again and again while they wait for an answer
        for d in devices:
            assert world.manager.gate(d, 1, worse) is None, d  # it keeps the model it serves
    (r,) = world.manager.rollouts()
    assert r["state"] == REJECTED
    assert not [1 for _, aid in world.offers.sent if aid == worse.artifact.artifact_id]
    assert sum("is gone from the store" in m for m in caplog.messages) == 1
    # a device without a model still gets one: a first model is never held back
    world.device("fresh", None)
    assert world.manager.gate("fresh", 1, worse) is worse
