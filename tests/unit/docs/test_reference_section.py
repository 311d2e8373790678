"""docs/benchmarks.md's *Reference model* section and Summary bullet describe the packaged reference, the
model every bench and the demo use (they once described a model trained in someone's data dir)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from edgecut.server.paths import PACKAGED_REFERENCE, PACKAGED_REFERENCE_128
from edgecut_bench import reference_doc
from tests.unit.docs.figures import bullets, sections

DOC = Path(__file__).resolve().parents[3] / "docs" / "benchmarks.md"
RERUN = "rerun `edgecut bench model --data-dir $(mktemp -d)` (a data dir without its own trained model)"
ROOT = Path(__file__).resolve().parents[3]
AS_RUN_128 = PACKAGED_REFERENCE_128.relative_to(ROOT)  # the path the section's rerun command names
RERUN_128 = f"rerun `edgecut bench model --checkpoint {AS_RUN_128}` from the repository's root"


def _packaged(checkpoint: Path = PACKAGED_REFERENCE) -> dict:
    return json.loads(checkpoint.with_suffix(".metrics.json").read_text())


def _table(section: str) -> dict[tuple[str, str], tuple[str, str]]:
    return {
        (task, metric): (model, base)
        for task, metric, model, base in re.findall(
            r"^\| (\w+) \| ([\w.]+) \| ([\d.]+) \| ([\d.]*) \|", section, re.M
        )
    }


def _expected(doc: dict) -> dict[tuple[str, str], tuple[str, str]]:
    return {
        (task, metric): (f"{value:.4f}", f"{doc['trivial_baseline'][task][metric]:.4f}")
        for task, values in doc["metrics"].items()
        for metric, value in values.items()
    }


def test_the_reference_model_table_holds_the_packaged_models_metrics() -> None:
    doc = _packaged()
    section = sections(DOC.read_text())[reference_doc.SECTION]
    assert _table(section) == _expected(doc), f"*Reference model* is not the packaged model's: {RERUN}"
    assert f"**{doc['seconds'] / 60:.1f} min**" in section, RERUN
    assert reference_doc.which(PACKAGED_REFERENCE)[4:] in section, RERUN


def test_the_summary_bullet_is_the_packaged_models() -> None:
    bullet = bullets(sections(DOC.read_text())["Summary"])[reference_doc.SUMMARY_LEAD]
    assert " ".join(bullet.split()) == reference_doc.bullet(_packaged(), PACKAGED_REFERENCE), RERUN


def test_the_128_px_section_and_bullet_are_the_packaged_128_px_models() -> None:
    """The second reference (issue 29: one at >= 128 x 128 for the benchmarks) has its own section and
    bullet, named by its input size, beside the default reference's."""
    doc = _packaged(PACKAGED_REFERENCE_128)
    assert doc["config"]["image_size"] == 128
    heading, lead = reference_doc.titled(doc, default=False)
    text = DOC.read_text()
    section = sections(text)[heading]
    assert _table(section) == _expected(doc), RERUN_128
    assert section.strip().startswith(reference_doc.section(doc, AS_RUN_128, default=False).strip()), (
        RERUN_128
    )
    bullet = bullets(sections(text)["Summary"])[lead]
    assert " ".join(bullet.split()) == reference_doc.bullet(doc, AS_RUN_128, default=False), RERUN_128


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
