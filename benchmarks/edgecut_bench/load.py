"""A documented CPU load: `python -m edgecut_bench.load --cores N --seconds S`.

Starts N processes that each spin a busy loop (pure Python arithmetic, no I/O, no memory growth) for S
seconds, then exit; Ctrl-C or SIGTERM stops them at once. Used to measure what a build does on a busy
machine (docs/models.md, *Quick model*): run the measurement while this keeps N cores at 100 %.
`busy(cores, seconds)` is the same load as a context manager, for a benchmark that loads its own runs.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing as mp
import signal
import sys
import time
from collections.abc import Iterator
from multiprocessing.process import BaseProcess
from multiprocessing.synchronize import Event


def _spin(stop: Event, seconds: float) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop
    end = time.monotonic() + seconds
    x = 0
    while time.monotonic() < end and not stop.is_set():
        for i in range(100_000):  # ~5 ms of work between checks: stops within a few ms
            x = (x + i * i) % 1_000_003


@contextlib.contextmanager
def busy(cores: int, seconds: float = 3600.0) -> Iterator[list[BaseProcess]]:
    """`cores` processes spinning until the block ends (or `seconds` pass); they are always stopped."""
    if cores < 0 or seconds <= 0:
        raise ValueError("cores must be >= 0 and seconds > 0")
    ctx = mp.get_context("spawn")  # no copy of the caller's torch threads or open files
    stop = ctx.Event()
    procs: list[BaseProcess] = [
        ctx.Process(target=_spin, args=(stop, seconds), daemon=True) for _ in range(cores)
    ]
    for p in procs:
        p.start()
    try:
        yield procs
    finally:
        stop.set()
        for p in procs:
            p.join(5)
            if p.is_alive():
                p.terminate()
                p.join(5)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m edgecut_bench.load",
        description="Keep N CPU cores busy (one spinning process each) for S seconds, then stop.",
    )
    ap.add_argument("--cores", type=int, default=2, help="busy processes to run (default 2)")
    ap.add_argument("--seconds", type=float, default=60.0, help="how long (default 60)")
    args = ap.parse_args(argv)
    if args.cores < 1 or args.seconds <= 0:
        print("--cores must be at least 1 and --seconds positive", file=sys.stderr)
        return 2
    print(
        f"edgecut_bench.load: {args.cores} busy-loop process(es) for {args.seconds:g} s (Ctrl-C stops them)",
        flush=True,
    )
    signal.signal(signal.SIGTERM, _interrupt)  # a plain kill stops the children too
    t0 = time.monotonic()
    try:
        with busy(args.cores, args.seconds) as procs:
            for p in procs:
                p.join()
    except KeyboardInterrupt:
        pass
    print(f"edgecut_bench.load: stopped after {time.monotonic() - t0:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
