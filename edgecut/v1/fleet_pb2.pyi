from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AgentState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    AGENT_STATE_UNSPECIFIED: _ClassVar[AgentState]
    AGENT_STATE_STARTING: _ClassVar[AgentState]
    AGENT_STATE_WAITING_FOR_BROKER: _ClassVar[AgentState]
    AGENT_STATE_NEEDS: _ClassVar[AgentState]
    AGENT_STATE_OFFERED: _ClassVar[AgentState]
    AGENT_STATE_DOWNLOADING: _ClassVar[AgentState]
    AGENT_STATE_VERIFYING: _ClassVar[AgentState]
    AGENT_STATE_LOADING: _ClassVar[AgentState]
    AGENT_STATE_SERVING: _ClassVar[AgentState]
    AGENT_STATE_OFFLINE_SERVING: _ClassVar[AgentState]
    AGENT_STATE_ROLLED_BACK: _ClassVar[AgentState]
    AGENT_STATE_PINNED: _ClassVar[AgentState]
AGENT_STATE_UNSPECIFIED: AgentState
AGENT_STATE_STARTING: AgentState
AGENT_STATE_WAITING_FOR_BROKER: AgentState
AGENT_STATE_NEEDS: AgentState
AGENT_STATE_OFFERED: AgentState
AGENT_STATE_DOWNLOADING: AgentState
AGENT_STATE_VERIFYING: AgentState
AGENT_STATE_LOADING: AgentState
AGENT_STATE_SERVING: AgentState
AGENT_STATE_OFFLINE_SERVING: AgentState
AGENT_STATE_ROLLED_BACK: AgentState
AGENT_STATE_PINNED: AgentState

class Resources(_message.Message):
    __slots__ = ("cpu_count", "cpu_freq_mhz", "arch", "ram_total_bytes", "ram_available_bytes", "ort_providers", "disk_free_bytes", "device_class", "os")
    CPU_COUNT_FIELD_NUMBER: _ClassVar[int]
    CPU_FREQ_MHZ_FIELD_NUMBER: _ClassVar[int]
    ARCH_FIELD_NUMBER: _ClassVar[int]
    RAM_TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    RAM_AVAILABLE_BYTES_FIELD_NUMBER: _ClassVar[int]
    ORT_PROVIDERS_FIELD_NUMBER: _ClassVar[int]
    DISK_FREE_BYTES_FIELD_NUMBER: _ClassVar[int]
    DEVICE_CLASS_FIELD_NUMBER: _ClassVar[int]
    OS_FIELD_NUMBER: _ClassVar[int]
    cpu_count: int
    cpu_freq_mhz: float
    arch: str
    ram_total_bytes: int
    ram_available_bytes: int
    ort_providers: _containers.RepeatedScalarFieldContainer[str]
    disk_free_bytes: int
    device_class: str
    os: str
    def __init__(self, cpu_count: _Optional[int] = ..., cpu_freq_mhz: _Optional[float] = ..., arch: _Optional[str] = ..., ram_total_bytes: _Optional[int] = ..., ram_available_bytes: _Optional[int] = ..., ort_providers: _Optional[_Iterable[str]] = ..., disk_free_bytes: _Optional[int] = ..., device_class: _Optional[str] = ..., os: _Optional[str] = ...) -> None: ...

class TaskNeeds(_message.Message):
    __slots__ = ("device_id", "tasks", "priorities", "max_latency_ms", "max_model_bytes", "resources", "seq", "sent_unix_ms")
    class PrioritiesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    TASKS_FIELD_NUMBER: _ClassVar[int]
    PRIORITIES_FIELD_NUMBER: _ClassVar[int]
    MAX_LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    MAX_MODEL_BYTES_FIELD_NUMBER: _ClassVar[int]
    RESOURCES_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    SENT_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    device_id: str
    tasks: _containers.RepeatedScalarFieldContainer[str]
    priorities: _containers.ScalarMap[str, float]
    max_latency_ms: float
    max_model_bytes: int
    resources: Resources
    seq: int
    sent_unix_ms: int
    def __init__(self, device_id: _Optional[str] = ..., tasks: _Optional[_Iterable[str]] = ..., priorities: _Optional[_Mapping[str, float]] = ..., max_latency_ms: _Optional[float] = ..., max_model_bytes: _Optional[int] = ..., resources: _Optional[_Union[Resources, _Mapping]] = ..., seq: _Optional[int] = ..., sent_unix_ms: _Optional[int] = ...) -> None: ...

class DeviceState(_message.Message):
    __slots__ = ("device_id", "status", "artifact_id", "tasks", "agent_version", "since_unix_ms", "pinned_artifact_id")
    class Status(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        STATUS_UNSPECIFIED: _ClassVar[DeviceState.Status]
        ONLINE: _ClassVar[DeviceState.Status]
        OFFLINE: _ClassVar[DeviceState.Status]
    STATUS_UNSPECIFIED: DeviceState.Status
    ONLINE: DeviceState.Status
    OFFLINE: DeviceState.Status
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    ARTIFACT_ID_FIELD_NUMBER: _ClassVar[int]
    TASKS_FIELD_NUMBER: _ClassVar[int]
    AGENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    SINCE_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    PINNED_ARTIFACT_ID_FIELD_NUMBER: _ClassVar[int]
    device_id: str
    status: DeviceState.Status
    artifact_id: str
    tasks: _containers.RepeatedScalarFieldContainer[str]
    agent_version: str
    since_unix_ms: int
    pinned_artifact_id: str
    def __init__(self, device_id: _Optional[str] = ..., status: _Optional[_Union[DeviceState.Status, str]] = ..., artifact_id: _Optional[str] = ..., tasks: _Optional[_Iterable[str]] = ..., agent_version: _Optional[str] = ..., since_unix_ms: _Optional[int] = ..., pinned_artifact_id: _Optional[str] = ...) -> None: ...

class Telemetry(_message.Message):
    __slots__ = ("device_id", "inference_count", "failed_count", "latency_p50_ms", "latency_p95_ms", "rss_bytes", "cpu_percent", "artifact_id", "swaps", "failed_swaps", "sent_unix_ms", "state", "state_since_unix_ms", "state_reason", "precision", "timings")
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    INFERENCE_COUNT_FIELD_NUMBER: _ClassVar[int]
    FAILED_COUNT_FIELD_NUMBER: _ClassVar[int]
    LATENCY_P50_MS_FIELD_NUMBER: _ClassVar[int]
    LATENCY_P95_MS_FIELD_NUMBER: _ClassVar[int]
    RSS_BYTES_FIELD_NUMBER: _ClassVar[int]
    CPU_PERCENT_FIELD_NUMBER: _ClassVar[int]
    ARTIFACT_ID_FIELD_NUMBER: _ClassVar[int]
    SWAPS_FIELD_NUMBER: _ClassVar[int]
    FAILED_SWAPS_FIELD_NUMBER: _ClassVar[int]
    SENT_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    STATE_SINCE_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    STATE_REASON_FIELD_NUMBER: _ClassVar[int]
    PRECISION_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    device_id: str
    inference_count: int
    failed_count: int
    latency_p50_ms: float
    latency_p95_ms: float
    rss_bytes: int
    cpu_percent: float
    artifact_id: str
    swaps: int
    failed_swaps: int
    sent_unix_ms: int
    state: AgentState
    state_since_unix_ms: int
    state_reason: str
    precision: str
    timings: _containers.RepeatedCompositeFieldContainer[PrecisionTiming]
    def __init__(self, device_id: _Optional[str] = ..., inference_count: _Optional[int] = ..., failed_count: _Optional[int] = ..., latency_p50_ms: _Optional[float] = ..., latency_p95_ms: _Optional[float] = ..., rss_bytes: _Optional[int] = ..., cpu_percent: _Optional[float] = ..., artifact_id: _Optional[str] = ..., swaps: _Optional[int] = ..., failed_swaps: _Optional[int] = ..., sent_unix_ms: _Optional[int] = ..., state: _Optional[_Union[AgentState, str]] = ..., state_since_unix_ms: _Optional[int] = ..., state_reason: _Optional[str] = ..., precision: _Optional[str] = ..., timings: _Optional[_Iterable[_Union[PrecisionTiming, _Mapping]]] = ...) -> None: ...

class ModelReady(_message.Message):
    __slots__ = ("device_id", "artifact_id", "sha256", "size_bytes", "build_key", "tasks", "grpc_address", "needs_seq", "params", "macs", "cache_hit", "manifest", "signature", "parent_artifact_id", "refinement")
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    ARTIFACT_ID_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    BUILD_KEY_FIELD_NUMBER: _ClassVar[int]
    TASKS_FIELD_NUMBER: _ClassVar[int]
    GRPC_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    NEEDS_SEQ_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    MACS_FIELD_NUMBER: _ClassVar[int]
    CACHE_HIT_FIELD_NUMBER: _ClassVar[int]
    MANIFEST_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    PARENT_ARTIFACT_ID_FIELD_NUMBER: _ClassVar[int]
    REFINEMENT_FIELD_NUMBER: _ClassVar[int]
    device_id: str
    artifact_id: str
    sha256: str
    size_bytes: int
    build_key: str
    tasks: _containers.RepeatedScalarFieldContainer[str]
    grpc_address: str
    needs_seq: int
    params: int
    macs: int
    cache_hit: bool
    manifest: bytes
    signature: Signature
    parent_artifact_id: str
    refinement: int
    def __init__(self, device_id: _Optional[str] = ..., artifact_id: _Optional[str] = ..., sha256: _Optional[str] = ..., size_bytes: _Optional[int] = ..., build_key: _Optional[str] = ..., tasks: _Optional[_Iterable[str]] = ..., grpc_address: _Optional[str] = ..., needs_seq: _Optional[int] = ..., params: _Optional[int] = ..., macs: _Optional[int] = ..., cache_hit: _Optional[bool] = ..., manifest: _Optional[bytes] = ..., signature: _Optional[_Union[Signature, _Mapping]] = ..., parent_artifact_id: _Optional[str] = ..., refinement: _Optional[int] = ...) -> None: ...

class Signature(_message.Message):
    __slots__ = ("key_id", "signature")
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    key_id: str
    signature: bytes
    def __init__(self, key_id: _Optional[str] = ..., signature: _Optional[bytes] = ...) -> None: ...

class TaskMetrics(_message.Message):
    __slots__ = ("values",)
    class ValuesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.ScalarMap[str, float]
    def __init__(self, values: _Optional[_Mapping[str, float]] = ...) -> None: ...

class Manifest(_message.Message):
    __slots__ = ("artifact_id", "sha256", "size_bytes", "build_key", "tasks", "base_model", "pipeline_version", "metrics", "params", "macs", "parent_artifact_id", "refinement", "device_id", "needs_seq", "issued_unix_ms", "key_id", "grpc_address", "offer_seq", "variants", "statistics", "adapted_from_sequence")
    class MetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: TaskMetrics
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[TaskMetrics, _Mapping]] = ...) -> None: ...
    ARTIFACT_ID_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    BUILD_KEY_FIELD_NUMBER: _ClassVar[int]
    TASKS_FIELD_NUMBER: _ClassVar[int]
    BASE_MODEL_FIELD_NUMBER: _ClassVar[int]
    PIPELINE_VERSION_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    MACS_FIELD_NUMBER: _ClassVar[int]
    PARENT_ARTIFACT_ID_FIELD_NUMBER: _ClassVar[int]
    REFINEMENT_FIELD_NUMBER: _ClassVar[int]
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    NEEDS_SEQ_FIELD_NUMBER: _ClassVar[int]
    ISSUED_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    GRPC_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    OFFER_SEQ_FIELD_NUMBER: _ClassVar[int]
    VARIANTS_FIELD_NUMBER: _ClassVar[int]
    STATISTICS_FIELD_NUMBER: _ClassVar[int]
    ADAPTED_FROM_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    artifact_id: str
    sha256: str
    size_bytes: int
    build_key: str
    tasks: _containers.RepeatedScalarFieldContainer[str]
    base_model: str
    pipeline_version: str
    metrics: _containers.MessageMap[str, TaskMetrics]
    params: int
    macs: int
    parent_artifact_id: str
    refinement: int
    device_id: str
    needs_seq: int
    issued_unix_ms: int
    key_id: str
    grpc_address: str
    offer_seq: int
    variants: _containers.RepeatedCompositeFieldContainer[ModelVariant]
    statistics: ModelVariant
    adapted_from_sequence: int
    def __init__(self, artifact_id: _Optional[str] = ..., sha256: _Optional[str] = ..., size_bytes: _Optional[int] = ..., build_key: _Optional[str] = ..., tasks: _Optional[_Iterable[str]] = ..., base_model: _Optional[str] = ..., pipeline_version: _Optional[str] = ..., metrics: _Optional[_Mapping[str, TaskMetrics]] = ..., params: _Optional[int] = ..., macs: _Optional[int] = ..., parent_artifact_id: _Optional[str] = ..., refinement: _Optional[int] = ..., device_id: _Optional[str] = ..., needs_seq: _Optional[int] = ..., issued_unix_ms: _Optional[int] = ..., key_id: _Optional[str] = ..., grpc_address: _Optional[str] = ..., offer_seq: _Optional[int] = ..., variants: _Optional[_Iterable[_Union[ModelVariant, _Mapping]]] = ..., statistics: _Optional[_Union[ModelVariant, _Mapping]] = ..., adapted_from_sequence: _Optional[int] = ...) -> None: ...

class ModelVariant(_message.Message):
    __slots__ = ("artifact_id", "sha256", "size_bytes", "precision", "metrics", "macs", "task_changes")
    class MetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: TaskMetrics
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[TaskMetrics, _Mapping]] = ...) -> None: ...
    class TaskChangesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    ARTIFACT_ID_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    PRECISION_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    MACS_FIELD_NUMBER: _ClassVar[int]
    TASK_CHANGES_FIELD_NUMBER: _ClassVar[int]
    artifact_id: str
    sha256: str
    size_bytes: int
    precision: str
    metrics: _containers.MessageMap[str, TaskMetrics]
    macs: int
    task_changes: _containers.ScalarMap[str, float]
    def __init__(self, artifact_id: _Optional[str] = ..., sha256: _Optional[str] = ..., size_bytes: _Optional[int] = ..., precision: _Optional[str] = ..., metrics: _Optional[_Mapping[str, TaskMetrics]] = ..., macs: _Optional[int] = ..., task_changes: _Optional[_Mapping[str, float]] = ...) -> None: ...

class PrecisionTiming(_message.Message):
    __slots__ = ("precision", "artifact_id", "median_ms", "runs", "note")
    PRECISION_FIELD_NUMBER: _ClassVar[int]
    ARTIFACT_ID_FIELD_NUMBER: _ClassVar[int]
    MEDIAN_MS_FIELD_NUMBER: _ClassVar[int]
    RUNS_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    precision: str
    artifact_id: str
    median_ms: float
    runs: int
    note: str
    def __init__(self, precision: _Optional[str] = ..., artifact_id: _Optional[str] = ..., median_ms: _Optional[float] = ..., runs: _Optional[int] = ..., note: _Optional[str] = ...) -> None: ...

class NormStats(_message.Message):
    __slots__ = ("layer", "mean", "var")
    LAYER_FIELD_NUMBER: _ClassVar[int]
    MEAN_FIELD_NUMBER: _ClassVar[int]
    VAR_FIELD_NUMBER: _ClassVar[int]
    layer: str
    mean: bytes
    var: bytes
    def __init__(self, layer: _Optional[str] = ..., mean: _Optional[bytes] = ..., var: _Optional[bytes] = ...) -> None: ...

class StatsSummary(_message.Message):
    __slots__ = ("device_id", "artifact_id", "images", "layers", "sent_unix_ms", "sequence")
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    ARTIFACT_ID_FIELD_NUMBER: _ClassVar[int]
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    LAYERS_FIELD_NUMBER: _ClassVar[int]
    SENT_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    device_id: str
    artifact_id: str
    images: int
    layers: _containers.RepeatedCompositeFieldContainer[NormStats]
    sent_unix_ms: int
    sequence: int
    def __init__(self, device_id: _Optional[str] = ..., artifact_id: _Optional[str] = ..., images: _Optional[int] = ..., layers: _Optional[_Iterable[_Union[NormStats, _Mapping]]] = ..., sent_unix_ms: _Optional[int] = ..., sequence: _Optional[int] = ...) -> None: ...

class CommandAck(_message.Message):
    __slots__ = ("device_id", "command_id", "action", "ok", "reason", "sent_unix_ms", "command")
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    COMMAND_ID_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    OK_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    SENT_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    COMMAND_FIELD_NUMBER: _ClassVar[int]
    device_id: str
    command_id: str
    action: str
    ok: bool
    reason: str
    sent_unix_ms: int
    command: Command
    def __init__(self, device_id: _Optional[str] = ..., command_id: _Optional[str] = ..., action: _Optional[str] = ..., ok: _Optional[bool] = ..., reason: _Optional[str] = ..., sent_unix_ms: _Optional[int] = ..., command: _Optional[_Union[Command, _Mapping]] = ...) -> None: ...

class SwapReport(_message.Message):
    __slots__ = ("device_id", "artifact_id", "ok", "reason", "previous_artifact_id", "load_ms", "sent_unix_ms", "verified_key_id", "precision", "timings")
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    ARTIFACT_ID_FIELD_NUMBER: _ClassVar[int]
    OK_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_ARTIFACT_ID_FIELD_NUMBER: _ClassVar[int]
    LOAD_MS_FIELD_NUMBER: _ClassVar[int]
    SENT_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    VERIFIED_KEY_ID_FIELD_NUMBER: _ClassVar[int]
    PRECISION_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    device_id: str
    artifact_id: str
    ok: bool
    reason: str
    previous_artifact_id: str
    load_ms: float
    sent_unix_ms: int
    verified_key_id: str
    precision: str
    timings: _containers.RepeatedCompositeFieldContainer[PrecisionTiming]
    def __init__(self, device_id: _Optional[str] = ..., artifact_id: _Optional[str] = ..., ok: _Optional[bool] = ..., reason: _Optional[str] = ..., previous_artifact_id: _Optional[str] = ..., load_ms: _Optional[float] = ..., sent_unix_ms: _Optional[int] = ..., verified_key_id: _Optional[str] = ..., precision: _Optional[str] = ..., timings: _Optional[_Iterable[_Union[PrecisionTiming, _Mapping]]] = ...) -> None: ...

class Command(_message.Message):
    __slots__ = ("device_id", "set_tasks", "rollback", "pin", "unpin", "command_id", "issued_unix_ms", "signed", "signature")
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    SET_TASKS_FIELD_NUMBER: _ClassVar[int]
    ROLLBACK_FIELD_NUMBER: _ClassVar[int]
    PIN_FIELD_NUMBER: _ClassVar[int]
    UNPIN_FIELD_NUMBER: _ClassVar[int]
    COMMAND_ID_FIELD_NUMBER: _ClassVar[int]
    ISSUED_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    SIGNED_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    device_id: str
    set_tasks: SetTasks
    rollback: Rollback
    pin: Pin
    unpin: Unpin
    command_id: str
    issued_unix_ms: int
    signed: bytes
    signature: Signature
    def __init__(self, device_id: _Optional[str] = ..., set_tasks: _Optional[_Union[SetTasks, _Mapping]] = ..., rollback: _Optional[_Union[Rollback, _Mapping]] = ..., pin: _Optional[_Union[Pin, _Mapping]] = ..., unpin: _Optional[_Union[Unpin, _Mapping]] = ..., command_id: _Optional[str] = ..., issued_unix_ms: _Optional[int] = ..., signed: _Optional[bytes] = ..., signature: _Optional[_Union[Signature, _Mapping]] = ...) -> None: ...

class SetTasks(_message.Message):
    __slots__ = ("tasks",)
    TASKS_FIELD_NUMBER: _ClassVar[int]
    tasks: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, tasks: _Optional[_Iterable[str]] = ...) -> None: ...

class Rollback(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Pin(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Unpin(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Error(_message.Message):
    __slots__ = ("code", "message", "device_id", "needs_seq", "about")
    class Code(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        CODE_UNSPECIFIED: _ClassVar[Error.Code]
        MALFORMED: _ClassVar[Error.Code]
        UNKNOWN_TASK: _ClassVar[Error.Code]
        EMPTY_TASKS: _ClassVar[Error.Code]
        IMPOSSIBLE_BUDGET: _ClassVar[Error.Code]
        NOT_FOUND: _ClassVar[Error.Code]
        BUILD_FAILED: _ClassVar[Error.Code]
        INTERNAL: _ClassVar[Error.Code]
        INVALID_FIELD: _ClassVar[Error.Code]
        RATE_LIMITED: _ClassVar[Error.Code]
        QUEUE_FULL: _ClassVar[Error.Code]
        PERMISSION_DENIED: _ClassVar[Error.Code]
        TOO_LARGE: _ClassVar[Error.Code]
    CODE_UNSPECIFIED: Error.Code
    MALFORMED: Error.Code
    UNKNOWN_TASK: Error.Code
    EMPTY_TASKS: Error.Code
    IMPOSSIBLE_BUDGET: Error.Code
    NOT_FOUND: Error.Code
    BUILD_FAILED: Error.Code
    INTERNAL: Error.Code
    INVALID_FIELD: Error.Code
    RATE_LIMITED: Error.Code
    QUEUE_FULL: Error.Code
    PERMISSION_DENIED: Error.Code
    TOO_LARGE: Error.Code
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    NEEDS_SEQ_FIELD_NUMBER: _ClassVar[int]
    ABOUT_FIELD_NUMBER: _ClassVar[int]
    code: Error.Code
    message: str
    device_id: str
    needs_seq: int
    about: str
    def __init__(self, code: _Optional[_Union[Error.Code, str]] = ..., message: _Optional[str] = ..., device_id: _Optional[str] = ..., needs_seq: _Optional[int] = ..., about: _Optional[str] = ...) -> None: ...

class Budget(_message.Message):
    __slots__ = ("max_macs", "max_params", "macs_fraction", "params_fraction")
    MAX_MACS_FIELD_NUMBER: _ClassVar[int]
    MAX_PARAMS_FIELD_NUMBER: _ClassVar[int]
    MACS_FRACTION_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FRACTION_FIELD_NUMBER: _ClassVar[int]
    max_macs: float
    max_params: float
    macs_fraction: float
    params_fraction: float
    def __init__(self, max_macs: _Optional[float] = ..., max_params: _Optional[float] = ..., macs_fraction: _Optional[float] = ..., params_fraction: _Optional[float] = ...) -> None: ...

class ModelRequest(_message.Message):
    __slots__ = ("device_id", "tasks", "resources", "budget", "priorities")
    class PrioritiesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    TASKS_FIELD_NUMBER: _ClassVar[int]
    RESOURCES_FIELD_NUMBER: _ClassVar[int]
    BUDGET_FIELD_NUMBER: _ClassVar[int]
    PRIORITIES_FIELD_NUMBER: _ClassVar[int]
    device_id: str
    tasks: _containers.RepeatedScalarFieldContainer[str]
    resources: Resources
    budget: Budget
    priorities: _containers.ScalarMap[str, float]
    def __init__(self, device_id: _Optional[str] = ..., tasks: _Optional[_Iterable[str]] = ..., resources: _Optional[_Union[Resources, _Mapping]] = ..., budget: _Optional[_Union[Budget, _Mapping]] = ..., priorities: _Optional[_Mapping[str, float]] = ...) -> None: ...

class JobProgress(_message.Message):
    __slots__ = ("build_key", "stage", "fraction", "detail", "ready", "error")
    class Stage(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        STAGE_UNSPECIFIED: _ClassVar[JobProgress.Stage]
        QUEUED: _ClassVar[JobProgress.Stage]
        IMPORTANCE: _ClassVar[JobProgress.Stage]
        PRUNING: _ClassVar[JobProgress.Stage]
        RECOVERY: _ClassVar[JobProgress.Stage]
        EXPORTING: _ClassVar[JobProgress.Stage]
        READY: _ClassVar[JobProgress.Stage]
        FAILED: _ClassVar[JobProgress.Stage]
    STAGE_UNSPECIFIED: JobProgress.Stage
    QUEUED: JobProgress.Stage
    IMPORTANCE: JobProgress.Stage
    PRUNING: JobProgress.Stage
    RECOVERY: JobProgress.Stage
    EXPORTING: JobProgress.Stage
    READY: JobProgress.Stage
    FAILED: JobProgress.Stage
    BUILD_KEY_FIELD_NUMBER: _ClassVar[int]
    STAGE_FIELD_NUMBER: _ClassVar[int]
    FRACTION_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    READY_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    build_key: str
    stage: JobProgress.Stage
    fraction: float
    detail: str
    ready: ModelReady
    error: Error
    def __init__(self, build_key: _Optional[str] = ..., stage: _Optional[_Union[JobProgress.Stage, str]] = ..., fraction: _Optional[float] = ..., detail: _Optional[str] = ..., ready: _Optional[_Union[ModelReady, _Mapping]] = ..., error: _Optional[_Union[Error, _Mapping]] = ...) -> None: ...

class DownloadRequest(_message.Message):
    __slots__ = ("artifact_id", "offset", "device_id")
    ARTIFACT_ID_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    artifact_id: str
    offset: int
    device_id: str
    def __init__(self, artifact_id: _Optional[str] = ..., offset: _Optional[int] = ..., device_id: _Optional[str] = ...) -> None: ...

class Chunk(_message.Message):
    __slots__ = ("offset", "data", "total_size", "sha256")
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SIZE_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    offset: int
    data: bytes
    total_size: int
    sha256: str
    def __init__(self, offset: _Optional[int] = ..., data: _Optional[bytes] = ..., total_size: _Optional[int] = ..., sha256: _Optional[str] = ...) -> None: ...
