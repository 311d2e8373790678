"""The fleet's quick build on a quiet and on a busy machine: wall clock, steps reached, Δm.

`python -m edgecut_bench.quick_load [--checkpoint PT] [--cores 2] [--repeats 1]` builds each task set at
macs 0.5 with the server's own quick build (TorchEngine, QUICK_RECOVERY under QUICK_DEADLINE_S) once
quiet and once while `edgecut_bench.load` keeps `--cores` cores busy, and prints one row per build:
the build's seconds (what a device waits for beyond the network), the recovery steps it reached of the
60 asked, and Δm against the decomposed full model on the engine's 256 validation scenes. Run it under
`flock /work/cpu.lock` so nothing else loads the machine (the load generator runs inside the lock).
`--refine` also runs refinement 1 under the same load: what a device gets when its quick model is held
below the server's quality floor, and when.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from edgecut_bench.load import busy

if TYPE_CHECKING:
    from edgecut.server.engine import TorchEngine

TASK_SETS = (("seg", "depth"), ("seg", "depth", "normals"))


def measure(
    engine: TorchEngine, tasks: tuple[str, ...], macs: float, cores: int, refine: bool = False
) -> dict[str, object]:
    """One quick build of `tasks` at `macs`, with `cores` cores kept busy meanwhile (0: quiet); with
    `refine`, its first refinement too (what a device gets when the quick model is held)."""
    from edgecut.server.cut.refine import quality
    from edgecut.server.spec import Budget, BuildSpec, Refinement

    spec = BuildSpec.create(list(tasks), Budget(macs_fraction=macs))
    specs = {t: engine.base.task_specs[t] for t in tasks}
    refined: dict[str, object] = {}
    with busy(cores) if cores else _nothing():
        built = engine.build(spec, lambda *_: None)
        built.cleanup()
        if refine:
            engine.judge_only = True  # its figures whatever the shipping rule says
            try:
                r1 = engine.refine(spec, Refinement("quick", built.meta, 1), lambda *_: None)
            finally:
                engine.judge_only = False
            if r1 is not None:
                r1.cleanup()
                refined = {
                    "r1_seconds": round(r1.extras["seconds"], 1),
                    "r1_delta_m": round(quality(r1.meta.metrics, r1.meta.reference_metrics, specs) or 0.0, 2),
                    "r1_verdict": r1.notes[-1],
                }
    meta = built.meta
    return {
        "tasks": "+".join(tasks),
        "macs": macs,
        "busy_cores": cores,
        "seconds": round(built.extras["seconds"], 1),
        "recovery_steps": int(built.extras.get("recovery_steps", 0)),
        "recovery_steps_asked": int(built.extras.get("recovery_steps_asked", 0)),
        "delta_m": round(quality(meta.metrics, meta.reference_metrics, specs) or 0.0, 2),
        "task_changes": meta.task_changes,
        **refined,
    }


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def main(argv: list[str] | None = None) -> int:
    from edgecut.server.paths import PACKAGED_REFERENCE

    ap = argparse.ArgumentParser(prog="python -m edgecut_bench.quick_load", description=__doc__)
    ap.add_argument("--checkpoint", type=Path, default=PACKAGED_REFERENCE)
    ap.add_argument("--cores", type=int, default=2, help="busy cores in the loaded runs (default 2)")
    ap.add_argument("--macs", type=float, default=0.5)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--refine", action="store_true", help="also time refinement 1 under the same load")
    args = ap.parse_args(argv)
    from edgecut.server.engine import load_engine
    from edgecut.server.spec import NO_FLOOR

    print(f"checkpoint {args.checkpoint}", flush=True)
    with tempfile.TemporaryDirectory(prefix="quick-load-") as tmp:
        # the server's quick build as when refinements follow (none run here), no Δm floor:
        # the figure is the finding
        engine = load_engine(args.checkpoint, Path(tmp), train_data="off", min_delta_m=NO_FLOOR)
        engine.reference_metrics()  # evaluated once per server, not part of a build's time
        for _ in range(args.repeats):
            for tasks in TASK_SETS:
                for cores in (0, args.cores):
                    print(json.dumps(measure(engine, tasks, args.macs, cores, args.refine)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
