"""The CUT engine's API: one call tailors a multi-task model to some tasks and a budget.

    from edgecut.cut import Budget, TailorOptions, tailor

    report = tailor(model, ["seg", "depth"], Budget.parse("macs=0.5"), calibration_images)
    report.model  # the pruned (and recovered) model, for exactly those tasks

`tailor` decomposes the model to the tasks' heads and the trunk they read, scores every channel per
task (`CRITERIA`), fuses the scores (`FUSIONS`), removes the lowest channels until the `Budget` is met,
re-estimates BatchNorm and recovers by distillation (`RecoveryOptions`). `METHODS` names the presets
`edgecut prune --method` offers. docs/models.md shows a whole run.

The implementation lives in `edgecut.server.cut` (one module per step); this package only names what a
user needs. A name is imported on first use (edgecut/lazy.py), so `import edgecut.cut` loads no torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from edgecut.lazy import exports

if TYPE_CHECKING:
    from edgecut.server.cut.decompose import decompose
    from edgecut.server.cut.fusion import FUSIONS, fusion
    from edgecut.server.cut.importance import CRITERIA, ScoreInputs, criterion
    from edgecut.server.cut.methods import DEFAULT_METHOD, METHODS, Method
    from edgecut.server.cut.prune import Size, measure
    from edgecut.server.cut.recover import RecoveryOptions, RecoveryReport
    from edgecut.server.cut.tailor import TailorOptions, TailorReport, tailor
    from edgecut.server.errors import BuildError, ImpossibleBudgetError
    from edgecut.server.spec import Budget

_CUT = "edgecut.server.cut"
_WHERE = {
    "tailor": f"{_CUT}.tailor",
    "TailorOptions": f"{_CUT}.tailor",
    "TailorReport": f"{_CUT}.tailor",
    "Budget": "edgecut.server.spec",
    "RecoveryOptions": f"{_CUT}.recover",
    "RecoveryReport": f"{_CUT}.recover",
    "decompose": f"{_CUT}.decompose",
    "measure": f"{_CUT}.prune",
    "Size": f"{_CUT}.prune",
    "METHODS": f"{_CUT}.methods",
    "Method": f"{_CUT}.methods",
    "DEFAULT_METHOD": f"{_CUT}.methods",
    "CRITERIA": f"{_CUT}.importance",
    "criterion": f"{_CUT}.importance",
    "ScoreInputs": f"{_CUT}.importance",
    "FUSIONS": f"{_CUT}.fusion",
    "fusion": f"{_CUT}.fusion",
    "ImpossibleBudgetError": "edgecut.server.errors",
    "BuildError": "edgecut.server.errors",
}
__all__ = [
    "CRITERIA",
    "DEFAULT_METHOD",
    "FUSIONS",
    "METHODS",
    "Budget",
    "BuildError",
    "ImpossibleBudgetError",
    "Method",
    "RecoveryOptions",
    "RecoveryReport",
    "ScoreInputs",
    "Size",
    "TailorOptions",
    "TailorReport",
    "criterion",
    "decompose",
    "fusion",
    "measure",
    "tailor",
]
__getattr__, __dir__ = exports(__name__, _WHERE)
del TYPE_CHECKING, exports  # not part of the API
