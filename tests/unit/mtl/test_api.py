"""`edgecut.server.mtl`: the multi-task model API a user's module imports (docs/models.md)."""

from __future__ import annotations

from tests.support.curated_api import check_api


def test_the_exports_are_exactly_all_documented_typed_and_light() -> None:
    check_api("edgecut.server.mtl")


def test_the_built_in_models_are_registered_without_importing_anything_else() -> None:
    from edgecut.server.mtl import DenseCatMTL, ResNetMTL, build_model, registered_models

    assert {"resnet-mtl", "densecat-mtl"} <= set(registered_models())
    model = build_model("densecat-mtl", input_size=16, width=8, growth=4, layers=1, head_width=8)
    assert type(model) is DenseCatMTL and model.arch == "densecat-mtl" and ResNetMTL.arch == "resnet-mtl"
