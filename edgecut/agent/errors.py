"""Agent-side errors. onnxruntime, grpc and paho errors are translated into these at the edge.

EdgecutError                (edgecut.errors)
├── ConfigError             bad config file / variable / argument (exit code 2)
└── AgentError
    ├── FetchError          the artifact could not be downloaded (server gone, not found, retries spent)
    │   ├── DiskSpaceError  not enough free disk for the artifact (or the disk filled up meanwhile)
    │   ├── ArtifactGone    the server no longer has it (NOT_FOUND): ask for the model again
    │   └── ChecksumError   the downloaded bytes do not hash to the announced sha256
    ├── ModelRejected       the model failed to load, warm up or validate; the old one keeps serving
    │   └── Untrusted       its signed manifest is missing, does not verify or does not match the file
    ├── NoModelError        inference asked before any model is loaded
    ├── BadInput            an inference tensor that does not fit the model
    └── AgentUnavailable    the local API of a running agent cannot be reached
"""

from __future__ import annotations

from edgecut.errors import ConfigError, EdgecutError

__all__ = [
    "AgentError",
    "AgentUnavailable",
    "ArtifactGone",
    "BadInput",
    "ChecksumError",
    "ConfigError",
    "DiskSpaceError",
    "FetchError",
    "ModelRejected",
    "NoModelError",
    "Untrusted",
]


class AgentError(EdgecutError):
    exit_code = 1


class FetchError(AgentError):
    pass


class DiskSpaceError(FetchError):
    pass


class ChecksumError(FetchError):
    pass


class ArtifactGone(FetchError):
    pass


class ModelRejected(AgentError):
    pass


class Untrusted(ModelRejected):
    pass


class NoModelError(AgentError):
    pass


class AgentUnavailable(AgentError):
    pass


class BadInput(AgentError):
    """An inference request whose tensor does not match the model's input spec."""
