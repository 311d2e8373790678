"""`edgecut prune` recovers a pruned model as the server's builds do: outputs and trunk features
distilled (issue 27: with outputs alone a pooled head gets one target per image and its task lags)."""

from __future__ import annotations

import argparse

from edgecut.server.cut import prune_cli
from edgecut.server.cut.refine import QUICK_RECOVERY


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    prune_cli.register(parser.add_subparsers())
    return parser.parse_args(["prune", "--tasks", "seg,count", "--budget", "macs=0.3", *argv])


def test_prune_distils_trunk_features_like_the_engine_for_the_steps_asked() -> None:
    opts = prune_cli.recovery_options(_args("--recover-steps", "150", "--recover-seconds", "30"))
    assert opts is not None
    assert opts.features == QUICK_RECOVERY.features > 0
    assert (opts.steps, opts.seconds, opts.target) == (150, 30.0, "distill")


def test_zero_recovery_steps_means_no_recovery() -> None:
    assert prune_cli.recovery_options(_args("--recover-steps", "0")) is None
