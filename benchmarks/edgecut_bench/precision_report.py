"""The *Precision: static INT8* section of docs/benchmarks.md, rendered from `bench precision`'s rows
(torch-free): one table per task set, the figures at a larger input, and issue 30's goals judged from
the rows (never written by hand)."""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from edgecut.server.paths import PACKAGED_REFERENCE, PACKAGED_REFERENCE_128
from edgecut_bench.precision import FP32, INT8, Model, PrecisionResult, key
from edgecut_bench.reference_model import load_record

SECTION = "Precision: static INT8"
SPEED_GOAL, DM_FLOOR, TWIN_LOSS = 1.5, -2.0, 1.0  # issue 30's goals
GOAL_BUDGET = 0.5
SCHEMES = {"S8S8": "S8S8 (onnxruntime's defaults)", "U8S8": "U8S8 (unsigned activations)"}


@dataclass
class Group:
    """The rows of one model in one precision: one file, or one per calibration seed."""

    models: list[Model]

    @property
    def first(self) -> Model:
        return self.models[0]

    def label(self) -> str:
        m = self.first
        if m.budget is None:
            return (
                f"full + ORT static INT8, {SCHEMES.get(m.scheme, m.scheme)}" if m.quantised else "full fp32"
            )
        return f"edgecut macs {m.budget:g} " + ("INT8" if m.quantised else "fp32")

    def delta_m(self) -> list[float]:
        return [m.delta_m for m in self.models]

    def ms(self, timing: str) -> list[float]:
        return [m.ms[timing] for m in self.models if timing in m.ms]

    def mean_ms(self, timing: str) -> float:
        return statistics.fmean(self.ms(timing))


def groups(res: PrecisionResult, tasks: tuple[str, ...]) -> list[Group]:
    """The task set's rows in table order: full, full INT8, then each budget's fp32 and INT8."""
    found: dict[tuple[float | None, bool, str], Group] = {}
    for m in res.models:
        if m.tasks == tasks:
            found.setdefault((m.budget, m.quantised, m.scheme), Group([])).models.append(m)
    order = sorted(found, key=lambda k: (k[0] is not None, -(k[0] or 0.0), k[1], k[2]))
    return [found[k] for k in order]


def task_sets(res: PrecisionResult) -> list[tuple[str, ...]]:
    return list(dict.fromkeys(m.tasks for m in res.models))


def spread(values: list[float], digits: int, signed: bool = False) -> str:
    """One figure, or mean ± sd over seeds when there are several."""
    fmt = f"{{:{'+' if signed else ''}.{digits}f}}"
    if len(values) == 1:
        return fmt.format(values[0])
    return f"{fmt.format(statistics.fmean(values))} ± {statistics.stdev(values):.{digits}f}"


def _full(gs: list[Group]) -> Group:
    return next(g for g in gs if g.first.budget is None and not g.first.quantised)


def users(gs: list[Group], timing: str) -> Group:
    """The user's alternative: the faster of their INT8 files at `timing` (what a user would keep)."""
    return min(
        (g for g in gs if g.first.budget is None and g.first.quantised), key=lambda g: g.mean_ms(timing)
    )


def table(res: PrecisionResult, tasks: tuple[str, ...], size: int) -> list[str]:
    """At input `size`: ms per thread count, speed-ups (1 thread) and, at the models' own size, Δm."""
    gs = groups(res, tasks)
    one, threads = key(size, res.cfg.threads[0]), [key(size, t) for t in res.cfg.threads]
    own = size == res.image_size
    head = ["model", "MMACs", *(["MB", "Δm %"] if own else [])]
    head += [f"ms {t} thread{'s' if t > 1 else ''}" for t in res.cfg.threads]
    head += [
        f"× vs full fp32 ({res.cfg.threads[0]}t)",
        f"× vs the user's INT8 ({res.cfg.threads[0]}t)",
        "note",
    ]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 2) + "---|"]
    fp32, int8 = _full(gs).mean_ms(one), users(gs, one).mean_ms(one)
    for g in gs:
        cells = [g.label(), f"{g.first.macs / 1e6:.1f}"]
        if own:
            cells += [
                f"{statistics.fmean(m.size_bytes for m in g.models) / 1e6:.2f}",
                spread(g.delta_m(), 2, True),
            ]
        cells += [spread(g.ms(t), 3) for t in threads]
        mean = g.mean_ms(one)
        cells += [f"{fp32 / mean:.2f}", f"{int8 / mean:.2f}", _note(g)]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _note(g: Group) -> str:
    fp32 = [m for m in g.models if m.quantised and m.precision == FP32]
    said = [f"seed {m.seed}: {m.note}" for m in g.models if m.note]
    if fp32:
        said.insert(0, f"{len(fp32)} of {len(g.models)} seeds answered fp32 (the per-task check)")
    return "; ".join(said)


@dataclass(frozen=True)
class Verdict:
    goal: str
    case: str
    measured: str
    verdict: str  # "met" or "missed by ..."


def verdicts(res: PrecisionResult) -> list[Verdict]:
    """Issue 30's goals from the rows: at macs 0.5 edgecut INT8 >= 1.5x faster than full + static INT8 at
    Δm >= -2 % (1 thread, at every input size timed; Δm is the models' own size's), and no edgecut INT8
    model losing more than 1 point of Δm to its fp32 twin (every seed)."""
    found = []
    sizes = list(dict.fromkeys(int(t.split("px")[0]) for t in res.timings))
    for tasks in task_sets(res):
        gs = groups(res, tasks)
        name = " + ".join(tasks)
        ours = next((g for g in gs if g.first.budget == GOAL_BUDGET and g.first.quantised), None)
        for size in sizes if ours is not None else []:
            assert ours is not None
            timing = key(size, res.cfg.threads[0])
            user = users(gs, timing)
            x = user.mean_ms(timing) / ours.mean_ms(timing)
            dm = statistics.fmean(ours.delta_m())
            short = []
            if x < SPEED_GOAL:
                short.append(f"{SPEED_GOAL - x:.2f}x of speed")
            if dm < DM_FLOOR:
                short.append(f"{DM_FLOOR - dm:.2f} points of Δm")
            where = "" if size == res.image_size else f", Δm at {res.image_size} px"
            found.append(
                Verdict(
                    f"macs {GOAL_BUDGET:g} INT8 ≥ {SPEED_GOAL:g}x faster than the user's INT8 at Δm ≥ {DM_FLOOR:+g} %",
                    f"{name}, {size} px{where}, vs {user.first.scheme}",
                    f"{x:.2f}x, Δm {dm:+.2f} %",
                    "missed by " + " and ".join(short) if short else "met",
                )
            )
        for g in gs:
            if g.first.budget is None or not g.first.quantised:
                continue
            twin = next(t for t in gs if t.first.budget == g.first.budget and not t.first.quantised)
            losses = [twin.first.delta_m - m.delta_m for m in g.models if m.precision == INT8]
            goal, case = (
                f"INT8 loses ≤ {TWIN_LOSS:g} point of Δm to its fp32 twin",
                f"{name} @ macs {g.first.budget:g}",
            )
            if not losses:  # the per-task check answered fp32 on every seed: no INT8 model ships
                said = f"no INT8 model shipped: every seed's check answered fp32 ({len(g.models)} seeds)"
                found.append(Verdict(goal, case, said, "met"))
                continue
            worst = max(losses)
            found.append(
                Verdict(
                    goal,
                    case,
                    f"INT8 − fp32, worst of {len(losses)} seed{'s' if len(losses) > 1 else ''}: {-worst:+.2f} points",
                    "met" if worst <= TWIN_LOSS else f"missed by {worst - TWIN_LOSS:.2f} points",
                )
            )
    return found


def _quality_at(large: int, size: int) -> str:
    """What the section can say about quality at the larger size its files were only timed at."""
    trained = PACKAGED_REFERENCE_128
    if (
        trained.with_suffix(".metrics.json").exists()
        and load_record(trained)["config"]["image_size"] == large
    ):
        return (
            f"This reference was trained at {size} x {size}, so its quality at {large} is **not measured** "
            f"here: *{SECTION} at {large}x{large}* runs this bench on the packaged reference trained at "
            f"{large} x {large}, quality included."
        )
    return f"No {large} x {large} teacher exists: quality at {large} is **not measured**."


def markdown(res: PrecisionResult) -> str:
    cfg, q = res.cfg, res.cfg.quality
    seeds = ", ".join(map(str, cfg.seeds))
    size, large = res.image_size, cfg.large
    out = [
        "Is a tailored model in INT8 faster than what a user gets for free, the full model quantised by "
        "onnxruntime? Rows: the full model (the task set's heads of the reference); **full + ORT static "
        "INT8**, the user's alternative: `quant_pre_process`, then `quantize_static` (QDQ, per-channel QInt8 "
        f"weights, MinMax, {cfg.calib_images} calibration scenes, no retraining), once with onnxruntime's "
        "default signed activations (S8S8) and once with unsigned ones (U8S8, `activation_type=QUInt8`): "
        "with a zero point both are the same 256 levels, so the same outputs, but onnxruntime's kernels for "
        "them differ in speed; the goals compare with whichever of the two ran faster. Then edgecut's "
        "model at each MACs budget, the one the engine ships after its refinements (built by bench quality's lineage: "
        "`TorchEngine.build` then every `TorchEngine.refine`), in fp32 and quantised by the engine's "
        "`quantise_checked` (the same onnxruntime tools with U8S8, calibrated on the seed's draw; seed 0's "
        "draw is the engine's own, so that row is the INT8 variant the engine offers; each task checked "
        f"against the fp32 model on the validation scenes: one losing more than {cfg.check_threshold:g} "
        "point keeps its most sensitive nodes fp32, else the answer is fp32 and why).",
        "",
        f"Every file is scored by onnxruntime on the same {q.n_val} validation scenes ({size} x {size}); Δm "
        "against the full fp32 file. INT8 models are made once per calibration seed (seeds "
        f"{seeds}: which {cfg.calib_images} of the engine's {q.n_calib} calibration scenes, the same draw "
        "for the user's model and edgecut's): mean ± sd over seeds where it varies. Timing: every file of "
        f"the run timed in turns in one process, batch 1, {cfg.rounds} rounds of {cfg.runs} runs, the "
        "median of the per-round medians; × = speed-up (1 thread). MB: the ONNX file on disk.",
        "",
        f"Machine: {res.machine}; onnxruntime {res.onnxruntime}; torch trained the lineage on "
        f"{res.torch_threads} thread{'s' if res.torch_threads > 1 else ''}; load average {res.load[0]:.1f} at the "
        f"start, {res.load[1]:.1f} at the end. Whole run: {res.seconds / 60:.1f} min. Rerun: `{res.command}`.",
    ]
    if titled(res)[0] != SECTION:
        out.insert(
            0,
            f"*{SECTION}* on `{res.cfg.quality.checkpoint.name}`, a reference trained at {size} x {size}: "
            "quality and speed both measured at that size.\n",
        )
    for tasks in task_sets(res):
        name = " + ".join(tasks)
        out += ["", f"**{name}, {size} x {size}**", "", *table(res, tasks, size)]
        for case, said in res.shipped.items():
            if case.startswith(name + " @"):
                out.append(f"\n{case}: the engine shipped {said}.")
    if large and large != size:
        out += [
            "",
            f"**At {large} x {large}** (speed only). The reference is fully convolutional (convolutions and "
            "bilinear resizes; the exporter writes the resizes' target sizes as constants), so the same "
            f"files were timed with their input made {large} x {large} (`precision_onnx.resized` scales "
            f"those constants). {_quality_at(large, size)} The Δm that the goal below uses at this size is "
            f"the one measured at {size} x {size}.",
        ]
        for tasks in task_sets(res):
            out += ["", f"*{' + '.join(tasks)}, {large} x {large}*", "", *table(res, tasks, large)]
    out += [
        "",
        "**Goals of issue 30** (judged from the rows above by benchmarks/edgecut_bench/precision_report.py):",
        "",
        "| goal | case | measured | verdict |",
        "|---|---|---|---|",
        *(f"| {v.goal} | {v.case} | {v.measured} | **{v.verdict}** |" for v in verdicts(res)),
    ]
    return "\n".join(out)


LEAD = "Precision"  # the Summary's bullet


def _packaged_size() -> int:
    """The input size of the reference every bench uses unless told otherwise."""
    return int(load_record(PACKAGED_REFERENCE)["config"]["image_size"])


def titled(res: PrecisionResult) -> tuple[str, str]:
    """The section's heading and the Summary bullet's lead: a run on the default reference has the plain
    ones; a run on a reference of another input size (`--checkpoint`, e.g. the packaged 128 px one) is
    named by that size, so rendering it never replaces the default reference's text."""
    if res.image_size == _packaged_size():
        return SECTION, LEAD
    size = res.image_size
    return f"{SECTION} at {size}x{size}", f"{LEAD} at {size}x{size}"


def bullet(res: PrecisionResult) -> str:
    """The Summary's bullet: the goals' verdicts as the section's table states them."""
    seeds = len(res.cfg.seeds)
    said = "; ".join(f"{v.case}: {v.measured}, **{v.verdict}**" for v in verdicts(res))
    on = "" if titled(res)[1] == LEAD else f" on `{res.cfg.quality.checkpoint.name}`"
    return (
        f"(`edgecut bench precision`{on}, {seeds} calibration seed{'s' if seeds > 1 else ''}, 1 thread): "
        f"edgecut's INT8 at macs {GOAL_BUDGET:g} against the full model in the user's faster onnxruntime "
        f"static INT8 (goal ≥ {SPEED_GOAL:g}x at Δm ≥ {DM_FLOOR:+g} %), and each INT8 model against its "
        f"fp32 twin (goal: loses ≤ {TWIN_LOSS:g} point): {said}."
    )
