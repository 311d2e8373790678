"""Server-side errors. Each maps to one `edgecut.v1.Error.Code` in `code`.

EdgecutError
└── ServerError
    ├── UnknownTaskError      (UNKNOWN_TASK)
    ├── EmptyTasksError       (EMPTY_TASKS)
    ├── ImpossibleBudgetError (IMPOSSIBLE_BUDGET)
    ├── ModelContractError    (BUILD_FAILED: a model that does not follow the contract)
    ├── ArtifactNotFoundError (NOT_FOUND)
    ├── BuildError            (BUILD_FAILED)
    ├── DatasetError          (INTERNAL: a labelled-data folder that cannot be read as laid out)
    ├── InvalidFieldError     (INVALID_FIELD: a number or string out of range; names the field)
    ├── RateLimitedError      (RATE_LIMITED: one device asked too often)
    ├── QueueFullError        (QUEUE_FULL: the build queue is at its cap)
    ├── PermissionDeniedError (PERMISSION_DENIED: the caller's identity may not do this)
    └── TooLargeError         (TOO_LARGE: a payload above the broker limit)
"""

from __future__ import annotations

from edgecut.errors import EdgecutError


class ServerError(EdgecutError):
    code = "INTERNAL"

    def __init__(self, *args: object, public: str = "") -> None:
        """`public`: what devices and API callers are told when the message names server-side things
        (a folder of the operator's); the full message is for the local command line."""
        super().__init__(*args)
        self.public = public


class UnknownTaskError(ServerError):
    code = "UNKNOWN_TASK"


class EmptyTasksError(ServerError):
    code = "EMPTY_TASKS"


class ImpossibleBudgetError(ServerError):
    """No model of the asked tasks fits the budget: the message names the smallest budget that does."""

    code = "IMPOSSIBLE_BUDGET"


class ModelContractError(ServerError):
    code = "BUILD_FAILED"


class ArtifactNotFoundError(ServerError):
    code = "NOT_FOUND"


class BuildError(ServerError):
    """A build failed for a reason of the model or data (e.g. torch-pruning cannot follow an operator)."""

    code = "BUILD_FAILED"


class DatasetError(ServerError):
    code = "INTERNAL"


class InvalidFieldError(ServerError):
    code = "INVALID_FIELD"


class RateLimitedError(ServerError):
    code = "RATE_LIMITED"


class QueueFullError(ServerError):
    code = "QUEUE_FULL"


class PermissionDeniedError(ServerError):
    code = "PERMISSION_DENIED"


class TooLargeError(ServerError):
    code = "TOO_LARGE"
