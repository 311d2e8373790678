"""`edgecut bench paper`: registered by bench_cli; torch is imported in the handler only."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from edgecut.server.cliopts import positive_int
from edgecut.server.paths import CHECKPOINT_HELP, DEFAULT_DATA_DIR, reference_checkpoint, scenes_cache


def register(bench_sub: argparse._SubParsersAction) -> None:
    p = bench_sub.add_parser(
        "paper",
        help="the seed papers' tables over seeds: CUT unstructured, structured, Garg, what we learned",
    )
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    p.add_argument(
        "--checkpoint",
        type=Path,
        help=CHECKPOINT_HELP,
    )
    p.add_argument("--quick", action="store_true", help="every table on tiny settings, 2 seeds (smoke test)")
    p.add_argument("--seeds", type=positive_int, help="how many seeds, 0..N-1 (default 3; --quick: 2)")
    p.add_argument(
        "--workers",
        type=positive_int,
        default=min(2, os.cpu_count() or 1),
        help="worker processes, one torch thread each (default: 2, or 1 on a 1-core machine)",
    )
    p.add_argument(
        "--rows",
        type=Path,
        help="where the run's rows are saved for --render-from (default: DATA_DIR/bench/paper-rows.pkl)",
    )
    p.add_argument(
        "--render-from",
        type=Path,
        metavar="ROWS",
        help="no run: rewrite the sections, plot and Summary bullet from rows an earlier run saved",
    )
    p.add_argument("--out", type=Path, default=Path("docs/benchmarks.md"), help="markdown to update")
    p.add_argument("--plot", type=Path, default=Path("docs/paper_garg.png"), help="Garg reproduction plot")
    p.set_defaults(handler=run_paper)


def run_paper(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from rich.console import Console

    from edgecut.doc_sections import write_section
    from edgecut_bench import paper, paper_report
    from edgecut_bench.doc import write_bullet

    if args.render_from:
        res = paper.load_rows(args.render_from)
    else:
        ckpt = args.checkpoint or reference_checkpoint(args.data_dir)
        cfg = paper.PaperConfig(ckpt, cache_dir=scenes_cache(args.data_dir), workers=args.workers)
        if args.quick:
            cfg = paper.quick(cfg)
        if args.seeds:
            cfg = replace(cfg, seeds=tuple(range(args.seeds)))
        res = paper.run(cfg)
        rows = args.rows or args.data_dir / "bench" / "paper-rows.pkl"
        paper.save_rows(res, rows)
        Console().print(f"rows saved to {rows} (re-render with --render-from {rows})", highlight=False)
    base_specs = paper.checkpoint.load(res.cfg.checkpoint).task_specs
    paper_report.plot_garg(res, base_specs, args.plot)
    console = Console()
    for title, body in paper_report.sections(res, base_specs, args.plot.name).items():
        console.print(f"## {title}\n\n{body}\n", markup=False, highlight=False)
        write_section(args.out, title, body)
    bullet = paper_report.summary_bullet(res)
    console.print(f"Summary: **{paper_report.SUMMARY_LEAD}** {bullet}", markup=False, highlight=False)
    write_bullet(args.out, "Summary", paper_report.SUMMARY_LEAD, bullet)
    return 0
