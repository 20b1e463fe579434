import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from peftlab.v1 import common_pb2 as _common_pb2
from peftlab.v1 import optimizer_pb2 as _optimizer_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ExperimentKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EXPERIMENT_KIND_UNSPECIFIED: _ClassVar[ExperimentKind]
    EXPERIMENT_KIND_COMPARISON: _ClassVar[ExperimentKind]
    EXPERIMENT_KIND_STUDY: _ClassVar[ExperimentKind]

class ExperimentStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EXPERIMENT_STATUS_UNSPECIFIED: _ClassVar[ExperimentStatus]
    EXPERIMENT_STATUS_RUNNING: _ClassVar[ExperimentStatus]
    EXPERIMENT_STATUS_SUCCEEDED: _ClassVar[ExperimentStatus]
    EXPERIMENT_STATUS_FAILED: _ClassVar[ExperimentStatus]
    EXPERIMENT_STATUS_CANCELLED: _ClassVar[ExperimentStatus]
EXPERIMENT_KIND_UNSPECIFIED: ExperimentKind
EXPERIMENT_KIND_COMPARISON: ExperimentKind
EXPERIMENT_KIND_STUDY: ExperimentKind
EXPERIMENT_STATUS_UNSPECIFIED: ExperimentStatus
EXPERIMENT_STATUS_RUNNING: ExperimentStatus
EXPERIMENT_STATUS_SUCCEEDED: ExperimentStatus
EXPERIMENT_STATUS_FAILED: ExperimentStatus
EXPERIMENT_STATUS_CANCELLED: ExperimentStatus

class ComparisonArm(_message.Message):
    __slots__ = ("name", "overrides", "backend")
    NAME_FIELD_NUMBER: _ClassVar[int]
    OVERRIDES_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    name: str
    overrides: _common_pb2.RunSpec
    backend: str
    def __init__(self, name: _Optional[str] = ..., overrides: _Optional[_Union[_common_pb2.RunSpec, _Mapping]] = ..., backend: _Optional[str] = ...) -> None: ...

class StartComparisonRequest(_message.Message):
    __slots__ = ("name", "base", "arms", "seeds", "placement", "time_budget_seconds")
    NAME_FIELD_NUMBER: _ClassVar[int]
    BASE_FIELD_NUMBER: _ClassVar[int]
    ARMS_FIELD_NUMBER: _ClassVar[int]
    SEEDS_FIELD_NUMBER: _ClassVar[int]
    PLACEMENT_FIELD_NUMBER: _ClassVar[int]
    TIME_BUDGET_SECONDS_FIELD_NUMBER: _ClassVar[int]
    name: str
    base: _common_pb2.RunSpec
    arms: _containers.RepeatedCompositeFieldContainer[ComparisonArm]
    seeds: _containers.RepeatedScalarFieldContainer[int]
    placement: _common_pb2.Placement
    time_budget_seconds: float
    def __init__(self, name: _Optional[str] = ..., base: _Optional[_Union[_common_pb2.RunSpec, _Mapping]] = ..., arms: _Optional[_Iterable[_Union[ComparisonArm, _Mapping]]] = ..., seeds: _Optional[_Iterable[int]] = ..., placement: _Optional[_Union[_common_pb2.Placement, _Mapping]] = ..., time_budget_seconds: _Optional[float] = ...) -> None: ...

class StartComparisonResponse(_message.Message):
    __slots__ = ("experiment",)
    EXPERIMENT_FIELD_NUMBER: _ClassVar[int]
    experiment: Experiment
    def __init__(self, experiment: _Optional[_Union[Experiment, _Mapping]] = ...) -> None: ...

class Pruning(_message.Message):
    __slots__ = ("enabled", "min_steps", "warmup_trials", "rule")
    ENABLED_FIELD_NUMBER: _ClassVar[int]
    MIN_STEPS_FIELD_NUMBER: _ClassVar[int]
    WARMUP_TRIALS_FIELD_NUMBER: _ClassVar[int]
    RULE_FIELD_NUMBER: _ClassVar[int]
    enabled: bool
    min_steps: int
    warmup_trials: int
    rule: str
    def __init__(self, enabled: _Optional[bool] = ..., min_steps: _Optional[int] = ..., warmup_trials: _Optional[int] = ..., rule: _Optional[str] = ...) -> None: ...

class StartStudyRequest(_message.Message):
    __slots__ = ("name", "base", "space", "n_trials", "parallelism", "objectives", "pruning", "seed", "placement", "time_budget_seconds")
    NAME_FIELD_NUMBER: _ClassVar[int]
    BASE_FIELD_NUMBER: _ClassVar[int]
    SPACE_FIELD_NUMBER: _ClassVar[int]
    N_TRIALS_FIELD_NUMBER: _ClassVar[int]
    PARALLELISM_FIELD_NUMBER: _ClassVar[int]
    OBJECTIVES_FIELD_NUMBER: _ClassVar[int]
    PRUNING_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    PLACEMENT_FIELD_NUMBER: _ClassVar[int]
    TIME_BUDGET_SECONDS_FIELD_NUMBER: _ClassVar[int]
    name: str
    base: _common_pb2.RunSpec
    space: _optimizer_pb2.SearchSpace
    n_trials: int
    parallelism: int
    objectives: _containers.RepeatedCompositeFieldContainer[_optimizer_pb2.StudyObjective]
    pruning: Pruning
    seed: int
    placement: _common_pb2.Placement
    time_budget_seconds: float
    def __init__(self, name: _Optional[str] = ..., base: _Optional[_Union[_common_pb2.RunSpec, _Mapping]] = ..., space: _Optional[_Union[_optimizer_pb2.SearchSpace, _Mapping]] = ..., n_trials: _Optional[int] = ..., parallelism: _Optional[int] = ..., objectives: _Optional[_Iterable[_Union[_optimizer_pb2.StudyObjective, _Mapping]]] = ..., pruning: _Optional[_Union[Pruning, _Mapping]] = ..., seed: _Optional[int] = ..., placement: _Optional[_Union[_common_pb2.Placement, _Mapping]] = ..., time_budget_seconds: _Optional[float] = ...) -> None: ...

class StartStudyResponse(_message.Message):
    __slots__ = ("experiment",)
    EXPERIMENT_FIELD_NUMBER: _ClassVar[int]
    experiment: Experiment
    def __init__(self, experiment: _Optional[_Union[Experiment, _Mapping]] = ...) -> None: ...

class Experiment(_message.Message):
    __slots__ = ("id", "kind", "name", "status", "created_at", "updated_at", "finished_at", "run_ids", "total_runs", "finished_runs", "comparison", "study", "trials", "error")
    ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_FIELD_NUMBER: _ClassVar[int]
    RUN_IDS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_RUNS_FIELD_NUMBER: _ClassVar[int]
    FINISHED_RUNS_FIELD_NUMBER: _ClassVar[int]
    COMPARISON_FIELD_NUMBER: _ClassVar[int]
    STUDY_FIELD_NUMBER: _ClassVar[int]
    TRIALS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    id: str
    kind: ExperimentKind
    name: str
    status: ExperimentStatus
    created_at: _timestamp_pb2.Timestamp
    updated_at: _timestamp_pb2.Timestamp
    finished_at: _timestamp_pb2.Timestamp
    run_ids: _containers.RepeatedScalarFieldContainer[str]
    total_runs: int
    finished_runs: int
    comparison: StartComparisonRequest
    study: StartStudyRequest
    trials: _containers.RepeatedCompositeFieldContainer[_optimizer_pb2.Trial]
    error: _common_pb2.RunError
    def __init__(self, id: _Optional[str] = ..., kind: _Optional[_Union[ExperimentKind, str]] = ..., name: _Optional[str] = ..., status: _Optional[_Union[ExperimentStatus, str]] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., finished_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., run_ids: _Optional[_Iterable[str]] = ..., total_runs: _Optional[int] = ..., finished_runs: _Optional[int] = ..., comparison: _Optional[_Union[StartComparisonRequest, _Mapping]] = ..., study: _Optional[_Union[StartStudyRequest, _Mapping]] = ..., trials: _Optional[_Iterable[_Union[_optimizer_pb2.Trial, _Mapping]]] = ..., error: _Optional[_Union[_common_pb2.RunError, _Mapping]] = ...) -> None: ...

class GetExperimentRequest(_message.Message):
    __slots__ = ("experiment_id",)
    EXPERIMENT_ID_FIELD_NUMBER: _ClassVar[int]
    experiment_id: str
    def __init__(self, experiment_id: _Optional[str] = ...) -> None: ...

class GetExperimentResponse(_message.Message):
    __slots__ = ("experiment",)
    EXPERIMENT_FIELD_NUMBER: _ClassVar[int]
    experiment: Experiment
    def __init__(self, experiment: _Optional[_Union[Experiment, _Mapping]] = ...) -> None: ...

class ListExperimentsRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListExperimentsResponse(_message.Message):
    __slots__ = ("experiments", "next_page_token")
    EXPERIMENTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    experiments: _containers.RepeatedCompositeFieldContainer[Experiment]
    next_page_token: str
    def __init__(self, experiments: _Optional[_Iterable[_Union[Experiment, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class WatchExperimentRequest(_message.Message):
    __slots__ = ("experiment_id", "after_event_id")
    EXPERIMENT_ID_FIELD_NUMBER: _ClassVar[int]
    AFTER_EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    experiment_id: str
    after_event_id: str
    def __init__(self, experiment_id: _Optional[str] = ..., after_event_id: _Optional[str] = ...) -> None: ...

class ExperimentEvent(_message.Message):
    __slots__ = ("id", "experiment_id", "time", "status", "run_submitted", "run_finished", "trial", "log")
    ID_FIELD_NUMBER: _ClassVar[int]
    EXPERIMENT_ID_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    RUN_SUBMITTED_FIELD_NUMBER: _ClassVar[int]
    RUN_FINISHED_FIELD_NUMBER: _ClassVar[int]
    TRIAL_FIELD_NUMBER: _ClassVar[int]
    LOG_FIELD_NUMBER: _ClassVar[int]
    id: str
    experiment_id: str
    time: _timestamp_pb2.Timestamp
    status: ExperimentStatus
    run_submitted: str
    run_finished: str
    trial: _optimizer_pb2.Trial
    log: str
    def __init__(self, id: _Optional[str] = ..., experiment_id: _Optional[str] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., status: _Optional[_Union[ExperimentStatus, str]] = ..., run_submitted: _Optional[str] = ..., run_finished: _Optional[str] = ..., trial: _Optional[_Union[_optimizer_pb2.Trial, _Mapping]] = ..., log: _Optional[str] = ...) -> None: ...

class WatchExperimentResponse(_message.Message):
    __slots__ = ("event",)
    EVENT_FIELD_NUMBER: _ClassVar[int]
    event: ExperimentEvent
    def __init__(self, event: _Optional[_Union[ExperimentEvent, _Mapping]] = ...) -> None: ...

class CancelExperimentRequest(_message.Message):
    __slots__ = ("experiment_id",)
    EXPERIMENT_ID_FIELD_NUMBER: _ClassVar[int]
    experiment_id: str
    def __init__(self, experiment_id: _Optional[str] = ...) -> None: ...

class CancelExperimentResponse(_message.Message):
    __slots__ = ("experiment",)
    EXPERIMENT_FIELD_NUMBER: _ClassVar[int]
    experiment: Experiment
    def __init__(self, experiment: _Optional[_Union[Experiment, _Mapping]] = ...) -> None: ...

class GetReportRequest(_message.Message):
    __slots__ = ("experiment_id",)
    EXPERIMENT_ID_FIELD_NUMBER: _ClassVar[int]
    experiment_id: str
    def __init__(self, experiment_id: _Optional[str] = ...) -> None: ...

class ReportRow(_message.Message):
    __slots__ = ("label", "run_ids", "mean", "std", "params", "pareto", "ci95", "n", "status", "backend")
    class MeanEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    class StdEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    class ParamsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class Ci95Entry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    LABEL_FIELD_NUMBER: _ClassVar[int]
    RUN_IDS_FIELD_NUMBER: _ClassVar[int]
    MEAN_FIELD_NUMBER: _ClassVar[int]
    STD_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    PARETO_FIELD_NUMBER: _ClassVar[int]
    CI95_FIELD_NUMBER: _ClassVar[int]
    N_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    label: str
    run_ids: _containers.RepeatedScalarFieldContainer[str]
    mean: _containers.ScalarMap[str, float]
    std: _containers.ScalarMap[str, float]
    params: _containers.ScalarMap[str, str]
    pareto: bool
    ci95: _containers.ScalarMap[str, float]
    n: int
    status: str
    backend: str
    def __init__(self, label: _Optional[str] = ..., run_ids: _Optional[_Iterable[str]] = ..., mean: _Optional[_Mapping[str, float]] = ..., std: _Optional[_Mapping[str, float]] = ..., params: _Optional[_Mapping[str, str]] = ..., pareto: _Optional[bool] = ..., ci95: _Optional[_Mapping[str, float]] = ..., n: _Optional[int] = ..., status: _Optional[str] = ..., backend: _Optional[str] = ...) -> None: ...

class ReportFailure(_message.Message):
    __slots__ = ("label", "run_id", "code", "message")
    LABEL_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    label: str
    run_id: str
    code: str
    message: str
    def __init__(self, label: _Optional[str] = ..., run_id: _Optional[str] = ..., code: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class StatTest(_message.Message):
    __slots__ = ("a", "b", "metric", "test", "statistic", "p_value", "effect_size", "p_adjusted", "significant", "n", "mean_difference", "a_only", "b_only")
    A_FIELD_NUMBER: _ClassVar[int]
    B_FIELD_NUMBER: _ClassVar[int]
    METRIC_FIELD_NUMBER: _ClassVar[int]
    TEST_FIELD_NUMBER: _ClassVar[int]
    STATISTIC_FIELD_NUMBER: _ClassVar[int]
    P_VALUE_FIELD_NUMBER: _ClassVar[int]
    EFFECT_SIZE_FIELD_NUMBER: _ClassVar[int]
    P_ADJUSTED_FIELD_NUMBER: _ClassVar[int]
    SIGNIFICANT_FIELD_NUMBER: _ClassVar[int]
    N_FIELD_NUMBER: _ClassVar[int]
    MEAN_DIFFERENCE_FIELD_NUMBER: _ClassVar[int]
    A_ONLY_FIELD_NUMBER: _ClassVar[int]
    B_ONLY_FIELD_NUMBER: _ClassVar[int]
    a: str
    b: str
    metric: str
    test: str
    statistic: float
    p_value: float
    effect_size: float
    p_adjusted: float
    significant: bool
    n: int
    mean_difference: float
    a_only: int
    b_only: int
    def __init__(self, a: _Optional[str] = ..., b: _Optional[str] = ..., metric: _Optional[str] = ..., test: _Optional[str] = ..., statistic: _Optional[float] = ..., p_value: _Optional[float] = ..., effect_size: _Optional[float] = ..., p_adjusted: _Optional[float] = ..., significant: _Optional[bool] = ..., n: _Optional[int] = ..., mean_difference: _Optional[float] = ..., a_only: _Optional[int] = ..., b_only: _Optional[int] = ...) -> None: ...

class SampleOutcomes(_message.Message):
    __slots__ = ("label", "run_id", "seed", "exact")
    LABEL_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    EXACT_FIELD_NUMBER: _ClassVar[int]
    label: str
    run_id: str
    seed: int
    exact: _containers.RepeatedScalarFieldContainer[bool]
    def __init__(self, label: _Optional[str] = ..., run_id: _Optional[str] = ..., seed: _Optional[int] = ..., exact: _Optional[_Iterable[bool]] = ...) -> None: ...

class Plot(_message.Message):
    __slots__ = ("name", "title", "png", "data_json")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    PNG_FIELD_NUMBER: _ClassVar[int]
    DATA_JSON_FIELD_NUMBER: _ClassVar[int]
    name: str
    title: str
    png: bytes
    data_json: str
    def __init__(self, name: _Optional[str] = ..., title: _Optional[str] = ..., png: _Optional[bytes] = ..., data_json: _Optional[str] = ...) -> None: ...

class Report(_message.Message):
    __slots__ = ("experiment_id", "complete", "rows", "tests", "plots", "markdown", "failures", "notes", "directory", "json", "html", "samples")
    EXPERIMENT_ID_FIELD_NUMBER: _ClassVar[int]
    COMPLETE_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    TESTS_FIELD_NUMBER: _ClassVar[int]
    PLOTS_FIELD_NUMBER: _ClassVar[int]
    MARKDOWN_FIELD_NUMBER: _ClassVar[int]
    FAILURES_FIELD_NUMBER: _ClassVar[int]
    NOTES_FIELD_NUMBER: _ClassVar[int]
    DIRECTORY_FIELD_NUMBER: _ClassVar[int]
    JSON_FIELD_NUMBER: _ClassVar[int]
    HTML_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_FIELD_NUMBER: _ClassVar[int]
    experiment_id: str
    complete: bool
    rows: _containers.RepeatedCompositeFieldContainer[ReportRow]
    tests: _containers.RepeatedCompositeFieldContainer[StatTest]
    plots: _containers.RepeatedCompositeFieldContainer[Plot]
    markdown: str
    failures: _containers.RepeatedCompositeFieldContainer[ReportFailure]
    notes: _containers.RepeatedScalarFieldContainer[str]
    directory: str
    json: str
    html: str
    samples: _containers.RepeatedCompositeFieldContainer[SampleOutcomes]
    def __init__(self, experiment_id: _Optional[str] = ..., complete: _Optional[bool] = ..., rows: _Optional[_Iterable[_Union[ReportRow, _Mapping]]] = ..., tests: _Optional[_Iterable[_Union[StatTest, _Mapping]]] = ..., plots: _Optional[_Iterable[_Union[Plot, _Mapping]]] = ..., markdown: _Optional[str] = ..., failures: _Optional[_Iterable[_Union[ReportFailure, _Mapping]]] = ..., notes: _Optional[_Iterable[str]] = ..., directory: _Optional[str] = ..., json: _Optional[str] = ..., html: _Optional[str] = ..., samples: _Optional[_Iterable[_Union[SampleOutcomes, _Mapping]]] = ...) -> None: ...

class GetReportResponse(_message.Message):
    __slots__ = ("report",)
    REPORT_FIELD_NUMBER: _ClassVar[int]
    report: Report
    def __init__(self, report: _Optional[_Union[Report, _Mapping]] = ...) -> None: ...
