"""The findings of `edgecut bench paper`, each computed from the run's rows: wins / no difference / losses
by a paired test over seeds (paper_stats), the best methods per setting, what the kept shares per layer show, Garg's two
findings at matched sizes, the "what we learned" paragraph and the Summary bullet."""

from __future__ import annotations

from collections.abc import Sequence

from edgecut.server.cut.methods import DEFAULT_METHOD, MASK_METHODS, METHODS
from edgecut_bench.paper_parts import DEFAULT_ROW
from edgecut_bench.paper_rows import GargRow, KeptShare, PaperResult, SingleTaskRow
from edgecut_bench.paper_stats import (
    Comparison,
    Tally,
    aligned,
    grouped,
    interpolate,
    matched_grid,
    mean,
    paired,
    stat,
    tally,
    verdict,
)

Seeds = dict[int, float]  # seed -> value: two methods are compared on the seeds both ran (paired)
FINDING1_POINTS = 4  # matched parameter counts at which Garg's two criteria are compared
CLEARLY = 0.8  # one kept share (a mean over seeds) is "clearly less" than another below 0.8x of it


def label(name: str) -> str:
    if name == DEFAULT_ROW:
        m = METHODS[DEFAULT_METHOD]
        return f"edgecut default {DEFAULT_METHOD} ({m.criterion}/{m.fusion}/{m.target})"
    m = MASK_METHODS[name]
    extra = (", 1st order" if m.order == "first" else "") + (
        ", papers' keep" if m.protocol == "papers" else ""
    )
    return f"{name} ({m.criterion}/{m.fusion}/{m.target}{extra})"


def mask_seeds(res: PaperResult) -> dict[tuple[tuple[str, ...], float], dict[str, Seeds]]:
    """Setting (tasks, nominal sparsity) -> method -> seed -> Δm after the fine-tune."""
    out: dict[tuple[tuple[str, ...], float], dict[str, Seeds]] = {}
    for r in res.mask_rows:
        out.setdefault((r.tasks, r.target), {}).setdefault(r.method, {})[r.seed] = r.result.dm_after
    return out


def channel_seeds(res: PaperResult) -> dict[float, dict[str, Seeds]]:
    out: dict[float, dict[str, Seeds]] = {}
    for r in res.channel_rows:
        out.setdefault(r.level, {}).setdefault(r.method, {})[r.seed] = r.result.dm_after
    return out


def _pairs(settings: Sequence[dict[str, Seeds]], a: str, b: str) -> list[tuple[list[float], list[float]]]:
    """Per setting, a's and b's values on the seeds both ran, in seed order (paired)."""
    return [aligned(s[a], s[b]) for s in settings if a in s and b in s and s[a].keys() & s[b].keys()]


def compare(res: PaperResult, a: str, b: str) -> tuple[Tally, Tally]:
    """a against b over the unstructured settings and over the structured ones."""
    return (
        tally(_pairs(list(mask_seeds(res).values()), a, b)),
        tally(_pairs(list(channel_seeds(res).values()), a, b)),
    )


def best(methods: dict[str, Seeds]) -> list[str]:
    """The method with the highest mean Δm and every method the paired test over seeds cannot separate
    from it (with one seed there is no test: then the top alone); the papers' keep row is left out (its
    sparsity is not the setting's)."""
    pool = {
        m: v for m, v in methods.items() if m not in MASK_METHODS or MASK_METHODS[m].protocol == "matched"
    }
    if not pool:
        return []
    top = max(pool, key=lambda m: stat(list(pool[m].values())).mean)
    return [m for m in pool if m == top or _tied(pool[top], pool[m])]


def _tied(a: Seeds, b: Seeds) -> bool:
    return paired(*aligned(a, b)).verdict == "no difference" if a.keys() & b.keys() else False


def best_line(res: PaperResult, tasks: tuple[str, ...]) -> str:
    parts = [
        f"{target:.0%}: {', '.join(best(methods))}"
        for (t, target), methods in mask_seeds(res).items()
        if t == tasks
    ]
    return (
        "Best Δm after fine-tune, with the methods a paired t-test over seeds (5 %) cannot separate from it: "
        + "; ".join(parts)
        + "."
    )


def best_counts(res: PaperResult) -> tuple[dict[str, list[str]], int]:
    """Method -> the unstructured settings where it is best or tied with the best; and how many settings."""
    settings = mask_seeds(res)
    out: dict[str, list[str]] = {}
    for (tasks, target), methods in settings.items():
        for m in best(methods):
            out.setdefault(m, []).append(f"{'+'.join(tasks)} {target:.0%}")
    return out, len(settings)


def _t(t: Tally) -> str:
    return f"{t} (W / N / L, {t.gaps()})"


def _region(name: str) -> str:
    parts = name.split(".")
    return f"head {parts[1]}" if parts[0] == "heads" and len(parts) > 1 else "trunk"


def kept_table(kept: list[KeptShare]) -> tuple[list[str], dict[str, dict[str, float]], dict[str, int]]:
    """Columns (method@sparsity, then CUT's per-task own keeps) -> layer or region -> mean kept share."""
    by = grouped(kept, lambda k: (k.method, k.sparsity))
    cols: dict[str, dict[str, float]] = {}
    sizes: dict[str, int] = {}
    for (method, s), ks in by.items():
        sizes = ks[0].sizes
        cols[f"{method} {s:.0%}"] = _with_regions({n: mean(k.fused[n] for k in ks) for n in sizes}, sizes)
    for (method, s), ks in by.items():
        if method != "cut":
            continue
        for task in ks[0].per_task:
            shares = {n: mean(k.per_task[task][n] for k in ks) for n in sizes}
            cols[f"cut {s:.0%}: {task}'s own"] = _with_regions(shares, sizes)
    region_sizes: dict[str, int] = {}
    for n, size in sizes.items():
        region_sizes[_region(n)] = region_sizes.get(_region(n), 0) + size
    return list(cols), cols, {**sizes, **region_sizes}


def _with_regions(shares: dict[str, float], sizes: dict[str, int]) -> dict[str, float]:
    kept: dict[str, float] = {}
    total: dict[str, int] = {}
    for n, s in shares.items():
        r = _region(n)
        kept[r] = kept.get(r, 0.0) + s * sizes[n]
        total[r] = total.get(r, 0) + sizes[n]
    return {**shares, **{r: kept[r] / total[r] for r in kept}}


def kept_findings(res: PaperResult) -> list[str]:
    """What the logged kept shares show at the highest logged sparsity, in numbers."""
    names, cols, sizes = kept_table(res.kept)
    if not names:
        return []
    s = max(k.sparsity for k in res.kept)
    tasks = res.cfg.kept_tasks
    regions = ["trunk", *(f"head {t}" for t in tasks)]
    dm = mask_seeds(res).get((tasks, s), {})

    def shares(method: str) -> str:
        col = cols.get(f"{method} {s:.0%}")
        if col is None:
            return ""
        d = f", Δm {stat(list(dm[method].values())).pm(1)} %" if method in dm else ""
        return f"{method}{d}: " + ", ".join(f"{r} {col[r]:.0%}" for r in regions if r in col)

    lines = [
        f"At {s:.0%} ({'+'.join(tasks)}), kept share per region — "
        + "; ".join(x for x in (shares(m) for m in res.cfg.kept_methods) if x)
        + "."
    ]
    mag, cut = cols.get(f"magnitude {s:.0%}"), cols.get(f"cut {s:.0%}")
    if not (mag and cut):
        return lines
    heads = "".join(f", {cut[f'head {t}']:.0%} vs {mag[f'head {t}']:.0%} of the {t} head" for t in tasks)
    lines.append(
        f"Against magnitude, CUT keeps {cut['trunk']:.0%} vs {mag['trunk']:.0%} of the trunk{heads}."
    )
    own = {t: c for t in tasks if (c := cols.get(f"cut {s:.0%}: {t}'s own"))}
    if own:
        agree = cut["trunk"] / max(mean(o["trunk"] for o in own.values()), 1e-9)
        lines.append(
            "Before the vote, each task's own top-k spreads its share over the trunk and its own head and keeps "
            + ", ".join(f"{o['trunk']:.0%} of the trunk ({t})" for t, o in own.items())
            + f"; the vote keeps a trunk weight only where at least two tasks keep it, {cut['trunk']:.0%}: "
            f"the tasks' trunk masks overlap on {agree:.0%} of what each keeps."
        )
    layers = [n for n in sizes if n.startswith("trunk.") and mag.get(n, 0) > 0]
    if layers:
        thin = min(layers, key=lambda n: cut[n] / mag[n])
        by_scores = bool(own) and all(o[thin] < 0.5 * mag[thin] for o in own.values())
        lines.append(
            f"The trunk layer CUT thins most against magnitude is `{thin}`: {cut[thin]:.0%} vs {mag[thin]:.0%}"
            + "".join(f"; {t}'s own mask keeps {o[thin]:.0%} there" for t, o in own.items())
            + (
                ": every task's own scores give it little, so the per-task scores, not the vote, empty it."
                if by_scores
                else "."
            )
        )
    more = [t for t in tasks if CLEARLY * cut[f"head {t}"] > mag[f"head {t}"]]
    less = [t for t in tasks if cut[f"head {t}"] < CLEARLY * mag[f"head {t}"]]
    if more:
        lines.append(
            "CUT spends clearly more than magnitude on "
            + " and ".join(f"the {t} head ({cut[f'head {t}']:.0%} vs {mag[f'head {t}']:.0%})" for t in more)
            + ", weights the trunk does not get."
        )
    if len(own) >= 2:
        low = min(own, key=lambda t: own[t]["trunk"])
        high = max(own, key=lambda t: own[t]["trunk"])
        alone = own[low]["trunk"] < CLEARLY * own[high]["trunk"]
        fits = (low == "depth" and alone) or "depth" in less
        lines.append(
            (
                f"{low}'s own mask keeps clearly less of the trunk than {high}'s: its scores sit in its head."
                if alone
                else "The tasks' own masks keep about the same share of the trunk, so no one task's scores "
                "starve the shared layers."
            )
            + (f" CUT keeps clearly less than magnitude of the {' and '.join(less)} head." if less else "")
            + (
                " (The review suspected that SNIP under depth's L1 loss, a sign-only pixel gradient, starves "
                f"depth: {'these masks fit that' if fits else 'these masks do not show it'}.)"
                if "depth" in own
                else ""
            )
        )
    return lines


def garg_findings(
    rows: list[GargRow], criteria: Sequence[str], singles: Sequence[SingleTaskRow] = ()
) -> list[str]:
    """Garg's two findings, each stated as holding or not on these rows (mean over seeds; a difference is
    one the paired t-test over seeds finds, see paper_stats), and the single-task models beside finding 1."""
    crits = [c for c in criteria if any(r.criterion == c for r in rows)]
    out: list[str] = []
    if len(crits) >= 2:
        a, b = crits[:2]
        curves = {
            (c, seed): [(float(r.size.params), r.dm_iterative) for r in rs]
            for (c, seed), rs in grouped(rows, lambda r: (r.criterion, r.seed)).items()
            if c in (a, b)
        }
        grid = matched_grid(list(curves.values()), FINDING1_POINTS)
        seeds = sorted({seed for _, seed in curves})
        table, outcomes = [], []
        both = [s for s in seeds if (a, s) in curves and (b, s) in curves]  # paired by seed
        for x in grid:
            va = [interpolate(curves[(a, s)], x) for s in both]
            vb = [interpolate(curves[(b, s)], x) for s in both]
            o = paired(va, vb)
            outcomes.append(o.verdict)
            word = _ahead(o, a, b)
            table.append(f"| {x / 1e3:.1f}k | {stat(va).pm()} | {stat(vb).pm()} | {word} |")
        if grid and len(both) < 2:
            out.append(
                f"Finding 1 could not be tested: {len(both)} seed (the paired test needs two or more)."
            )
        elif grid:
            ties = outcomes.count("no difference")
            v = "holds" if ties == len(outcomes) else "does not hold" if ties == 0 else "partly holds"
            out += [
                f"Finding 1 (the two criteria give similar quality at equal size) **{v}** here: compared at "
                f"{len(grid)} matched parameter counts (each seed's Δm curve interpolated linearly in params "
                f"between its recorded rounds; the counts span the range every curve covers), a paired t-test "
                f"over {len(both)} seeds (5 %) finds no difference at {ties} of {len(grid)}.",
                "",
                f"| params | Δm % iterative {a} | Δm % iterative {b} | paired test |",
                "|---:|---:|---:|---|",
                *table,
                "",
            ]
        else:
            out.append(
                f"Finding 1 could not be tested: the {a} and {b} curves cover no common parameter count."
            )
    out += _single_task_lines(singles)
    last = grouped(
        [r for r in rows if r.round == max((q.round for q in rows), default=0)], lambda r: r.criterion
    )
    if last:
        arms = {
            c: paired([r.dm_retrained for r in rs], [r.dm_iterative for r in rs]) for c, rs in last.items()
        }
        wins = sum(o.sign > 0 for o in arms.values())
        untested = all(o.verdict == "not tested" for o in arms.values())
        v = (
            "cannot be tested (1 seed)"
            if untested
            else "holds"
            if wins == len(arms)
            else "partly holds"
            if wins
            else "does not hold"
        )
        detail = "; ".join(
            f"{c}: {mean(r.size.params for r in rs) / 1e3:.0f}k params, {_budget(rs)}, iterative Δm "
            f"{stat([r.dm_iterative for r in rs]).pm(1)} %, re-initialised and retrained "
            f"{stat([r.dm_retrained for r in rs]).pm(1)} % "
            f"({_ahead(arms[c], 'retrained', 'iterative')})"
            for c, rs in last.items()
        )
        out.append(
            f"Finding 2 (at extreme pruning the same architecture retrained from scratch beats iterative "
            f"pruning) **{v}** here at the most pruned configuration, both arms on the same architecture "
            f"with the same training ({detail}; {COMPARED})."
        )
    return out


COMPARED = "seeds compared by a paired t-test, see *Paper: what we learned*"


def _budget(rows: Sequence[GargRow]) -> str:
    """Both arms' training, as the rows record it (one figure when every row agrees)."""
    iterative = sorted({r.steps_iterative for r in rows})
    retrained = sorted({r.steps_retrained for r in rows})
    scenes = sorted({r.scenes for r in rows})
    fmt = "/".join
    if iterative == retrained:
        return f"both arms {fmt(map(str, iterative))} steps on {fmt(map(str, scenes))} scenes"
    return f"iterative {fmt(map(str, iterative))} vs retrained {fmt(map(str, retrained))} steps"


def single_task_outcomes(singles: Sequence[SingleTaskRow]) -> dict[tuple[str, str], Comparison]:
    """(criterion, task) -> the multi-task model retrained alike against the task alone (paired by seed)."""
    return {
        k: paired([r.dm_multi_retrained for r in rs], [r.dm for r in rs])
        for k, rs in grouped(singles, lambda r: (r.criterion, r.task)).items()
    }


def _single_task_lines(singles: Sequence[SingleTaskRow]) -> list[str]:
    """Each task alone on the most pruned architecture against the multi-task model retrained alike."""
    if not singles:
        return []
    outcomes = single_task_outcomes(singles)
    parts = []
    for crit, rs in grouped(singles, lambda r: r.criterion).items():
        per_task = "; ".join(
            f"{task} {stat([r.dm_multi_retrained for r in ts]).pm(1)} vs {stat([r.dm for r in ts]).pm(1)} % "
            f"({_ahead(outcomes[(crit, task)], 'multi-task', 'single-task')})"
            for task, ts in grouped(rs, lambda r: r.task).items()
        )
        parts.append(
            f"{crit} (trunk {mean(r.trunk_params for r in rs) / 1e3:.1f}k params, multi-task model "
            f"{mean(r.multi_size.params for r in rs) / 1e3:.1f}k with every head): {per_task}"
        )
    r0 = singles[0]
    return [
        "Single-task models of the same size beside finding 1: each task alone on the most pruned "
        "architecture (the same trunk, that task's head only), re-initialised and trained "
        f"{r0.steps} steps on {r0.scenes} scenes like the retrained multi-task model. That task's Δm, multi-task "
        "vs single-task: " + " — ".join(parts) + f" ({COMPARED}).",
        "",
    ]


def _ahead(c: Comparison, a: str, b: str) -> str:
    """ "retrained ahead by +3.10 pp (95 % CI …)", "no difference (p = 0.31, n = 3)", "1 seed: not tested"."""
    if c.sign == 0:
        return c.said()
    return f"{a} ahead by {c.said()}" if c.sign > 0 else f"{b} ahead by {c.flipped().said()}"


def learned_md(res: PaperResult, machine: str) -> str:
    vu = compare(res, "cut", "snip-union")
    vd = compare(res, "cut", "disparse-pt")
    both = compare(res, "cut-distill", "cut")
    target = compare(res, "cut-distill-fo", "cut")
    order = compare(res, "cut-distill", "cut-distill-fo")
    counts, n_settings = best_counts(res)
    ranked = sorted(counts, key=lambda m: -len(counts[m]))
    lines = [
        f"Outcomes are wins / no difference / losses (W / N / L) over settings (task set x sparsity; "
        f"structured: level), each setting judged by a paired t-test over its {len(res.cfg.seeds)} seeds "
        "(two-sided, 5 %; a seed is the same calibration and data draw for both methods): a win or a loss "
        "only where the 95 % interval of the mean per-seed gap excludes 0, else no difference. The mean "
        "gap over the settings is given with its median, which one collapsed setting cannot move.",
        "",
        f"- *Does the vote beat the union?* {_cap(verdict('the vote', 'the union', vu[0]))} on the unstructured path: "
        f"CUT (vote) against SNIP + union {_t(vu[0])}; structured {_t(vu[1])}. Against DiSparse's own "
        f"pre-trained recipe (|dL/dw| w², union): unstructured {_t(vd[0])}, structured {_t(vd[1])}.",
        f"- *Does distillation beat labelled scoring?* {_cap(verdict('distillation', 'labels', both[0]))} "
        f"(unstructured): cut-distill against cut {_t(both[0])}, structured {_t(both[1])}. Separated: the "
        f"target alone (first-order label-free against CUT's labelled scores) {_t(target[0])}, structured "
        f"{_t(target[1])}; the order alone (second against first order, both label-free) {_t(order[0])}, "
        f"structured {_t(order[1])}.",
        f"- *Which method is best?* Over the {n_settings} unstructured settings, best or not separable from "
        "the best by the paired test: "
        + "; ".join(f"{label(m)} {len(counts[m])} ({', '.join(counts[m])})" for m in ranked)
        + ". "
        + _magnitude_note(counts, n_settings),
        *_papers_keep_line(res),
        *_why_lines(res),
        *default_lines(res),
        *(
            f"- {x.splitlines()[0]}"
            for x in garg_findings(res.garg_rows, res.cfg.garg_criteria, res.single_rows)
            if x.startswith(("Finding", "Single-task"))
        ),
        "",
        machine,
    ]
    return "\n".join(lines)


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _why_lines(res: PaperResult) -> list[str]:
    found = kept_findings(res)
    if len(found) < 2:
        return []
    return ["- *Where the budget goes* (kept share per layer, below): " + " ".join(found)]


def _magnitude_note(counts: dict[str, list[str]], n: int) -> str:
    k = len(counts.get("magnitude", []))
    if k == 0:
        return "Global magnitude pruning is never best here."
    return (
        f"Global magnitude pruning, the simplest baseline, is best or tied in {k} of {n} settings: the "
        "kept-share table shows where the budget goes."
    )


def _papers_keep_line(res: PaperResult) -> list[str]:
    rows = grouped((r for r in res.mask_rows if r.method == "cut-papers-keep"), lambda r: r.target)
    if not rows:
        return []
    parts = ", ".join(f"{t:.0%} -> {mean(r.sparsity for r in rs):.1%}" for t, rs in rows.items())
    return [
        f"- *The papers' protocol:* with their NYUv2 keep table per task, CUT's vote removes (nominal -> "
        f"measured, mean over task sets and seeds) {parts} of the weights; the matched rows remove exactly "
        "the nominal share, so only they compare methods at equal size."
    ]


def default_lines(res: PaperResult) -> list[str]:
    seeds = channel_seeds(res)
    methods = dict.fromkeys(m for per in seeds.values() for m in per)
    means = {m: mean(x for per in seeds.values() for x in per.get(m, {}).values()) for m in methods}
    if not means:
        return []
    top = max(means, key=lambda m: means[m])
    levels = "/".join(f"{lv:.0%}" for lv in res.cfg.levels)
    current = means.get(DEFAULT_ROW)
    if top == DEFAULT_ROW:
        tail = "the default itself, so it stays."
    elif current is not None:
        t = tally(_pairs(list(seeds.values()), DEFAULT_ROW, top))
        behind = t.losses > t.wins and t.losses >= t.ties  # the best method beats the default across levels
        tail = (
            f"the current default `{DEFAULT_METHOD}` scores {current:+.2f} % (against it, per level: {t} "
            "W / N / L by the paired test); "
            + (
                f"so these numbers say the default should become {label(top)}."
                if behind
                else f"no consistent gap across the levels, so the default stays `{DEFAULT_METHOD}`."
            )
        )
    else:
        tail = "the current default was not measured."
    return [
        f"- *edgecut's default* is `{DEFAULT_METHOD}`. The best mean Δm after fine-tuning on the structured "
        f"(shipping) path over {levels} params removed is **{label(top)}**'s, {means[top]:+.2f} %; " + tail
    ]


def summary_methods(counts: dict[str, list[str]]) -> list[str]:
    """The methods the Summary names: the three leading counts of best-or-inseparable settings with
    every method tied with the third (a cut-off inside a tie would rank by dict order), then CUT, the
    method reproduced, and magnitude, the simplest baseline, wherever they stand."""
    ranked = sorted(counts, key=lambda m: -len(counts[m]))
    third = len(counts[ranked[min(2, len(ranked) - 1)]]) if ranked else 0
    shown = [m for m in ranked if len(counts[m]) >= third]
    return shown + [m for m in ("cut", "magnitude") if m not in shown]


def summary(res: PaperResult) -> str:
    """The Summary's bullet for this run (edgecut_bench.doc.write_bullet puts it in place)."""
    vu, _ = compare(res, "cut", "snip-union")
    vd, _ = compare(res, "cut", "disparse-pt")
    both, _ = compare(res, "cut-distill", "cut")
    counts, n = best_counts(res)
    shown = summary_methods(counts)
    lat = res.mask_latency
    garg = [
        x.split(" here")[0].replace("**", "")
        for x in garg_findings(res.garg_rows, res.cfg.garg_criteria, res.single_rows)
        if x.startswith("Finding")
    ]
    return (
        f"(`edgecut bench paper`, {len(res.cfg.seeds)} seeds, {res.seconds['total'] / 60:.1f} min on 2 cores; "
        f"scaled settings beside each table): on the unstructured path CUT's vote against SNIP + union "
        f"{vu} (wins / no difference / losses, a paired t-test over seeds per setting; {vu.gaps()}), against "
        f"DiSparse's own pre-trained recipe (disparse-pt) {vd} ({vd.gaps()}), label-free "
        f"distillation scores against labelled ones {both} ({both.gaps()}). Best or not "
        f"separable from the best in the {n} settings: "
        + ", ".join(f"{m} {len(counts.get(m, []))}" for m in shown)
        + f". A {lat.sparsity:.0%}-sparse masked model runs no faster than the dense one ({lat.masked_ms:.2f} vs "
        f"{lat.dense_ms:.2f} ms), which is why the product removes channels."
        + _garg_summary(res, [*garg, *_single_task_summary(res.single_rows)])
    )


def _garg_summary(res: PaperResult, lines: list[str]) -> str:
    return f" Garg et al.{_garg_budget(res)}: " + "; ".join(lines) + "." if lines else ""


def _garg_budget(res: PaperResult) -> str:
    if not res.garg_rows:
        return ""
    steps = max(r.steps_retrained for r in res.garg_rows)
    return f" (both arms trained alike, up to {steps} steps on {res.garg_rows[0].scenes} scenes)"


def _single_task_summary(singles: Sequence[SingleTaskRow]) -> list[str]:
    o = [c.sign for c in single_task_outcomes(singles).values()]
    if not o:
        return []
    return [
        f"single-task models of the same size against the multi-task one: multi-task ahead in {o.count(1)}, "
        f"no difference in {o.count(0)}, single-task ahead in {o.count(-1)} of {len(o)} (criterion x task; "
        "paired t-test over seeds)"
    ]
