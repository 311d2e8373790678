"""`edgecut.cut`: the CUT engine's curated API (docs/models.md, *Tailor from Python*)."""

from __future__ import annotations

import pytest

from tests.support.curated_api import check_api


def test_the_exports_are_exactly_all_documented_typed_and_light() -> None:
    check_api("edgecut.cut")


def test_the_api_is_the_engine_itself_not_copies() -> None:
    import edgecut.cut as cut
    from edgecut.server.cut import tailor as tailor_module
    from edgecut.server.spec import Budget

    assert cut.tailor is tailor_module.tailor and cut.Budget is Budget
    assert {"taylor", "l1"} <= set(cut.CRITERIA) and "vote" in cut.FUSIONS
    assert cut.DEFAULT_METHOD in cut.METHODS


def test_an_unknown_name_is_an_attribute_error_naming_it() -> None:
    import edgecut.cut as cut

    with pytest.raises(AttributeError, match=r"'edgecut\.cut' has no attribute 'prune_everything'"):
        cut.prune_everything  # noqa: B018
