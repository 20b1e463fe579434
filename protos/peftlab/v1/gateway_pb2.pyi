import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from peftlab.v1 import common_pb2 as _common_pb2
from peftlab.v1 import comparator_pb2 as _comparator_pb2
from peftlab.v1 import optimizer_pb2 as _optimizer_pb2
from peftlab.v1 import trainer_pb2 as _trainer_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SubmitRunRequest(_message.Message):
    __slots__ = ("spec", "name", "placement", "labels", "experiment_id")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    SPEC_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    PLACEMENT_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    EXPERIMENT_ID_FIELD_NUMBER: _ClassVar[int]
    spec: _common_pb2.RunSpec
    name: str
    placement: _common_pb2.Placement
    labels: _containers.ScalarMap[str, str]
    experiment_id: str
    def __init__(self, spec: _Optional[_Union[_common_pb2.RunSpec, _Mapping]] = ..., name: _Optional[str] = ..., placement: _Optional[_Union[_common_pb2.Placement, _Mapping]] = ..., labels: _Optional[_Mapping[str, str]] = ..., experiment_id: _Optional[str] = ...) -> None: ...

class SubmitRunResponse(_message.Message):
    __slots__ = ("run",)
    RUN_FIELD_NUMBER: _ClassVar[int]
    run: _common_pb2.Run
    def __init__(self, run: _Optional[_Union[_common_pb2.Run, _Mapping]] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("name", "path", "model_type", "quant_bits", "num_layers", "hidden_size", "vocab_size", "size_bytes", "chat_template", "shape")
    NAME_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    MODEL_TYPE_FIELD_NUMBER: _ClassVar[int]
    QUANT_BITS_FIELD_NUMBER: _ClassVar[int]
    NUM_LAYERS_FIELD_NUMBER: _ClassVar[int]
    HIDDEN_SIZE_FIELD_NUMBER: _ClassVar[int]
    VOCAB_SIZE_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    CHAT_TEMPLATE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    name: str
    path: str
    model_type: str
    quant_bits: int
    num_layers: int
    hidden_size: int
    vocab_size: int
    size_bytes: int
    chat_template: bool
    shape: _optimizer_pb2.ModelShape
    def __init__(self, name: _Optional[str] = ..., path: _Optional[str] = ..., model_type: _Optional[str] = ..., quant_bits: _Optional[int] = ..., num_layers: _Optional[int] = ..., hidden_size: _Optional[int] = ..., vocab_size: _Optional[int] = ..., size_bytes: _Optional[int] = ..., chat_template: _Optional[bool] = ..., shape: _Optional[_Union[_optimizer_pb2.ModelShape, _Mapping]] = ...) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models", "root")
    MODELS_FIELD_NUMBER: _ClassVar[int]
    ROOT_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[ModelInfo]
    root: str
    def __init__(self, models: _Optional[_Iterable[_Union[ModelInfo, _Mapping]]] = ..., root: _Optional[str] = ...) -> None: ...

class ListDatasetsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class SplitInfo(_message.Message):
    __slots__ = ("split", "rows", "size_bytes")
    SPLIT_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    split: str
    rows: int
    size_bytes: int
    def __init__(self, split: _Optional[str] = ..., rows: _Optional[int] = ..., size_bytes: _Optional[int] = ...) -> None: ...

class DatasetInfo(_message.Message):
    __slots__ = ("name", "path", "format", "splits")
    NAME_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    SPLITS_FIELD_NUMBER: _ClassVar[int]
    name: str
    path: str
    format: str
    splits: _containers.RepeatedCompositeFieldContainer[SplitInfo]
    def __init__(self, name: _Optional[str] = ..., path: _Optional[str] = ..., format: _Optional[str] = ..., splits: _Optional[_Iterable[_Union[SplitInfo, _Mapping]]] = ...) -> None: ...

class ListDatasetsResponse(_message.Message):
    __slots__ = ("datasets", "root")
    DATASETS_FIELD_NUMBER: _ClassVar[int]
    ROOT_FIELD_NUMBER: _ClassVar[int]
    datasets: _containers.RepeatedCompositeFieldContainer[DatasetInfo]
    root: str
    def __init__(self, datasets: _Optional[_Iterable[_Union[DatasetInfo, _Mapping]]] = ..., root: _Optional[str] = ...) -> None: ...

class ValidateDatasetRequest(_message.Message):
    __slots__ = ("path", "max_problems", "prompt_field", "completion_field", "messages_field", "system_field")
    PATH_FIELD_NUMBER: _ClassVar[int]
    MAX_PROBLEMS_FIELD_NUMBER: _ClassVar[int]
    PROMPT_FIELD_FIELD_NUMBER: _ClassVar[int]
    COMPLETION_FIELD_FIELD_NUMBER: _ClassVar[int]
    MESSAGES_FIELD_FIELD_NUMBER: _ClassVar[int]
    SYSTEM_FIELD_FIELD_NUMBER: _ClassVar[int]
    path: str
    max_problems: int
    prompt_field: str
    completion_field: str
    messages_field: str
    system_field: str
    def __init__(self, path: _Optional[str] = ..., max_problems: _Optional[int] = ..., prompt_field: _Optional[str] = ..., completion_field: _Optional[str] = ..., messages_field: _Optional[str] = ..., system_field: _Optional[str] = ...) -> None: ...

class DatasetProblem(_message.Message):
    __slots__ = ("file", "line", "problem")
    FILE_FIELD_NUMBER: _ClassVar[int]
    LINE_FIELD_NUMBER: _ClassVar[int]
    PROBLEM_FIELD_NUMBER: _ClassVar[int]
    file: str
    line: int
    problem: str
    def __init__(self, file: _Optional[str] = ..., line: _Optional[int] = ..., problem: _Optional[str] = ...) -> None: ...

class ValidateDatasetResponse(_message.Message):
    __slots__ = ("valid", "dataset", "problems")
    VALID_FIELD_NUMBER: _ClassVar[int]
    DATASET_FIELD_NUMBER: _ClassVar[int]
    PROBLEMS_FIELD_NUMBER: _ClassVar[int]
    valid: bool
    dataset: DatasetInfo
    problems: _containers.RepeatedCompositeFieldContainer[DatasetProblem]
    def __init__(self, valid: _Optional[bool] = ..., dataset: _Optional[_Union[DatasetInfo, _Mapping]] = ..., problems: _Optional[_Iterable[_Union[DatasetProblem, _Mapping]]] = ...) -> None: ...

class PreviewDatasetRequest(_message.Message):
    __slots__ = ("path", "split", "rows", "model", "prompt_field", "completion_field", "messages_field", "system_field")
    PATH_FIELD_NUMBER: _ClassVar[int]
    SPLIT_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    PROMPT_FIELD_FIELD_NUMBER: _ClassVar[int]
    COMPLETION_FIELD_FIELD_NUMBER: _ClassVar[int]
    MESSAGES_FIELD_FIELD_NUMBER: _ClassVar[int]
    SYSTEM_FIELD_FIELD_NUMBER: _ClassVar[int]
    path: str
    split: str
    rows: int
    model: str
    prompt_field: str
    completion_field: str
    messages_field: str
    system_field: str
    def __init__(self, path: _Optional[str] = ..., split: _Optional[str] = ..., rows: _Optional[int] = ..., model: _Optional[str] = ..., prompt_field: _Optional[str] = ..., completion_field: _Optional[str] = ..., messages_field: _Optional[str] = ..., system_field: _Optional[str] = ...) -> None: ...

class PreviewRow(_message.Message):
    __slots__ = ("line", "json", "format", "prompt_tokens", "completion_tokens", "total_tokens")
    LINE_FIELD_NUMBER: _ClassVar[int]
    JSON_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COMPLETION_TOKENS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_TOKENS_FIELD_NUMBER: _ClassVar[int]
    line: int
    json: str
    format: str
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    def __init__(self, line: _Optional[int] = ..., json: _Optional[str] = ..., format: _Optional[str] = ..., prompt_tokens: _Optional[int] = ..., completion_tokens: _Optional[int] = ..., total_tokens: _Optional[int] = ...) -> None: ...

class PreviewDatasetResponse(_message.Message):
    __slots__ = ("rows", "total_rows", "model")
    ROWS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_ROWS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    rows: _containers.RepeatedCompositeFieldContainer[PreviewRow]
    total_rows: int
    model: str
    def __init__(self, rows: _Optional[_Iterable[_Union[PreviewRow, _Mapping]]] = ..., total_rows: _Optional[int] = ..., model: _Optional[str] = ...) -> None: ...

class ListTrainersRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListTrainersResponse(_message.Message):
    __slots__ = ("trainers",)
    TRAINERS_FIELD_NUMBER: _ClassVar[int]
    trainers: _containers.RepeatedCompositeFieldContainer[_common_pb2.TrainerInfo]
    def __init__(self, trainers: _Optional[_Iterable[_Union[_common_pb2.TrainerInfo, _Mapping]]] = ...) -> None: ...

class ListHardwareRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class TrainerHardware(_message.Message):
    __slots__ = ("trainer_id", "address", "hardware")
    TRAINER_ID_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    HARDWARE_FIELD_NUMBER: _ClassVar[int]
    trainer_id: str
    address: str
    hardware: _common_pb2.Hardware
    def __init__(self, trainer_id: _Optional[str] = ..., address: _Optional[str] = ..., hardware: _Optional[_Union[_common_pb2.Hardware, _Mapping]] = ...) -> None: ...

class ListHardwareResponse(_message.Message):
    __slots__ = ("hardware",)
    HARDWARE_FIELD_NUMBER: _ClassVar[int]
    hardware: _containers.RepeatedCompositeFieldContainer[TrainerHardware]
    def __init__(self, hardware: _Optional[_Iterable[_Union[TrainerHardware, _Mapping]]] = ...) -> None: ...

class GetStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ServiceStatus(_message.Message):
    __slots__ = ("name", "address", "healthy", "detail")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    HEALTHY_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    name: str
    address: str
    healthy: bool
    detail: str
    def __init__(self, name: _Optional[str] = ..., address: _Optional[str] = ..., healthy: _Optional[bool] = ..., detail: _Optional[str] = ...) -> None: ...

class RunCount(_message.Message):
    __slots__ = ("status", "count")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    status: _common_pb2.RunStatus
    count: int
    def __init__(self, status: _Optional[_Union[_common_pb2.RunStatus, str]] = ..., count: _Optional[int] = ...) -> None: ...

class GetStatusResponse(_message.Message):
    __slots__ = ("version", "services", "trainers", "runs", "time")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    SERVICES_FIELD_NUMBER: _ClassVar[int]
    TRAINERS_FIELD_NUMBER: _ClassVar[int]
    RUNS_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    version: str
    services: _containers.RepeatedCompositeFieldContainer[ServiceStatus]
    trainers: _containers.RepeatedCompositeFieldContainer[_common_pb2.TrainerInfo]
    runs: _containers.RepeatedCompositeFieldContainer[RunCount]
    time: _timestamp_pb2.Timestamp
    def __init__(self, version: _Optional[str] = ..., services: _Optional[_Iterable[_Union[ServiceStatus, _Mapping]]] = ..., trainers: _Optional[_Iterable[_Union[_common_pb2.TrainerInfo, _Mapping]]] = ..., runs: _Optional[_Iterable[_Union[RunCount, _Mapping]]] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class CreateDatasetRequest(_message.Message):
    __slots__ = ("name", "train", "valid", "test", "max_problems")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TRAIN_FIELD_NUMBER: _ClassVar[int]
    VALID_FIELD_NUMBER: _ClassVar[int]
    TEST_FIELD_NUMBER: _ClassVar[int]
    MAX_PROBLEMS_FIELD_NUMBER: _ClassVar[int]
    name: str
    train: bytes
    valid: bytes
    test: bytes
    max_problems: int
    def __init__(self, name: _Optional[str] = ..., train: _Optional[bytes] = ..., valid: _Optional[bytes] = ..., test: _Optional[bytes] = ..., max_problems: _Optional[int] = ...) -> None: ...

class CreateDatasetResponse(_message.Message):
    __slots__ = ("created", "dataset", "problems")
    CREATED_FIELD_NUMBER: _ClassVar[int]
    DATASET_FIELD_NUMBER: _ClassVar[int]
    PROBLEMS_FIELD_NUMBER: _ClassVar[int]
    created: bool
    dataset: DatasetInfo
    problems: _containers.RepeatedCompositeFieldContainer[DatasetProblem]
    def __init__(self, created: _Optional[bool] = ..., dataset: _Optional[_Union[DatasetInfo, _Mapping]] = ..., problems: _Optional[_Iterable[_Union[DatasetProblem, _Mapping]]] = ...) -> None: ...

class DownloadAdapterRequest(_message.Message):
    __slots__ = ("run_id", "artifact")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    ARTIFACT_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    artifact: str
    def __init__(self, run_id: _Optional[str] = ..., artifact: _Optional[str] = ...) -> None: ...

class DownloadAdapterResponse(_message.Message):
    __slots__ = ("file", "data", "size_bytes")
    FILE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    file: str
    data: bytes
    size_bytes: int
    def __init__(self, file: _Optional[str] = ..., data: _Optional[bytes] = ..., size_bytes: _Optional[int] = ...) -> None: ...

class RecommendRankFromRunRequest(_message.Message):
    __slots__ = ("run_id", "options")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    options: _optimizer_pb2.RecommendRankRequest
    def __init__(self, run_id: _Optional[str] = ..., options: _Optional[_Union[_optimizer_pb2.RecommendRankRequest, _Mapping]] = ...) -> None: ...
