"""Every `edgecut bench` command, end to end at its smallest size, as a user runs it.

Each run is a real `edgecut bench ...` process writing into a temporary markdown file; it fails on a
non-zero exit, a hang (the per-command time-out) or an empty result (its section missing or without a
figure). They run in `make test-bench` (EDGECUT_BENCH_SMOKE=1; ~2 min together), not in `make test`.
So do the three with a file of their own: `bench paper --quick` checks its sections and its re-render
from rows (tests/e2e/test_bench_paper_smoke.py); `bench arm64` needs root and qemu
(tests/e2e/test_bench_arm64_smoke.py); `bench precision` checks its re-render from rows
(tests/e2e/test_bench_precision_smoke.py).
"""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from edgecut.cli import build_parser
from tests.support.bench_smoke import OTHER, SMOKE, run_bench, section

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@dataclass(frozen=True)
class Smoke:
    bench: str
    section: str
    args: str  # {data} = a data dir shared by the runs, {tmp} = this run's directory
    timeout_s: float = 240.0
    out_flag: str = "--out"
    expect: tuple[str, ...] = ()  # text its section must hold besides a figure


SMOKES = [
    Smoke("model", "Reference model", "--data-dir {data}"),
    Smoke("tailor", "Tailoring time (no recovery)", "--data-dir {data} --repeats 1 --task-sets seg,depth"),
    Smoke("prune", "Pruning: CUT vs. baselines", "--data-dir {data} --quick --plot {tmp}/prune.png"),
    Smoke(
        "quality",
        "Quality at budget",
        "--data-dir {data} --task-sets seg,depth --budgets 0.5 --scratch-epochs 0.05 --scratch-seconds 5 "
        "--train-scenes 32 --calib-scenes 32 --val-scenes 16 --recovery-steps 2 --refine-steps 2 --seeds 0 "
        "--rows {tmp}/rows.pkl --plot {tmp}/quality.png",
        timeout_s=420.0,
        expect=tuple(
            f"Torch-Pruning {v}, {s}"
            for v in ("magnitude", "taylor", "isomorphic")
            for s in ("quick", "final")
        ),
    ),
    Smoke("generality", "Generality", "--data-dir {data} --quick", timeout_s=420.0),
    Smoke("sizing", "Fleet sizing", "--data-dir {data} --devices 8 --builds 1 --recovery-steps 0"),
    Smoke("swap", "Agent hot-swap", "--swaps 2 --rate 20 --clients 1 --swap-interval 0.2", timeout_s=120.0),
    Smoke(
        "download",
        "Fleet service",
        "--size-mb 1 --chunks-kb 64 --repeats 1",
        timeout_s=120.0,
        out_flag="--output",
    ),
    Smoke(
        "adapt",
        "Adapting to a device's images",
        "--data-dir {data} --quick --rows {tmp}/rows.pkl",
        timeout_s=420.0,
        expect=("| dark (x0.4) |", "| all four at once |", "uplink ≤ 8 KB"),
    ),
    Smoke(
        "adapt-agent",
        "Agent: statistics CPU share (issue 31)",
        "--data-dir {data} --seconds 4 --stress-rate 0",
        timeout_s=180.0,
        expect=("| 5 | on |",),
    ),
    Smoke(
        "widths",
        "Layer widths: what a channel step buys",
        "--widths 8,16 --rounds 1 --runs 3 --rows {tmp}/w.pkl",
    ),
    Smoke(
        "quick-load",
        "Quick build on a busy machine",
        "--cores 1 --task-sets seg,depth --rows {tmp}/q.pkl",
        expect=("| seg + depth | quiet |", "| seg + depth | 1 core busy |"),
    ),
    Smoke(
        "fleet",
        "Fleet under load and faults",
        "--devices 3 --processes 1 --build-s 0.1 --no-faults",
        timeout_s=180.0,
        out_flag="--output",
    ),
]
ELSEWHERE = {"paper", "arm64", "precision"}  # their smoke runs: see the module docstring
# The Summary bullets a bench renders from its section's rows (edgecut_bench.doc.write_bullet).
SUMMARY_BULLETS = {
    "model": ("Reference model",),
    "prune": ("CUT vs. baselines", "Real speed"),
    "generality": ("Generality",),
    "quick-load": ("Quick build on a busy machine",),
}


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(sub.choices)


def test_every_bench_command_has_a_smoke_run() -> None:
    benches = _subcommands(_subcommands(build_parser())["bench"])
    assert set(benches) == {s.bench for s in SMOKES} | ELSEWHERE


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("bench-data")


@pytest.mark.bench
@pytest.mark.broker
@SMOKE
@pytest.mark.parametrize("smoke", SMOKES, ids=[s.bench for s in SMOKES])
def test_bench_smoke(smoke: Smoke, data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "bench.md"
    out.write_text(OTHER)
    args = [a.format(data=data_dir, tmp=tmp_path) for a in smoke.args.split()]
    run_bench(smoke.bench, [*args, smoke.out_flag, str(out)], smoke.timeout_s)
    doc = out.read_text()
    assert OTHER in doc  # only its own section is rewritten
    body = section(doc, smoke.section)
    assert re.search(r"^\|.*\d.*\|$", body, re.M), f"no figure in its section:\n{body[:2000]}"
    missing = [text for text in smoke.expect if text not in body]
    assert not missing, f"its section lacks {missing}:\n{body[:2000]}"
    summary = section(doc, "Summary") if SUMMARY_BULLETS.get(smoke.bench) else ""
    for lead in SUMMARY_BULLETS.get(smoke.bench, ()):
        bullet = re.search(rf"^- \*\*{re.escape(lead)}\*\* (.*(?:\n  .*)*)", summary, re.M)
        assert bullet and re.search(r"\d", bullet.group(1)), f"no {lead!r} bullet with a figure:\n{summary}"
