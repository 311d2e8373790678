"""`edgecut bench model`'s section: how the reference was trained (curve, kept epoch, why it stopped) and
other checkpoints scored against it on the same validation scenes."""

from __future__ import annotations

from dataclasses import asdict, replace
from pathlib import Path

import pytest

from edgecut.server.mtl.train import TrainConfig, train
from edgecut_bench.reference_model import Compared, compare, extras, load_record

TINY = replace(TrainConfig.quick(), n_train=64, n_val=32, batch_size=16, epochs=3, patience=2)


def test_the_section_shows_the_curve_and_scores_a_model_for_some_tasks(tmp_path: Path) -> None:
    ref = tmp_path / "reference.pt"
    train(TINY, out=ref, cache_dir=tmp_path, show_progress=False)
    narrow = tmp_path / "scratch-seg.pt"
    train(replace(TINY, tasks=("seg",)), out=narrow, cache_dir=tmp_path, show_progress=False)
    doc = load_record(ref)

    metrics, rows = compare(ref, [ref, narrow], doc["config"], tmp_path)
    for task, values in doc["metrics"].items():  # the same validation scenes as its own record
        assert metrics[task] == pytest.approx(values), task
    itself, seg_only = rows
    assert itself.delta_m == pytest.approx(0.0) and seg_only.tasks == ("seg",)

    body = extras(doc, rows, metrics)
    assert f"| {doc['best_epoch']} (kept) |" in body and "Training curve" in body
    assert "| scratch-seg.pt | seg; " in body and f"{seg_only.delta_m:+.2f} %" in body
    verdict = "none beats the reference" if seg_only.delta_m <= 0 else "beaten by scratch-seg.pt"
    assert verdict in body


def test_a_model_that_beats_the_reference_is_named() -> None:
    doc = {
        "config": asdict(TrainConfig()),
        "seconds": 60.0,
        "metrics": {"seg": {"miou": 0.8}},
        "trivial_baseline": {"seg": {"miou": 0.1}},
    }
    better = Compared("s.pt", "seg", ("seg",), {"seg": {"miou": 0.84}}, 5.0)
    body = extras(doc, [better], {"seg": {"miou": 0.8}})
    assert "**beaten by s.pt (+5.00 %)**" in body


def test_the_section_says_whether_the_reference_saw_new_scenes_every_epoch() -> None:
    from edgecut.server.paths import PACKAGED_REFERENCE
    from edgecut_bench.reference_doc import section

    curve = [
        {"epoch": e, "train_loss": 1.0, "val_loss": 1.0, "lr": 1e-3, "seconds": 60.0 * e} for e in (1, 2, 3)
    ]
    doc = {
        "config": asdict(TrainConfig()),
        "seconds": 180.0,
        "curve": curve,
        "best_epoch": 2,
        "metrics": {"seg": {"miou": 0.8}},
        "trivial_baseline": {"seg": {"miou": 0.1}},
    }
    assert "on 6000 new synthetic scenes every epoch (18000 in all), 64x64," in section(
        doc, PACKAGED_REFERENCE
    )
    doc["config"] = {k: v for k, v in doc["config"].items() if k != "fresh_scenes"}  # a record from before
    assert "on the same 6000 synthetic scenes every epoch, 64x64," in section(doc, PACKAGED_REFERENCE)


def test_another_reference_gets_its_own_section_and_bullet_beside_the_default_ones(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`bench model --checkpoint` (e.g. the 128 px reference) renders under a heading named by its input
    size and leaves the benchmarks' reference's section and Summary bullet as they were."""
    from edgecut.cli import main

    ref = tmp_path / "big" / "reference.pt"
    train(TINY, out=ref, cache_dir=tmp_path, show_progress=False)
    size = TINY.image_size
    out = tmp_path / "benchmarks.md"
    default_text = "- **Reference model** (`edgecut bench model`, the default one): kept.\n"
    out.write_text(f"# B\n\n## Summary\n\n{default_text}\n## Reference model\n\nthe default's body\n")
    args = ["bench", "model", "--checkpoint", str(ref), "--data-dir", str(tmp_path), "--out", str(out)]
    assert main(args) == 0
    text = out.read_text()
    assert default_text in text and "## Reference model\n\nthe default's body\n" in text
    assert f"## Reference model at {size}x{size}\n" in text
    flat = " ".join(text.split())  # the bullet is wrapped
    assert f"- **Reference model at {size}x{size}** (`edgecut bench model --checkpoint {ref}`, the " in flat
    assert f"The reference at `{ref}`: `resnet-mtl`" in flat
    assert f"Rerun: `edgecut bench model --checkpoint {ref}`" in flat
    assert main(args) == 0 and out.read_text() == text  # rendering again replaces, never duplicates

    # a run still training (only its .partial) or --retrain of another model: one sentence, nothing written
    capsys.readouterr()
    unfinished = tmp_path / "unfinished.pt"
    assert main(["bench", "model", "--checkpoint", str(unfinished), "--out", str(out)]) == 2
    assert "no finished model at" in capsys.readouterr().err
    assert main([*args, "--retrain"]) == 2
    assert "--retrain trains the data dir's reference" in capsys.readouterr().err
    assert out.read_text() == text
