from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TrialStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TRIAL_STATUS_UNSPECIFIED: _ClassVar[TrialStatus]
    TRIAL_STATUS_COMPLETE: _ClassVar[TrialStatus]
    TRIAL_STATUS_FAILED: _ClassVar[TrialStatus]
    TRIAL_STATUS_PRUNED: _ClassVar[TrialStatus]
    TRIAL_STATUS_RUNNING: _ClassVar[TrialStatus]
TRIAL_STATUS_UNSPECIFIED: TrialStatus
TRIAL_STATUS_COMPLETE: TrialStatus
TRIAL_STATUS_FAILED: TrialStatus
TRIAL_STATUS_PRUNED: TrialStatus
TRIAL_STATUS_RUNNING: TrialStatus

class ParameterValue(_message.Message):
    __slots__ = ("float_value", "int_value", "string_value", "bool_value")
    FLOAT_VALUE_FIELD_NUMBER: _ClassVar[int]
    INT_VALUE_FIELD_NUMBER: _ClassVar[int]
    STRING_VALUE_FIELD_NUMBER: _ClassVar[int]
    BOOL_VALUE_FIELD_NUMBER: _ClassVar[int]
    float_value: float
    int_value: int
    string_value: str
    bool_value: bool
    def __init__(self, float_value: _Optional[float] = ..., int_value: _Optional[int] = ..., string_value: _Optional[str] = ..., bool_value: _Optional[bool] = ...) -> None: ...

class FloatRange(_message.Message):
    __slots__ = ("low", "high", "log")
    LOW_FIELD_NUMBER: _ClassVar[int]
    HIGH_FIELD_NUMBER: _ClassVar[int]
    LOG_FIELD_NUMBER: _ClassVar[int]
    low: float
    high: float
    log: bool
    def __init__(self, low: _Optional[float] = ..., high: _Optional[float] = ..., log: _Optional[bool] = ...) -> None: ...

class IntRange(_message.Message):
    __slots__ = ("low", "high", "log")
    LOW_FIELD_NUMBER: _ClassVar[int]
    HIGH_FIELD_NUMBER: _ClassVar[int]
    LOG_FIELD_NUMBER: _ClassVar[int]
    low: int
    high: int
    log: bool
    def __init__(self, low: _Optional[int] = ..., high: _Optional[int] = ..., log: _Optional[bool] = ...) -> None: ...

class Choices(_message.Message):
    __slots__ = ("values",)
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedCompositeFieldContainer[ParameterValue]
    def __init__(self, values: _Optional[_Iterable[_Union[ParameterValue, _Mapping]]] = ...) -> None: ...

class Condition(_message.Message):
    __slots__ = ("parent", "values")
    PARENT_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    parent: str
    values: _containers.RepeatedCompositeFieldContainer[ParameterValue]
    def __init__(self, parent: _Optional[str] = ..., values: _Optional[_Iterable[_Union[ParameterValue, _Mapping]]] = ...) -> None: ...

class Parameter(_message.Message):
    __slots__ = ("name", "float_range", "int_range", "categorical", "condition")
    NAME_FIELD_NUMBER: _ClassVar[int]
    FLOAT_RANGE_FIELD_NUMBER: _ClassVar[int]
    INT_RANGE_FIELD_NUMBER: _ClassVar[int]
    CATEGORICAL_FIELD_NUMBER: _ClassVar[int]
    CONDITION_FIELD_NUMBER: _ClassVar[int]
    name: str
    float_range: FloatRange
    int_range: IntRange
    categorical: Choices
    condition: Condition
    def __init__(self, name: _Optional[str] = ..., float_range: _Optional[_Union[FloatRange, _Mapping]] = ..., int_range: _Optional[_Union[IntRange, _Mapping]] = ..., categorical: _Optional[_Union[Choices, _Mapping]] = ..., condition: _Optional[_Union[Condition, _Mapping]] = ...) -> None: ...

class SearchSpace(_message.Message):
    __slots__ = ("parameters",)
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    parameters: _containers.RepeatedCompositeFieldContainer[Parameter]
    def __init__(self, parameters: _Optional[_Iterable[_Union[Parameter, _Mapping]]] = ...) -> None: ...

class Trial(_message.Message):
    __slots__ = ("trial_id", "params", "status", "values")
    class ParamsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: ParameterValue
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[ParameterValue, _Mapping]] = ...) -> None: ...
    class ValuesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    TRIAL_ID_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    trial_id: str
    params: _containers.MessageMap[str, ParameterValue]
    status: TrialStatus
    values: _containers.ScalarMap[str, float]
    def __init__(self, trial_id: _Optional[str] = ..., params: _Optional[_Mapping[str, ParameterValue]] = ..., status: _Optional[_Union[TrialStatus, str]] = ..., values: _Optional[_Mapping[str, float]] = ...) -> None: ...

class StudyObjective(_message.Message):
    __slots__ = ("name", "direction")
    class Direction(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        DIRECTION_UNSPECIFIED: _ClassVar[StudyObjective.Direction]
        MINIMIZE: _ClassVar[StudyObjective.Direction]
        MAXIMIZE: _ClassVar[StudyObjective.Direction]
    DIRECTION_UNSPECIFIED: StudyObjective.Direction
    MINIMIZE: StudyObjective.Direction
    MAXIMIZE: StudyObjective.Direction
    NAME_FIELD_NUMBER: _ClassVar[int]
    DIRECTION_FIELD_NUMBER: _ClassVar[int]
    name: str
    direction: StudyObjective.Direction
    def __init__(self, name: _Optional[str] = ..., direction: _Optional[_Union[StudyObjective.Direction, str]] = ...) -> None: ...

class SuggestRequest(_message.Message):
    __slots__ = ("space", "trials", "n", "seed", "objectives", "n_startup", "weights")
    SPACE_FIELD_NUMBER: _ClassVar[int]
    TRIALS_FIELD_NUMBER: _ClassVar[int]
    N_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    OBJECTIVES_FIELD_NUMBER: _ClassVar[int]
    N_STARTUP_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    space: SearchSpace
    trials: _containers.RepeatedCompositeFieldContainer[Trial]
    n: int
    seed: int
    objectives: _containers.RepeatedCompositeFieldContainer[StudyObjective]
    n_startup: int
    weights: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, space: _Optional[_Union[SearchSpace, _Mapping]] = ..., trials: _Optional[_Iterable[_Union[Trial, _Mapping]]] = ..., n: _Optional[int] = ..., seed: _Optional[int] = ..., objectives: _Optional[_Iterable[_Union[StudyObjective, _Mapping]]] = ..., n_startup: _Optional[int] = ..., weights: _Optional[_Iterable[float]] = ...) -> None: ...

class Suggestion(_message.Message):
    __slots__ = ("params", "source", "predicted_mean", "predicted_std", "log_expected_improvement", "weights")
    class ParamsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: ParameterValue
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[ParameterValue, _Mapping]] = ...) -> None: ...
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    PREDICTED_MEAN_FIELD_NUMBER: _ClassVar[int]
    PREDICTED_STD_FIELD_NUMBER: _ClassVar[int]
    LOG_EXPECTED_IMPROVEMENT_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    params: _containers.MessageMap[str, ParameterValue]
    source: str
    predicted_mean: float
    predicted_std: float
    log_expected_improvement: float
    weights: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, params: _Optional[_Mapping[str, ParameterValue]] = ..., source: _Optional[str] = ..., predicted_mean: _Optional[float] = ..., predicted_std: _Optional[float] = ..., log_expected_improvement: _Optional[float] = ..., weights: _Optional[_Iterable[float]] = ...) -> None: ...

class ModelSummary(_message.Message):
    __slots__ = ("length_scales", "signal_variance", "noise_variance", "n_observations")
    class LengthScalesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    LENGTH_SCALES_FIELD_NUMBER: _ClassVar[int]
    SIGNAL_VARIANCE_FIELD_NUMBER: _ClassVar[int]
    NOISE_VARIANCE_FIELD_NUMBER: _ClassVar[int]
    N_OBSERVATIONS_FIELD_NUMBER: _ClassVar[int]
    length_scales: _containers.ScalarMap[str, float]
    signal_variance: float
    noise_variance: float
    n_observations: int
    def __init__(self, length_scales: _Optional[_Mapping[str, float]] = ..., signal_variance: _Optional[float] = ..., noise_variance: _Optional[float] = ..., n_observations: _Optional[int] = ...) -> None: ...

class SuggestResponse(_message.Message):
    __slots__ = ("suggestions", "pareto_front", "model", "notes")
    SUGGESTIONS_FIELD_NUMBER: _ClassVar[int]
    PARETO_FRONT_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    NOTES_FIELD_NUMBER: _ClassVar[int]
    suggestions: _containers.RepeatedCompositeFieldContainer[Suggestion]
    pareto_front: _containers.RepeatedScalarFieldContainer[int]
    model: ModelSummary
    notes: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, suggestions: _Optional[_Iterable[_Union[Suggestion, _Mapping]]] = ..., pareto_front: _Optional[_Iterable[int]] = ..., model: _Optional[_Union[ModelSummary, _Mapping]] = ..., notes: _Optional[_Iterable[str]] = ...) -> None: ...

class AdapterLayer(_message.Message):
    __slots__ = ("name", "lora_a", "lora_b", "in_features", "out_features", "rank", "scale", "singular_values")
    NAME_FIELD_NUMBER: _ClassVar[int]
    LORA_A_FIELD_NUMBER: _ClassVar[int]
    LORA_B_FIELD_NUMBER: _ClassVar[int]
    IN_FEATURES_FIELD_NUMBER: _ClassVar[int]
    OUT_FEATURES_FIELD_NUMBER: _ClassVar[int]
    RANK_FIELD_NUMBER: _ClassVar[int]
    SCALE_FIELD_NUMBER: _ClassVar[int]
    SINGULAR_VALUES_FIELD_NUMBER: _ClassVar[int]
    name: str
    lora_a: _containers.RepeatedScalarFieldContainer[float]
    lora_b: _containers.RepeatedScalarFieldContainer[float]
    in_features: int
    out_features: int
    rank: int
    scale: float
    singular_values: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, name: _Optional[str] = ..., lora_a: _Optional[_Iterable[float]] = ..., lora_b: _Optional[_Iterable[float]] = ..., in_features: _Optional[int] = ..., out_features: _Optional[int] = ..., rank: _Optional[int] = ..., scale: _Optional[float] = ..., singular_values: _Optional[_Iterable[float]] = ...) -> None: ...

class RecommendRankRequest(_message.Message):
    __slots__ = ("layers", "energy_threshold", "layer_quantile", "train_tokens", "max_params_per_token", "min_rank", "max_rank")
    LAYERS_FIELD_NUMBER: _ClassVar[int]
    ENERGY_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    LAYER_QUANTILE_FIELD_NUMBER: _ClassVar[int]
    TRAIN_TOKENS_FIELD_NUMBER: _ClassVar[int]
    MAX_PARAMS_PER_TOKEN_FIELD_NUMBER: _ClassVar[int]
    MIN_RANK_FIELD_NUMBER: _ClassVar[int]
    MAX_RANK_FIELD_NUMBER: _ClassVar[int]
    layers: _containers.RepeatedCompositeFieldContainer[AdapterLayer]
    energy_threshold: float
    layer_quantile: float
    train_tokens: int
    max_params_per_token: float
    min_rank: int
    max_rank: int
    def __init__(self, layers: _Optional[_Iterable[_Union[AdapterLayer, _Mapping]]] = ..., energy_threshold: _Optional[float] = ..., layer_quantile: _Optional[float] = ..., train_tokens: _Optional[int] = ..., max_params_per_token: _Optional[float] = ..., min_rank: _Optional[int] = ..., max_rank: _Optional[int] = ...) -> None: ...

class LayerSpectrum(_message.Message):
    __slots__ = ("name", "probe_rank", "effective_rank", "energy_at_recommended", "singular_values")
    NAME_FIELD_NUMBER: _ClassVar[int]
    PROBE_RANK_FIELD_NUMBER: _ClassVar[int]
    EFFECTIVE_RANK_FIELD_NUMBER: _ClassVar[int]
    ENERGY_AT_RECOMMENDED_FIELD_NUMBER: _ClassVar[int]
    SINGULAR_VALUES_FIELD_NUMBER: _ClassVar[int]
    name: str
    probe_rank: int
    effective_rank: int
    energy_at_recommended: float
    singular_values: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, name: _Optional[str] = ..., probe_rank: _Optional[int] = ..., effective_rank: _Optional[int] = ..., energy_at_recommended: _Optional[float] = ..., singular_values: _Optional[_Iterable[float]] = ...) -> None: ...

class RecommendRankResponse(_message.Message):
    __slots__ = ("rank", "spectrum_rank", "probe_rank", "saturated", "data_bound", "params_per_rank", "layers", "explanation")
    RANK_FIELD_NUMBER: _ClassVar[int]
    SPECTRUM_RANK_FIELD_NUMBER: _ClassVar[int]
    PROBE_RANK_FIELD_NUMBER: _ClassVar[int]
    SATURATED_FIELD_NUMBER: _ClassVar[int]
    DATA_BOUND_FIELD_NUMBER: _ClassVar[int]
    PARAMS_PER_RANK_FIELD_NUMBER: _ClassVar[int]
    LAYERS_FIELD_NUMBER: _ClassVar[int]
    EXPLANATION_FIELD_NUMBER: _ClassVar[int]
    rank: int
    spectrum_rank: int
    probe_rank: int
    saturated: bool
    data_bound: int
    params_per_rank: int
    layers: _containers.RepeatedCompositeFieldContainer[LayerSpectrum]
    explanation: str
    def __init__(self, rank: _Optional[int] = ..., spectrum_rank: _Optional[int] = ..., probe_rank: _Optional[int] = ..., saturated: _Optional[bool] = ..., data_bound: _Optional[int] = ..., params_per_rank: _Optional[int] = ..., layers: _Optional[_Iterable[_Union[LayerSpectrum, _Mapping]]] = ..., explanation: _Optional[str] = ...) -> None: ...

class ModelShape(_message.Message):
    __slots__ = ("hidden_size", "intermediate_size", "num_layers", "num_heads", "num_kv_heads", "head_dim", "vocab_size", "tied_embeddings")
    HIDDEN_SIZE_FIELD_NUMBER: _ClassVar[int]
    INTERMEDIATE_SIZE_FIELD_NUMBER: _ClassVar[int]
    NUM_LAYERS_FIELD_NUMBER: _ClassVar[int]
    NUM_HEADS_FIELD_NUMBER: _ClassVar[int]
    NUM_KV_HEADS_FIELD_NUMBER: _ClassVar[int]
    HEAD_DIM_FIELD_NUMBER: _ClassVar[int]
    VOCAB_SIZE_FIELD_NUMBER: _ClassVar[int]
    TIED_EMBEDDINGS_FIELD_NUMBER: _ClassVar[int]
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    vocab_size: int
    tied_embeddings: bool
    def __init__(self, hidden_size: _Optional[int] = ..., intermediate_size: _Optional[int] = ..., num_layers: _Optional[int] = ..., num_heads: _Optional[int] = ..., num_kv_heads: _Optional[int] = ..., head_dim: _Optional[int] = ..., vocab_size: _Optional[int] = ..., tied_embeddings: _Optional[bool] = ...) -> None: ...

class RecommendBatchSizeRequest(_message.Message):
    __slots__ = ("model_shape", "method", "seq_len", "memory_budget_gb", "grad_checkpoint", "target_effective_batch", "rank", "num_layers", "target_modules", "quant_bits", "quant_group_size", "dtype_bytes", "max_batch")
    MODEL_SHAPE_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    SEQ_LEN_FIELD_NUMBER: _ClassVar[int]
    MEMORY_BUDGET_GB_FIELD_NUMBER: _ClassVar[int]
    GRAD_CHECKPOINT_FIELD_NUMBER: _ClassVar[int]
    TARGET_EFFECTIVE_BATCH_FIELD_NUMBER: _ClassVar[int]
    RANK_FIELD_NUMBER: _ClassVar[int]
    NUM_LAYERS_FIELD_NUMBER: _ClassVar[int]
    TARGET_MODULES_FIELD_NUMBER: _ClassVar[int]
    QUANT_BITS_FIELD_NUMBER: _ClassVar[int]
    QUANT_GROUP_SIZE_FIELD_NUMBER: _ClassVar[int]
    DTYPE_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_FIELD_NUMBER: _ClassVar[int]
    model_shape: ModelShape
    method: str
    seq_len: int
    memory_budget_gb: float
    grad_checkpoint: bool
    target_effective_batch: int
    rank: int
    num_layers: int
    target_modules: _containers.RepeatedScalarFieldContainer[str]
    quant_bits: int
    quant_group_size: int
    dtype_bytes: int
    max_batch: int
    def __init__(self, model_shape: _Optional[_Union[ModelShape, _Mapping]] = ..., method: _Optional[str] = ..., seq_len: _Optional[int] = ..., memory_budget_gb: _Optional[float] = ..., grad_checkpoint: _Optional[bool] = ..., target_effective_batch: _Optional[int] = ..., rank: _Optional[int] = ..., num_layers: _Optional[int] = ..., target_modules: _Optional[_Iterable[str]] = ..., quant_bits: _Optional[int] = ..., quant_group_size: _Optional[int] = ..., dtype_bytes: _Optional[int] = ..., max_batch: _Optional[int] = ...) -> None: ...

class RecommendBatchSizeResponse(_message.Message):
    __slots__ = ("batch_size", "grad_accumulation", "largest_fitting_batch", "fits", "predicted_peak_bytes", "frozen_weights_bytes", "trainable_bytes", "activations_bytes", "logits_bytes", "overhead_bytes", "explanation")
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    GRAD_ACCUMULATION_FIELD_NUMBER: _ClassVar[int]
    LARGEST_FITTING_BATCH_FIELD_NUMBER: _ClassVar[int]
    FITS_FIELD_NUMBER: _ClassVar[int]
    PREDICTED_PEAK_BYTES_FIELD_NUMBER: _ClassVar[int]
    FROZEN_WEIGHTS_BYTES_FIELD_NUMBER: _ClassVar[int]
    TRAINABLE_BYTES_FIELD_NUMBER: _ClassVar[int]
    ACTIVATIONS_BYTES_FIELD_NUMBER: _ClassVar[int]
    LOGITS_BYTES_FIELD_NUMBER: _ClassVar[int]
    OVERHEAD_BYTES_FIELD_NUMBER: _ClassVar[int]
    EXPLANATION_FIELD_NUMBER: _ClassVar[int]
    batch_size: int
    grad_accumulation: int
    largest_fitting_batch: int
    fits: bool
    predicted_peak_bytes: int
    frozen_weights_bytes: int
    trainable_bytes: int
    activations_bytes: int
    logits_bytes: int
    overhead_bytes: int
    explanation: str
    def __init__(self, batch_size: _Optional[int] = ..., grad_accumulation: _Optional[int] = ..., largest_fitting_batch: _Optional[int] = ..., fits: _Optional[bool] = ..., predicted_peak_bytes: _Optional[int] = ..., frozen_weights_bytes: _Optional[int] = ..., trainable_bytes: _Optional[int] = ..., activations_bytes: _Optional[int] = ..., logits_bytes: _Optional[int] = ..., overhead_bytes: _Optional[int] = ..., explanation: _Optional[str] = ...) -> None: ...

class GetDefaultSpaceRequest(_message.Message):
    __slots__ = ("methods", "total_steps")
    METHODS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_STEPS_FIELD_NUMBER: _ClassVar[int]
    methods: _containers.RepeatedScalarFieldContainer[str]
    total_steps: int
    def __init__(self, methods: _Optional[_Iterable[str]] = ..., total_steps: _Optional[int] = ...) -> None: ...

class MethodSchedule(_message.Message):
    __slots__ = ("method", "learning_rate", "learning_rate_low", "learning_rate_high", "warmup_steps", "schedule", "min_lr_ratio", "alpha_per_rank", "reasoning")
    METHOD_FIELD_NUMBER: _ClassVar[int]
    LEARNING_RATE_FIELD_NUMBER: _ClassVar[int]
    LEARNING_RATE_LOW_FIELD_NUMBER: _ClassVar[int]
    LEARNING_RATE_HIGH_FIELD_NUMBER: _ClassVar[int]
    WARMUP_STEPS_FIELD_NUMBER: _ClassVar[int]
    SCHEDULE_FIELD_NUMBER: _ClassVar[int]
    MIN_LR_RATIO_FIELD_NUMBER: _ClassVar[int]
    ALPHA_PER_RANK_FIELD_NUMBER: _ClassVar[int]
    REASONING_FIELD_NUMBER: _ClassVar[int]
    method: str
    learning_rate: float
    learning_rate_low: float
    learning_rate_high: float
    warmup_steps: int
    schedule: str
    min_lr_ratio: float
    alpha_per_rank: float
    reasoning: str
    def __init__(self, method: _Optional[str] = ..., learning_rate: _Optional[float] = ..., learning_rate_low: _Optional[float] = ..., learning_rate_high: _Optional[float] = ..., warmup_steps: _Optional[int] = ..., schedule: _Optional[str] = ..., min_lr_ratio: _Optional[float] = ..., alpha_per_rank: _Optional[float] = ..., reasoning: _Optional[str] = ...) -> None: ...

class GetDefaultSpaceResponse(_message.Message):
    __slots__ = ("space", "schedules")
    SPACE_FIELD_NUMBER: _ClassVar[int]
    SCHEDULES_FIELD_NUMBER: _ClassVar[int]
    space: SearchSpace
    schedules: _containers.RepeatedCompositeFieldContainer[MethodSchedule]
    def __init__(self, space: _Optional[_Union[SearchSpace, _Mapping]] = ..., schedules: _Optional[_Iterable[_Union[MethodSchedule, _Mapping]]] = ...) -> None: ...
