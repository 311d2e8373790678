"""docs/benchmarks.md's *Reference model* section and Summary bullet describe the packaged reference, the
model every bench and the demo use (they once described a model trained in someone's data dir)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from edgecut.server.paths import PACKAGED_REFERENCE
from edgecut_bench import reference_doc
from tests.unit.docs.figures import bullets, sections

DOC = Path(__file__).resolve().parents[3] / "docs" / "benchmarks.md"
RERUN = "rerun `edgecut bench model --data-dir $(mktemp -d)` (a data dir without its own trained model)"


def _packaged() -> dict:
    return json.loads(PACKAGED_REFERENCE.with_suffix(".metrics.json").read_text())


def test_the_reference_model_table_holds_the_packaged_models_metrics() -> None:
    doc = _packaged()
    section = sections(DOC.read_text())[reference_doc.SECTION]
    table = {
        (task, metric): (model, base)
        for task, metric, model, base in re.findall(
            r"^\| (\w+) \| ([\w.]+) \| ([\d.]+) \| ([\d.]*) \|", section, re.M
        )
    }
    expected = {
        (task, metric): (f"{value:.4f}", f"{doc['trivial_baseline'][task][metric]:.4f}")
        for task, values in doc["metrics"].items()
        for metric, value in values.items()
    }
    assert table == expected, f"*Reference model* is not the packaged model's: {RERUN}"
    assert f"**{doc['seconds'] / 60:.1f} min**" in section, RERUN
    assert reference_doc.which(PACKAGED_REFERENCE)[4:] in section, RERUN


def test_the_summary_bullet_is_the_packaged_models() -> None:
    bullet = bullets(sections(DOC.read_text())["Summary"])[reference_doc.SUMMARY_LEAD]
    assert " ".join(bullet.split()) == reference_doc.bullet(_packaged(), PACKAGED_REFERENCE), RERUN


def test_a_task_that_does_not_beat_its_trivial_baseline_is_named() -> None:
    doc = {
        "seconds": 90.0,
        "metrics": {"seg": {"miou": 0.5}, "depth": {"abs_err": 3.0}},
        "trivial_baseline": {"seg": {"miou": 0.1}, "depth": {"abs_err": 2.7}},
    }
    text = reference_doc.bullet(doc, Path("elsewhere.pt"))
    assert "not above its trivial baseline on held-out scenes: depth" in text
    assert "depth abs. error 3 m (mean depth 2.7 m)" in text and "Training: 1.5 min." in text
    assert "trained in this data dir; the packaged reference is another model" in text


def test_a_model_trained_until_validation_stopped_improving_says_when_it_stopped() -> None:
    doc = _packaged()
    doc["config"].update(epochs=80, patience=4, lr_drop=0.3)
    doc.update(curve=[{}] * 23, best_epoch=19, stopped="stopped at epoch 23, kept epoch 19")
    text = reference_doc.section(doc, PACKAGED_REFERENCE)
    assert "until 4 such epochs or 80 in all (stopped at epoch 23, kept epoch 19)" in text
    assert "one-cycle" not in text
