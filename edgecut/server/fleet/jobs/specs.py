"""A `BuildSpec` as the JSON document a job row keeps (and back)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from edgecut.server.spec import Budget, BuildSpec


def spec_to_dict(spec: BuildSpec) -> dict[str, Any]:
    return {
        "tasks": list(spec.tasks),
        "budget": asdict(spec.budget),
        "priorities": [list(p) for p in spec.priorities],
        "recover": spec.recover,
    }


def spec_from_dict(d: dict[str, Any]) -> BuildSpec:
    return BuildSpec.create(
        d["tasks"],
        Budget(**d["budget"]),
        {t: float(w) for t, w in d.get("priorities", [])},
        bool(d.get("recover", True)),
    )
