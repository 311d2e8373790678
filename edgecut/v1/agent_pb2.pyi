from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Tensor(_message.Message):
    __slots__ = ("shape", "data")
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    shape: _containers.RepeatedScalarFieldContainer[int]
    data: bytes
    def __init__(self, shape: _Optional[_Iterable[int]] = ..., data: _Optional[bytes] = ...) -> None: ...

class InferRequest(_message.Message):
    __slots__ = ("image",)
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    image: Tensor
    def __init__(self, image: _Optional[_Union[Tensor, _Mapping]] = ...) -> None: ...

class InferResponse(_message.Message):
    __slots__ = ("outputs", "artifact_id", "latency_ms")
    class OutputsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Tensor
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Tensor, _Mapping]] = ...) -> None: ...
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    ARTIFACT_ID_FIELD_NUMBER: _ClassVar[int]
    LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    outputs: _containers.MessageMap[str, Tensor]
    artifact_id: str
    latency_ms: float
    def __init__(self, outputs: _Optional[_Mapping[str, Tensor]] = ..., artifact_id: _Optional[str] = ..., latency_ms: _Optional[float] = ...) -> None: ...

class StatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class AgentStatus(_message.Message):
    __slots__ = ("device_id", "tasks", "artifact_id", "model_tasks", "previous_artifact_id", "swaps", "failed_swaps", "inference_count", "failed_count", "broker_connected", "last_error", "model_meta_json", "provenance_json", "pinned_artifact_id", "state", "state_since_unix_ms", "state_reason", "illegal_transitions", "precision", "serving_file_id", "timings_json", "providers", "provider_note", "adapt", "adapt_json")
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    TASKS_FIELD_NUMBER: _ClassVar[int]
    ARTIFACT_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_TASKS_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_ARTIFACT_ID_FIELD_NUMBER: _ClassVar[int]
    SWAPS_FIELD_NUMBER: _ClassVar[int]
    FAILED_SWAPS_FIELD_NUMBER: _ClassVar[int]
    INFERENCE_COUNT_FIELD_NUMBER: _ClassVar[int]
    FAILED_COUNT_FIELD_NUMBER: _ClassVar[int]
    BROKER_CONNECTED_FIELD_NUMBER: _ClassVar[int]
    LAST_ERROR_FIELD_NUMBER: _ClassVar[int]
    MODEL_META_JSON_FIELD_NUMBER: _ClassVar[int]
    PROVENANCE_JSON_FIELD_NUMBER: _ClassVar[int]
    PINNED_ARTIFACT_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    STATE_SINCE_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    STATE_REASON_FIELD_NUMBER: _ClassVar[int]
    ILLEGAL_TRANSITIONS_FIELD_NUMBER: _ClassVar[int]
    PRECISION_FIELD_NUMBER: _ClassVar[int]
    SERVING_FILE_ID_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_JSON_FIELD_NUMBER: _ClassVar[int]
    PROVIDERS_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_NOTE_FIELD_NUMBER: _ClassVar[int]
    ADAPT_FIELD_NUMBER: _ClassVar[int]
    ADAPT_JSON_FIELD_NUMBER: _ClassVar[int]
    device_id: str
    tasks: _containers.RepeatedScalarFieldContainer[str]
    artifact_id: str
    model_tasks: _containers.RepeatedScalarFieldContainer[str]
    previous_artifact_id: str
    swaps: int
    failed_swaps: int
    inference_count: int
    failed_count: int
    broker_connected: bool
    last_error: str
    model_meta_json: str
    provenance_json: str
    pinned_artifact_id: str
    state: str
    state_since_unix_ms: int
    state_reason: str
    illegal_transitions: int
    precision: str
    serving_file_id: str
    timings_json: str
    providers: _containers.RepeatedScalarFieldContainer[str]
    provider_note: str
    adapt: bool
    adapt_json: str
    def __init__(self, device_id: _Optional[str] = ..., tasks: _Optional[_Iterable[str]] = ..., artifact_id: _Optional[str] = ..., model_tasks: _Optional[_Iterable[str]] = ..., previous_artifact_id: _Optional[str] = ..., swaps: _Optional[int] = ..., failed_swaps: _Optional[int] = ..., inference_count: _Optional[int] = ..., failed_count: _Optional[int] = ..., broker_connected: _Optional[bool] = ..., last_error: _Optional[str] = ..., model_meta_json: _Optional[str] = ..., provenance_json: _Optional[str] = ..., pinned_artifact_id: _Optional[str] = ..., state: _Optional[str] = ..., state_since_unix_ms: _Optional[int] = ..., state_reason: _Optional[str] = ..., illegal_transitions: _Optional[int] = ..., precision: _Optional[str] = ..., serving_file_id: _Optional[str] = ..., timings_json: _Optional[str] = ..., providers: _Optional[_Iterable[str]] = ..., provider_note: _Optional[str] = ..., adapt: _Optional[bool] = ..., adapt_json: _Optional[str] = ...) -> None: ...

class SetTasksRequest(_message.Message):
    __slots__ = ("tasks",)
    TASKS_FIELD_NUMBER: _ClassVar[int]
    tasks: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, tasks: _Optional[_Iterable[str]] = ...) -> None: ...

class RollbackRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class UnpinRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...
