"""A BuildSpec survives the registry: stored as plain JSON, read back equal (spec.spec_to_dict / spec_from_dict)."""

from __future__ import annotations

import json

from edgecut.server.spec import Budget, BuildSpec, spec_from_dict, spec_to_dict


def test_a_spec_round_trips_through_json_with_its_build_key() -> None:
    spec = BuildSpec.create(["seg", "depth"], Budget(macs_fraction=0.3), {"seg": 2.0}, recover=False)
    back = spec_from_dict(json.loads(json.dumps(spec_to_dict(spec))))
    assert back == spec
    assert back.build_key("base") == spec.build_key("base")


def test_a_job_recorded_before_recovery_was_optional_recovers() -> None:
    old = {"tasks": ["depth"], "budget": {"macs_fraction": 0.5, "params_fraction": None}}
    spec = spec_from_dict(old)
    assert spec.recover is True and spec.priorities == ()
