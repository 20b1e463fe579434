import datetime

from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RunStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RUN_STATUS_UNSPECIFIED: _ClassVar[RunStatus]
    RUN_STATUS_QUEUED: _ClassVar[RunStatus]
    RUN_STATUS_PLACED: _ClassVar[RunStatus]
    RUN_STATUS_RUNNING: _ClassVar[RunStatus]
    RUN_STATUS_SUCCEEDED: _ClassVar[RunStatus]
    RUN_STATUS_FAILED: _ClassVar[RunStatus]
    RUN_STATUS_CANCELLED: _ClassVar[RunStatus]
    RUN_STATUS_LOST: _ClassVar[RunStatus]
    RUN_STATUS_RESUMING: _ClassVar[RunStatus]
RUN_STATUS_UNSPECIFIED: RunStatus
RUN_STATUS_QUEUED: RunStatus
RUN_STATUS_PLACED: RunStatus
RUN_STATUS_RUNNING: RunStatus
RUN_STATUS_SUCCEEDED: RunStatus
RUN_STATUS_FAILED: RunStatus
RUN_STATUS_CANCELLED: RunStatus
RUN_STATUS_LOST: RunStatus
RUN_STATUS_RESUMING: RunStatus

class RunSpec(_message.Message):
    __slots__ = ("model", "data", "method", "quant_bits", "quant_group_size", "target_modules", "num_layers", "rank", "alpha", "dropout", "learning_rate", "weight_decay", "schedule", "warmup_steps", "min_lr_ratio", "iters", "batch_size", "grad_accumulation", "max_grad_norm", "max_seq_length", "packing", "mask_prompt", "grad_checkpoint", "compile", "dtype", "eval_every", "val_batches", "early_stopping_patience", "early_stopping_min_delta", "save_every", "seed", "test_samples", "max_new_tokens", "memory_budget_gb", "report_to", "prompt_field", "completion_field", "messages_field", "system_field", "eval_samples", "effective_batch_size", "workers", "allow_over_memory")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    QUANT_BITS_FIELD_NUMBER: _ClassVar[int]
    QUANT_GROUP_SIZE_FIELD_NUMBER: _ClassVar[int]
    TARGET_MODULES_FIELD_NUMBER: _ClassVar[int]
    NUM_LAYERS_FIELD_NUMBER: _ClassVar[int]
    RANK_FIELD_NUMBER: _ClassVar[int]
    ALPHA_FIELD_NUMBER: _ClassVar[int]
    DROPOUT_FIELD_NUMBER: _ClassVar[int]
    LEARNING_RATE_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_DECAY_FIELD_NUMBER: _ClassVar[int]
    SCHEDULE_FIELD_NUMBER: _ClassVar[int]
    WARMUP_STEPS_FIELD_NUMBER: _ClassVar[int]
    MIN_LR_RATIO_FIELD_NUMBER: _ClassVar[int]
    ITERS_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    GRAD_ACCUMULATION_FIELD_NUMBER: _ClassVar[int]
    MAX_GRAD_NORM_FIELD_NUMBER: _ClassVar[int]
    MAX_SEQ_LENGTH_FIELD_NUMBER: _ClassVar[int]
    PACKING_FIELD_NUMBER: _ClassVar[int]
    MASK_PROMPT_FIELD_NUMBER: _ClassVar[int]
    GRAD_CHECKPOINT_FIELD_NUMBER: _ClassVar[int]
    COMPILE_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    EVAL_EVERY_FIELD_NUMBER: _ClassVar[int]
    VAL_BATCHES_FIELD_NUMBER: _ClassVar[int]
    EARLY_STOPPING_PATIENCE_FIELD_NUMBER: _ClassVar[int]
    EARLY_STOPPING_MIN_DELTA_FIELD_NUMBER: _ClassVar[int]
    SAVE_EVERY_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    TEST_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    MAX_NEW_TOKENS_FIELD_NUMBER: _ClassVar[int]
    MEMORY_BUDGET_GB_FIELD_NUMBER: _ClassVar[int]
    REPORT_TO_FIELD_NUMBER: _ClassVar[int]
    PROMPT_FIELD_FIELD_NUMBER: _ClassVar[int]
    COMPLETION_FIELD_FIELD_NUMBER: _ClassVar[int]
    MESSAGES_FIELD_FIELD_NUMBER: _ClassVar[int]
    SYSTEM_FIELD_FIELD_NUMBER: _ClassVar[int]
    EVAL_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    EFFECTIVE_BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    WORKERS_FIELD_NUMBER: _ClassVar[int]
    ALLOW_OVER_MEMORY_FIELD_NUMBER: _ClassVar[int]
    model: str
    data: str
    method: str
    quant_bits: int
    quant_group_size: int
    target_modules: _containers.RepeatedScalarFieldContainer[str]
    num_layers: int
    rank: int
    alpha: float
    dropout: float
    learning_rate: float
    weight_decay: float
    schedule: str
    warmup_steps: int
    min_lr_ratio: float
    iters: int
    batch_size: int
    grad_accumulation: int
    max_grad_norm: float
    max_seq_length: int
    packing: bool
    mask_prompt: str
    grad_checkpoint: bool
    compile: bool
    dtype: str
    eval_every: int
    val_batches: int
    early_stopping_patience: int
    early_stopping_min_delta: float
    save_every: int
    seed: int
    test_samples: int
    max_new_tokens: int
    memory_budget_gb: float
    report_to: _containers.RepeatedScalarFieldContainer[str]
    prompt_field: str
    completion_field: str
    messages_field: str
    system_field: str
    eval_samples: int
    effective_batch_size: int
    workers: int
    allow_over_memory: bool
    def __init__(self, model: _Optional[str] = ..., data: _Optional[str] = ..., method: _Optional[str] = ..., quant_bits: _Optional[int] = ..., quant_group_size: _Optional[int] = ..., target_modules: _Optional[_Iterable[str]] = ..., num_layers: _Optional[int] = ..., rank: _Optional[int] = ..., alpha: _Optional[float] = ..., dropout: _Optional[float] = ..., learning_rate: _Optional[float] = ..., weight_decay: _Optional[float] = ..., schedule: _Optional[str] = ..., warmup_steps: _Optional[int] = ..., min_lr_ratio: _Optional[float] = ..., iters: _Optional[int] = ..., batch_size: _Optional[int] = ..., grad_accumulation: _Optional[int] = ..., max_grad_norm: _Optional[float] = ..., max_seq_length: _Optional[int] = ..., packing: _Optional[bool] = ..., mask_prompt: _Optional[str] = ..., grad_checkpoint: _Optional[bool] = ..., compile: _Optional[bool] = ..., dtype: _Optional[str] = ..., eval_every: _Optional[int] = ..., val_batches: _Optional[int] = ..., early_stopping_patience: _Optional[int] = ..., early_stopping_min_delta: _Optional[float] = ..., save_every: _Optional[int] = ..., seed: _Optional[int] = ..., test_samples: _Optional[int] = ..., max_new_tokens: _Optional[int] = ..., memory_budget_gb: _Optional[float] = ..., report_to: _Optional[_Iterable[str]] = ..., prompt_field: _Optional[str] = ..., completion_field: _Optional[str] = ..., messages_field: _Optional[str] = ..., system_field: _Optional[str] = ..., eval_samples: _Optional[int] = ..., effective_batch_size: _Optional[int] = ..., workers: _Optional[int] = ..., allow_over_memory: _Optional[bool] = ...) -> None: ...

class Placement(_message.Message):
    __slots__ = ("device", "trainer_id", "strict")
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    TRAINER_ID_FIELD_NUMBER: _ClassVar[int]
    STRICT_FIELD_NUMBER: _ClassVar[int]
    device: str
    trainer_id: str
    strict: bool
    def __init__(self, device: _Optional[str] = ..., trainer_id: _Optional[str] = ..., strict: _Optional[bool] = ...) -> None: ...

class RunError(_message.Message):
    __slots__ = ("code", "field", "message")
    CODE_FIELD_NUMBER: _ClassVar[int]
    FIELD_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    code: str
    field: str
    message: str
    def __init__(self, code: _Optional[str] = ..., field: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class RunProgress(_message.Message):
    __slots__ = ("step", "total_steps", "train_loss", "valid_loss", "tokens_per_second", "elapsed_seconds", "last_event_id")
    STEP_FIELD_NUMBER: _ClassVar[int]
    TOTAL_STEPS_FIELD_NUMBER: _ClassVar[int]
    TRAIN_LOSS_FIELD_NUMBER: _ClassVar[int]
    VALID_LOSS_FIELD_NUMBER: _ClassVar[int]
    TOKENS_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    ELAPSED_SECONDS_FIELD_NUMBER: _ClassVar[int]
    LAST_EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    step: int
    total_steps: int
    train_loss: float
    valid_loss: float
    tokens_per_second: float
    elapsed_seconds: float
    last_event_id: str
    def __init__(self, step: _Optional[int] = ..., total_steps: _Optional[int] = ..., train_loss: _Optional[float] = ..., valid_loss: _Optional[float] = ..., tokens_per_second: _Optional[float] = ..., elapsed_seconds: _Optional[float] = ..., last_event_id: _Optional[str] = ...) -> None: ...

class TaskScore(_message.Message):
    __slots__ = ("task", "n", "exact_match", "field_accuracy", "parse_rate", "generation_tokens_per_second", "sample_exact")
    class FieldAccuracyEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    TASK_FIELD_NUMBER: _ClassVar[int]
    N_FIELD_NUMBER: _ClassVar[int]
    EXACT_MATCH_FIELD_NUMBER: _ClassVar[int]
    FIELD_ACCURACY_FIELD_NUMBER: _ClassVar[int]
    PARSE_RATE_FIELD_NUMBER: _ClassVar[int]
    GENERATION_TOKENS_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_EXACT_FIELD_NUMBER: _ClassVar[int]
    task: str
    n: int
    exact_match: float
    field_accuracy: _containers.ScalarMap[str, float]
    parse_rate: float
    generation_tokens_per_second: float
    sample_exact: _containers.RepeatedScalarFieldContainer[bool]
    def __init__(self, task: _Optional[str] = ..., n: _Optional[int] = ..., exact_match: _Optional[float] = ..., field_accuracy: _Optional[_Mapping[str, float]] = ..., parse_rate: _Optional[float] = ..., generation_tokens_per_second: _Optional[float] = ..., sample_exact: _Optional[_Iterable[bool]] = ...) -> None: ...

class RunMetrics(_message.Message):
    __slots__ = ("status", "steps", "final_train_loss", "final_valid_loss", "best_valid_loss", "valid_perplexity", "test_loss", "test_perplexity", "task", "train_tokens", "tokens_per_second", "wall_seconds", "train_seconds", "peak_memory_bytes", "peak_rss_bytes", "predicted_peak_memory_bytes", "trainable_parameters", "total_parameters", "adapter_bytes", "run_dir", "backend", "test_loss_samples", "test_loss_tokens", "batch_size", "grad_accumulation", "batch_auto")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    FINAL_TRAIN_LOSS_FIELD_NUMBER: _ClassVar[int]
    FINAL_VALID_LOSS_FIELD_NUMBER: _ClassVar[int]
    BEST_VALID_LOSS_FIELD_NUMBER: _ClassVar[int]
    VALID_PERPLEXITY_FIELD_NUMBER: _ClassVar[int]
    TEST_LOSS_FIELD_NUMBER: _ClassVar[int]
    TEST_PERPLEXITY_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    TRAIN_TOKENS_FIELD_NUMBER: _ClassVar[int]
    TOKENS_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    WALL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    TRAIN_SECONDS_FIELD_NUMBER: _ClassVar[int]
    PEAK_MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    PEAK_RSS_BYTES_FIELD_NUMBER: _ClassVar[int]
    PREDICTED_PEAK_MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    TRAINABLE_PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    ADAPTER_BYTES_FIELD_NUMBER: _ClassVar[int]
    RUN_DIR_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    TEST_LOSS_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    TEST_LOSS_TOKENS_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    GRAD_ACCUMULATION_FIELD_NUMBER: _ClassVar[int]
    BATCH_AUTO_FIELD_NUMBER: _ClassVar[int]
    status: str
    steps: int
    final_train_loss: float
    final_valid_loss: float
    best_valid_loss: float
    valid_perplexity: float
    test_loss: float
    test_perplexity: float
    task: TaskScore
    train_tokens: int
    tokens_per_second: float
    wall_seconds: float
    train_seconds: float
    peak_memory_bytes: int
    peak_rss_bytes: int
    predicted_peak_memory_bytes: int
    trainable_parameters: int
    total_parameters: int
    adapter_bytes: int
    run_dir: str
    backend: str
    test_loss_samples: int
    test_loss_tokens: int
    batch_size: int
    grad_accumulation: int
    batch_auto: bool
    def __init__(self, status: _Optional[str] = ..., steps: _Optional[int] = ..., final_train_loss: _Optional[float] = ..., final_valid_loss: _Optional[float] = ..., best_valid_loss: _Optional[float] = ..., valid_perplexity: _Optional[float] = ..., test_loss: _Optional[float] = ..., test_perplexity: _Optional[float] = ..., task: _Optional[_Union[TaskScore, _Mapping]] = ..., train_tokens: _Optional[int] = ..., tokens_per_second: _Optional[float] = ..., wall_seconds: _Optional[float] = ..., train_seconds: _Optional[float] = ..., peak_memory_bytes: _Optional[int] = ..., peak_rss_bytes: _Optional[int] = ..., predicted_peak_memory_bytes: _Optional[int] = ..., trainable_parameters: _Optional[int] = ..., total_parameters: _Optional[int] = ..., adapter_bytes: _Optional[int] = ..., run_dir: _Optional[str] = ..., backend: _Optional[str] = ..., test_loss_samples: _Optional[int] = ..., test_loss_tokens: _Optional[int] = ..., batch_size: _Optional[int] = ..., grad_accumulation: _Optional[int] = ..., batch_auto: _Optional[bool] = ...) -> None: ...

class PhaseProgress(_message.Message):
    __slots__ = ("phase", "done", "total", "unit")
    PHASE_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    UNIT_FIELD_NUMBER: _ClassVar[int]
    phase: str
    done: int
    total: int
    unit: str
    def __init__(self, phase: _Optional[str] = ..., done: _Optional[int] = ..., total: _Optional[int] = ..., unit: _Optional[str] = ...) -> None: ...

class StepMetrics(_message.Message):
    __slots__ = ("step", "total_steps", "train_loss", "learning_rate", "tokens", "tokens_per_second", "step_seconds", "elapsed_seconds", "peak_memory_bytes", "rss_bytes", "grad_norm")
    STEP_FIELD_NUMBER: _ClassVar[int]
    TOTAL_STEPS_FIELD_NUMBER: _ClassVar[int]
    TRAIN_LOSS_FIELD_NUMBER: _ClassVar[int]
    LEARNING_RATE_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    TOKENS_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    STEP_SECONDS_FIELD_NUMBER: _ClassVar[int]
    ELAPSED_SECONDS_FIELD_NUMBER: _ClassVar[int]
    PEAK_MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    RSS_BYTES_FIELD_NUMBER: _ClassVar[int]
    GRAD_NORM_FIELD_NUMBER: _ClassVar[int]
    step: int
    total_steps: int
    train_loss: float
    learning_rate: float
    tokens: int
    tokens_per_second: float
    step_seconds: float
    elapsed_seconds: float
    peak_memory_bytes: int
    rss_bytes: int
    grad_norm: float
    def __init__(self, step: _Optional[int] = ..., total_steps: _Optional[int] = ..., train_loss: _Optional[float] = ..., learning_rate: _Optional[float] = ..., tokens: _Optional[int] = ..., tokens_per_second: _Optional[float] = ..., step_seconds: _Optional[float] = ..., elapsed_seconds: _Optional[float] = ..., peak_memory_bytes: _Optional[int] = ..., rss_bytes: _Optional[int] = ..., grad_norm: _Optional[float] = ...) -> None: ...

class EvalMetrics(_message.Message):
    __slots__ = ("step", "valid_loss", "valid_perplexity", "eval_seconds", "best_valid_loss", "exact_match")
    STEP_FIELD_NUMBER: _ClassVar[int]
    VALID_LOSS_FIELD_NUMBER: _ClassVar[int]
    VALID_PERPLEXITY_FIELD_NUMBER: _ClassVar[int]
    EVAL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    BEST_VALID_LOSS_FIELD_NUMBER: _ClassVar[int]
    EXACT_MATCH_FIELD_NUMBER: _ClassVar[int]
    step: int
    valid_loss: float
    valid_perplexity: float
    eval_seconds: float
    best_valid_loss: float
    exact_match: float
    def __init__(self, step: _Optional[int] = ..., valid_loss: _Optional[float] = ..., valid_perplexity: _Optional[float] = ..., eval_seconds: _Optional[float] = ..., best_valid_loss: _Optional[float] = ..., exact_match: _Optional[float] = ...) -> None: ...

class StatusChange(_message.Message):
    __slots__ = ("status", "previous", "trainer_id", "reason", "error")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_FIELD_NUMBER: _ClassVar[int]
    TRAINER_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    status: RunStatus
    previous: RunStatus
    trainer_id: str
    reason: str
    error: RunError
    def __init__(self, status: _Optional[_Union[RunStatus, str]] = ..., previous: _Optional[_Union[RunStatus, str]] = ..., trainer_id: _Optional[str] = ..., reason: _Optional[str] = ..., error: _Optional[_Union[RunError, _Mapping]] = ...) -> None: ...

class RunStarted(_message.Message):
    __slots__ = ("trainable_parameters", "total_parameters", "predicted_peak_memory_bytes", "backend", "resume_step", "info")
    TRAINABLE_PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    PREDICTED_PEAK_MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    RESUME_STEP_FIELD_NUMBER: _ClassVar[int]
    INFO_FIELD_NUMBER: _ClassVar[int]
    trainable_parameters: int
    total_parameters: int
    predicted_peak_memory_bytes: int
    backend: str
    resume_step: int
    info: _struct_pb2.Struct
    def __init__(self, trainable_parameters: _Optional[int] = ..., total_parameters: _Optional[int] = ..., predicted_peak_memory_bytes: _Optional[int] = ..., backend: _Optional[str] = ..., resume_step: _Optional[int] = ..., info: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class CheckpointSaved(_message.Message):
    __slots__ = ("step", "path")
    STEP_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    step: int
    path: str
    def __init__(self, step: _Optional[int] = ..., path: _Optional[str] = ...) -> None: ...

class LogLine(_message.Message):
    __slots__ = ("message",)
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    message: str
    def __init__(self, message: _Optional[str] = ...) -> None: ...

class RunEvent(_message.Message):
    __slots__ = ("id", "run_id", "time", "status", "started", "step", "eval", "checkpoint", "log", "result", "progress")
    ID_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    STARTED_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    EVAL_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_FIELD_NUMBER: _ClassVar[int]
    LOG_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    id: str
    run_id: str
    time: _timestamp_pb2.Timestamp
    status: StatusChange
    started: RunStarted
    step: StepMetrics
    eval: EvalMetrics
    checkpoint: CheckpointSaved
    log: LogLine
    result: RunMetrics
    progress: PhaseProgress
    def __init__(self, id: _Optional[str] = ..., run_id: _Optional[str] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., status: _Optional[_Union[StatusChange, _Mapping]] = ..., started: _Optional[_Union[RunStarted, _Mapping]] = ..., step: _Optional[_Union[StepMetrics, _Mapping]] = ..., eval: _Optional[_Union[EvalMetrics, _Mapping]] = ..., checkpoint: _Optional[_Union[CheckpointSaved, _Mapping]] = ..., log: _Optional[_Union[LogLine, _Mapping]] = ..., result: _Optional[_Union[RunMetrics, _Mapping]] = ..., progress: _Optional[_Union[PhaseProgress, _Mapping]] = ...) -> None: ...

class Run(_message.Message):
    __slots__ = ("id", "name", "status", "spec", "trainer_id", "created_at", "updated_at", "started_at", "finished_at", "error", "progress", "metrics", "run_dir", "experiment_id", "labels", "attempt", "placement", "waiting", "owner")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    TRAINER_ID_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    RUN_DIR_FIELD_NUMBER: _ClassVar[int]
    EXPERIMENT_ID_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    PLACEMENT_FIELD_NUMBER: _ClassVar[int]
    WAITING_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    id: str
    name: str
    status: RunStatus
    spec: RunSpec
    trainer_id: str
    created_at: _timestamp_pb2.Timestamp
    updated_at: _timestamp_pb2.Timestamp
    started_at: _timestamp_pb2.Timestamp
    finished_at: _timestamp_pb2.Timestamp
    error: RunError
    progress: RunProgress
    metrics: RunMetrics
    run_dir: str
    experiment_id: str
    labels: _containers.ScalarMap[str, str]
    attempt: int
    placement: Placement
    waiting: str
    owner: str
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ..., status: _Optional[_Union[RunStatus, str]] = ..., spec: _Optional[_Union[RunSpec, _Mapping]] = ..., trainer_id: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., finished_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., error: _Optional[_Union[RunError, _Mapping]] = ..., progress: _Optional[_Union[RunProgress, _Mapping]] = ..., metrics: _Optional[_Union[RunMetrics, _Mapping]] = ..., run_dir: _Optional[str] = ..., experiment_id: _Optional[str] = ..., labels: _Optional[_Mapping[str, str]] = ..., attempt: _Optional[int] = ..., placement: _Optional[_Union[Placement, _Mapping]] = ..., waiting: _Optional[str] = ..., owner: _Optional[str] = ...) -> None: ...

class Hardware(_message.Message):
    __slots__ = ("device_kind", "device_name", "cpu_name", "cpu_cores", "total_memory_bytes", "available_memory_bytes", "system_memory_bytes", "metal", "cuda", "recommended_working_set_bytes", "mlx_version", "platform")
    DEVICE_KIND_FIELD_NUMBER: _ClassVar[int]
    DEVICE_NAME_FIELD_NUMBER: _ClassVar[int]
    CPU_NAME_FIELD_NUMBER: _ClassVar[int]
    CPU_CORES_FIELD_NUMBER: _ClassVar[int]
    TOTAL_MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    AVAILABLE_MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    SYSTEM_MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    METAL_FIELD_NUMBER: _ClassVar[int]
    CUDA_FIELD_NUMBER: _ClassVar[int]
    RECOMMENDED_WORKING_SET_BYTES_FIELD_NUMBER: _ClassVar[int]
    MLX_VERSION_FIELD_NUMBER: _ClassVar[int]
    PLATFORM_FIELD_NUMBER: _ClassVar[int]
    device_kind: str
    device_name: str
    cpu_name: str
    cpu_cores: int
    total_memory_bytes: int
    available_memory_bytes: int
    system_memory_bytes: int
    metal: bool
    cuda: bool
    recommended_working_set_bytes: int
    mlx_version: str
    platform: str
    def __init__(self, device_kind: _Optional[str] = ..., device_name: _Optional[str] = ..., cpu_name: _Optional[str] = ..., cpu_cores: _Optional[int] = ..., total_memory_bytes: _Optional[int] = ..., available_memory_bytes: _Optional[int] = ..., system_memory_bytes: _Optional[int] = ..., metal: _Optional[bool] = ..., cuda: _Optional[bool] = ..., recommended_working_set_bytes: _Optional[int] = ..., mlx_version: _Optional[str] = ..., platform: _Optional[str] = ...) -> None: ...

class TrainerInfo(_message.Message):
    __slots__ = ("id", "address", "hardware", "slots", "busy_slots", "run_ids", "version", "started_at", "last_heartbeat", "runs_root", "draining")
    ID_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    HARDWARE_FIELD_NUMBER: _ClassVar[int]
    SLOTS_FIELD_NUMBER: _ClassVar[int]
    BUSY_SLOTS_FIELD_NUMBER: _ClassVar[int]
    RUN_IDS_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    LAST_HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    RUNS_ROOT_FIELD_NUMBER: _ClassVar[int]
    DRAINING_FIELD_NUMBER: _ClassVar[int]
    id: str
    address: str
    hardware: Hardware
    slots: int
    busy_slots: int
    run_ids: _containers.RepeatedScalarFieldContainer[str]
    version: str
    started_at: _timestamp_pb2.Timestamp
    last_heartbeat: _timestamp_pb2.Timestamp
    runs_root: str
    draining: bool
    def __init__(self, id: _Optional[str] = ..., address: _Optional[str] = ..., hardware: _Optional[_Union[Hardware, _Mapping]] = ..., slots: _Optional[int] = ..., busy_slots: _Optional[int] = ..., run_ids: _Optional[_Iterable[str]] = ..., version: _Optional[str] = ..., started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_heartbeat: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., runs_root: _Optional[str] = ..., draining: _Optional[bool] = ...) -> None: ...
