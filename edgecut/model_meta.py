"""Metadata carried by every tailored model artifact; written by the server, read by the agent.

The artifact is one ONNX file; this metadata is embedded in its `metadata_props` under the key
`edgecut` (so the sha256 of the file covers it) and also written beside it as a JSON sidecar.
No torch here: the agent imports this module.
"""

from __future__ import annotations

import json
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

FORMAT = "edgecut.model/1"
SCRATCH_METHOD = "scratch"  # `method` of the engine's from-scratch candidate (another architecture)
ONNX_METADATA_KEY = "edgecut"

# "stats": the statistics companion of an fp32 model (issue 31), not a model that serves requests
Precision = Literal["fp32", "int8", "fp16", "stats"]
TaskKind = Literal["segmentation", "classification", "depth", "regression", "normals", "edges"]


class InputSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = "image"
    shape: list[int | None] = Field(description="NCHW; None marks the dynamic batch axis")
    dtype: str = "float32"
    value_range: tuple[float, float] = (0.0, 1.0)
    mean: list[float] = Field(description="per-channel mean subtracted inside the model")
    std: list[float]


class OutputSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    kind: TaskKind
    shape: list[int | None]
    classes: list[str] = Field(default_factory=list)


class ModelMeta(BaseModel):
    model_config = ConfigDict(extra="forbid")
    format: str = FORMAT
    base_model: str
    tasks: list[str]
    input: InputSpec
    outputs: dict[str, OutputSpec]
    params: int
    macs: int
    full_params: int
    full_macs: int
    metrics: dict[str, dict[str, float]] = Field(default_factory=dict)
    reference_metrics: dict[str, dict[str, float]] = Field(default_factory=dict)
    build_key: str = ""
    method: str = ""
    pipeline_version: str = ""
    onnx_max_abs_diff: float | None = None
    quantized: bool = False
    # the number format the weights and activations run in: fp32, int8 (static QDQ, calibrated) or fp16;
    # one tailored model may be offered in several precisions (variants), each with its own metrics
    precision: Precision = "fp32"
    # fp32 nodes kept in an int8 model (mixed precision) and why a model that was asked for int8 is not
    excluded_nodes: list[str] = Field(default_factory=list)
    precision_note: str = ""
    created_unix: float = 0.0
    # progressive delivery: 0 = the quick model of its build key; n = its n-th refinement
    refinement: int = 0
    parent_artifact_id: str = ""  # the artifact a refinement improves on
    recovery_steps: int = 0  # distillation steps behind these weights (all refinements together)
    # no task left behind: each task's change against the full model (%), the fusion weights the
    # channel ranking used (raised for a task that lagged) and, when a task still lags, why
    task_changes: dict[str, float] = Field(default_factory=dict)
    fusion_weights: dict[str, float] = Field(default_factory=dict)
    trade_off: str = ""
    # a statistics companion's normalisation layers and their channels, in its output order ("input"
    # first, edgecut/norm_stats.py): what a device's StatsSummary of this model must hold; {} otherwise
    norm_layers: dict[str, int] = Field(default_factory=dict)

    @property
    def version(self) -> str:
        """Which model of its build this is, for people: quick model, refinement n (from scratch)."""
        if self.refinement == 0:
            return "quick model"
        return f"refinement {self.refinement}" + (" (from scratch)" if self.method == SCRATCH_METHOD else "")

    def to_json(self) -> str:
        return self.model_dump_json(indent=2)

    @classmethod
    def from_json(cls, text: str | bytes) -> ModelMeta:
        return cls.model_validate(json.loads(text))
