"""SNIP + DiSparse's union is not DiSparse: the rows say which is which, and where CUT is compared with
the union the faithful DiSparse recipe (disparse-pt) is stated beside it."""

from __future__ import annotations

from pathlib import Path

from edgecut.cli import build_parser
from edgecut.server.cut.importance import CRITERIA
from edgecut.server.cut.methods import DEFAULT_METHOD, METHODS
from edgecut.server.cut.prune import Size
from edgecut_bench import prune
from edgecut_bench.paper_learned import label, summary
from edgecut_bench.paper_rows import Evaluated, Guard, MaskLatency, MaskRow, PaperConfig, PaperResult


def test_no_method_named_disparse_scores_with_snip() -> None:
    assert "disparse" not in METHODS
    union = METHODS["snip-union"]
    assert (union.criterion, union.fusion) == ("snip", "union") and "not DiSparse itself" in union.about
    faithful = METHODS["disparse-pt"]
    assert (faithful.criterion, faithful.fusion, faithful.target) == ("disparse-pt", "union", "labels")
    assert faithful.criterion in CRITERIA
    assert not [m for m in METHODS.values() if "disparse" in m.name and m.criterion != "disparse-pt"]
    assert label("snip-union").startswith("snip-union (snip/union/")


def test_bench_prune_runs_both_union_methods_by_default() -> None:
    defaults = prune.PruneBenchConfig(Path("m.pt")).methods
    assert {"snip-union", "disparse-pt", DEFAULT_METHOD} <= set(defaults)
    args = build_parser().parse_args(["bench", "prune"])
    assert tuple(args.methods.split(",")) == defaults  # the command and the config agree
    assert "disparse-pt" in prune.quick(prune.PruneBenchConfig(Path("m.pt"))).methods  # in the smoke run too


def _prune_result() -> prune.PruneBenchResult:
    cfg = prune.PruneBenchConfig(
        Path("m.pt"), levels=(0.5, 0.7), methods=(DEFAULT_METHOD, "snip-union", "disparse-pt")
    )
    dms = {DEFAULT_METHOD: (-2.0, -4.0), "snip-union": (-3.0, -6.0), "disparse-pt": (-1.5, -3.5)}
    m = {"seg": {"miou": 0.5}, "depth": {"abs_err": 0.6}}
    rows = [
        prune.Row(name, lv, Size(10, 100), 1.0, 1.0, m, -50.0, m, dm)
        for name, per in dms.items()
        for lv, dm in zip(cfg.levels, per, strict=True)
    ]
    return prune.PruneBenchResult(cfg, m, Size(20, 200), 1.0, Size(30, 300), rows, 64, 60.0)


def test_the_bench_prune_section_names_the_union_rows_and_states_disparse_beside_the_default() -> None:
    text = prune.markdown(_prune_result(), {"seg": "segmentation", "depth": "depth"}, "edgecut bench prune")
    flat = " ".join(text.split())
    assert "*snip-union* is SNIP's |w·dL_t/dw| with DiSparse's union" in flat and "not DiSparse" in flat
    assert (
        f"Δm % after recovery at 50% / 70% removed: {DEFAULT_METHOD} -2.00 / -4.00; disparse-pt -1.50 / -3.50; "
        "snip-union -3.00 / -6.00 (one run of seed 0: no spread is measured" in flat
    )
    assert "| snip-union | " in text and "| disparse-pt | " in text and "| disparse | " not in text


def test_the_paper_summary_states_the_faithful_disparse_where_it_compares_the_vote_with_the_union() -> None:
    rows = [
        MaskRow(seed, ("seg", "depth"), method, 0.7, 0.7, 0.3, 0.3, Evaluated({}, 0.0, {}, dm + seed / 10))
        for seed in range(3)
        for method, dm in (("cut", -3.0), ("snip-union", -9.0), ("disparse-pt", -1.0))
    ]
    cfg = PaperConfig(Path("m.pt"), seeds=(0, 1, 2))
    res = PaperResult(
        cfg, 64, {}, {}, rows, MaskLatency(("seg",), 0.9, 1.0, 1.0), Guard("seg", 0.9, 0.1, 0.0), 1.0,
        [], [], [], 0, {"total": 60.0}, 2,
    )  # fmt: skip
    text = summary(res)
    assert "CUT's vote against SNIP + union 1 / 0 / 0" in text
    assert (
        "against DiSparse's own pre-trained recipe (disparse-pt) 0 / 0 / 1 (mean -2.00 pp, median -2.00 pp)"
        in text
    )
    assert "DiSparse" not in text.split("against DiSparse's own")[0]  # snip-union is never called DiSparse
