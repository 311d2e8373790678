"""The metadata of a tailored model, as the engine writes it, for tests that export a TailorReport."""

from __future__ import annotations

from edgecut.model_meta import ModelMeta
from edgecut.server.cut.export import input_spec, output_specs
from edgecut.server.cut.tailor import TailorReport


def report_meta(rep: TailorReport, base_model: str = "t") -> ModelMeta:
    return ModelMeta(
        base_model=base_model,
        tasks=rep.tasks,
        input=input_spec(rep.model),
        outputs=output_specs(rep.model),
        params=rep.pruned.params,
        macs=rep.pruned.macs,
        full_params=rep.full.params,
        full_macs=rep.full.macs,
    )
