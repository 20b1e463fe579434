"""Every call the UI makes, all of them to the gateway through the Python client (services.client: one
cached Client, so one channel, per gateway and token), cached reads (st.cache_data with a short TTL), and the
client's typed errors turned into a GatewayError that reads as a sentence. Configured by PEFTLAB_GATEWAY
(host:port, default 127.0.0.1:50051), PEFTLAB_API_TOKEN and the client's PEFTLAB_TLS_* settings."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from typing import Any

import grpc
import streamlit as st
from google.protobuf import message_factory
from peftlab.v1 import comparator_pb2, gateway_pb2, optimizer_pb2, trainer_pb2
from peftlab.v1.common_pb2 import Run, RunEvent, RunSpec

from services.client import Client
from services.client import errors as client_errors

DEFAULT_GATEWAY = "127.0.0.1:50051"
READ_TIMEOUT_S = 10.0
WRITE_TIMEOUT_S = 30.0
EVALUATE_TIMEOUT_S = 900.0
GENERATE_TIMEOUT_S = 300.0
LIVE_TTL_S = 2  # runs, status, experiments: pages that follow them refresh every few seconds anyway
CATALOG_TTL_S = 30  # models, datasets, hardware: they change rarely

_METHODS = gateway_pb2.DESCRIPTOR.services_by_name["Gateway"].methods_by_name
_ACTIONS = {  # what a person asked for, for error messages
    "GetStatus": "Reading the system status",
    "SubmitRun": "Starting the run",
    "StartComparison": "Starting the comparison",
    "StartStudy": "Starting the study",
    "ListExperiments": "Listing experiments",
    "GetExperiment": "Reading the experiment",
    "GetReport": "Reading the report",
    "RecommendBatchSize": "Asking the optimizer for a batch size",
    "RecommendRankFromRun": "Asking the optimizer for a rank",
    "GetDefaultSpace": "Asking the optimizer for the default search space",
    "Generate": "Generating",
    "Evaluate": "Evaluating",
    "DownloadAdapter": "Downloading the adapter",
    "CreateDataset": "Saving the dataset",
}


def gateway_address() -> str:
    return os.environ.get("PEFTLAB_GATEWAY", "").strip() or DEFAULT_GATEWAY


def _token() -> str:
    return os.environ.get("PEFTLAB_API_TOKEN", "").strip()


def token_configured() -> bool:
    return bool(_token())


class GatewayError(Exception):
    """A failed gateway call, with a message a person can act on."""

    def __init__(
        self, code: grpc.StatusCode, details: str, method: str, field: str = "", request_id: str = ""
    ):
        self.code = code
        self.details = details
        self.method = method
        self.field = field
        self.request_id = request_id
        self.gateway_down = False
        super().__init__(self.message)

    @property
    def unimplemented(self) -> bool:
        return self.code == grpc.StatusCode.UNIMPLEMENTED

    @property
    def message(self) -> str:
        action = _ACTIONS.get(self.method, f"The call {self.method}")
        code = self.code
        if self.gateway_down:
            return f"Cannot reach the gateway at {gateway_address()}. Is it running? (`make run` starts it.)"
        if code == grpc.StatusCode.UNAUTHENTICATED:
            if not token_configured():
                return "The gateway needs an API token: start the UI with PEFTLAB_API_TOKEN set to the gateway's."
            return "The gateway refused the API token: PEFTLAB_API_TOKEN differs from the gateway's."
        if code == grpc.StatusCode.UNIMPLEMENTED:
            return f"{action}: not supported yet by the service behind the gateway ({self.details})."
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            return f"{action} took too long and was given up; try again."
        if code in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN):
            where = (
                f" (request id {self.request_id}; its traceback is in the gateway's log)"
                if self.request_id
                else ""
            )
            return f"{action} failed inside the service: {self.details}{where}"
        if code == grpc.StatusCode.UNAVAILABLE:
            if "failed to connect" in self.details.lower():  # the gateway's downstream is not listening
                return (
                    f"{action} failed: the gateway cannot reach the service behind it (is it running? "
                    "`make run` starts them all)."
                )
            return f"{action} failed: {self.details}"
        return self.details or f"{action} failed ({code.name})"


def _error(exc: client_errors.GatewayError) -> GatewayError:
    """The client's typed error as the UI's sentence-style one (is the gateway itself down?)."""
    error = GatewayError(exc.code, exc.details, exc.method, exc.field, exc.request_id)
    if exc.code == grpc.StatusCode.UNAVAILABLE:
        error.gateway_down = not gateway_health()[0]
    return error


@st.cache_resource(show_spinner=False)
def _client(address: str, token: str) -> Client:
    # One client (one channel) per gateway and token for the whole server process; it reconnects by itself.
    return Client(address, token=token)


def _gateway() -> Client:
    return _client(gateway_address(), _token())


def _call(method: str, request: Any, timeout: float = READ_TIMEOUT_S) -> Any:
    try:
        return _gateway().call(method, request, timeout)
    except client_errors.GatewayError as exc:
        raise _error(exc) from None


def gateway_health() -> tuple[bool, str]:
    """Whether the gateway answers its health check (no token needed), and why not."""
    return _gateway().healthy(timeout=2)


# ---- cached reads: keyed by gateway, token, method and the serialized request ----


def _request_class(method: str) -> type:
    return message_factory.GetMessageClass(_METHODS[method].input_type)


@st.cache_data(ttl=LIVE_TTL_S, show_spinner=False, max_entries=500)
def _read_live(address: str, token: str, method: str, payload: bytes) -> Any:
    return _call(method, _request_class(method).FromString(payload))


@st.cache_data(ttl=CATALOG_TTL_S, show_spinner=False, max_entries=200)
def _read_catalog(address: str, token: str, method: str, payload: bytes) -> Any:
    return _call(method, _request_class(method).FromString(payload))


def _live(method: str, request: Any) -> Any:
    return _read_live(gateway_address(), _token(), method, request.SerializeToString())


def _catalog(method: str, request: Any) -> Any:
    return _read_catalog(gateway_address(), _token(), method, request.SerializeToString())


def refresh() -> None:
    """Forget cached reads (after a write, or when the person asks to retry)."""
    _read_live.clear()
    _read_catalog.clear()


def status() -> gateway_pb2.GetStatusResponse:
    return _live("GetStatus", gateway_pb2.GetStatusRequest())


def hardware() -> list[gateway_pb2.TrainerHardware]:
    return list(_catalog("ListHardware", gateway_pb2.ListHardwareRequest()).hardware)


def models() -> list[gateway_pb2.ModelInfo]:
    return list(_catalog("ListModels", gateway_pb2.ListModelsRequest()).models)


def datasets() -> list[gateway_pb2.DatasetInfo]:
    return list(_catalog("ListDatasets", gateway_pb2.ListDatasetsRequest()).datasets)


def validate_dataset(path: str, columns: dict[str, str] | None = None) -> gateway_pb2.ValidateDatasetResponse:
    """`columns`: the column mapping by RunSpec's field names (prompt_field, completion_field, ...)."""
    request = gateway_pb2.ValidateDatasetRequest(path=path, max_problems=200, **(columns or {}))
    return _catalog("ValidateDataset", request)


def preview_dataset(
    path: str, split: str = "train", rows: int = 5, model: str = "", columns: dict[str, str] | None = None
) -> gateway_pb2.PreviewDatasetResponse:
    request = gateway_pb2.PreviewDatasetRequest(
        path=path, split=split, rows=rows, model=model, **(columns or {})
    )
    return _catalog("PreviewDataset", request)


def runs(page_size: int = 20, statuses: tuple[int, ...] = (), experiment_id: str = "") -> list[Run]:
    request = trainer_pb2.ListRunsRequest(
        page_size=page_size, statuses=list(statuses), experiment_id=experiment_id
    )
    return list(_live("ListRuns", request).runs)


def run(run_id: str) -> Run:
    return _live("GetRun", trainer_pb2.GetRunRequest(run_id=run_id)).run


def experiments(page_size: int = 20) -> list[comparator_pb2.Experiment]:
    request = comparator_pb2.ListExperimentsRequest(page_size=page_size)
    return list(_live("ListExperiments", request).experiments)


def experiment(experiment_id: str) -> comparator_pb2.Experiment:
    return _live("GetExperiment", comparator_pb2.GetExperimentRequest(experiment_id=experiment_id)).experiment


def report(experiment_id: str) -> comparator_pb2.Report:
    return _live("GetReport", comparator_pb2.GetReportRequest(experiment_id=experiment_id)).report


def recommend_batch_size(
    request: optimizer_pb2.RecommendBatchSizeRequest,
) -> optimizer_pb2.RecommendBatchSizeResponse:
    return _catalog("RecommendBatchSize", request)


# ---- writes and streams: never cached ----


def run_spec(values: Mapping[str, Any]) -> RunSpec:
    """A RunSpec with exactly these fields set (unset fields keep the engine's defaults)."""
    return RunSpec(**{k: v for k, v in values.items() if v is not None})


def submit_run(spec: Mapping[str, Any], name: str = "", labels: Mapping[str, str] | None = None) -> Run:
    request = gateway_pb2.SubmitRunRequest(spec=run_spec(spec), name=name, labels=dict(labels or {}))
    response = _call("SubmitRun", request, WRITE_TIMEOUT_S)
    _read_live.clear()
    return response.run


def cancel_run(run_id: str) -> Run:
    request = trainer_pb2.CancelRunRequest(run_id=run_id, reason="cancelled in the web UI")
    response = _call("CancelRun", request, WRITE_TIMEOUT_S)
    _read_live.clear()
    return response.run


def resume_run(run_id: str) -> Run:
    response = _call("ResumeRun", trainer_pb2.ResumeRunRequest(run_id=run_id), WRITE_TIMEOUT_S)
    _read_live.clear()
    return response.run


def evaluate(
    run_id: str, split: str, task_samples: int, max_batches: int = 0
) -> trainer_pb2.EvaluateResponse:
    request = trainer_pb2.EvaluateRequest(
        run_id=run_id, split=split, task_samples=task_samples, max_batches=max_batches
    )
    return _call("Evaluate", request, EVALUATE_TIMEOUT_S)


def create_dataset(
    name: str, train: bytes, valid: bytes, test: bytes = b""
) -> gateway_pb2.CreateDatasetResponse:
    request = gateway_pb2.CreateDatasetRequest(name=name, train=train, valid=valid, test=test)
    response = _call("CreateDataset", request, WRITE_TIMEOUT_S)
    if response.created:
        _read_catalog.clear()
    return response


def default_space(request: optimizer_pb2.GetDefaultSpaceRequest) -> optimizer_pb2.GetDefaultSpaceResponse:
    """The optimizer's default search space for a study (through the gateway): the one source of it."""
    return _catalog("GetDefaultSpace", request)


def recommend_rank_from_run(run_id: str, train_tokens: int = 0) -> optimizer_pb2.RecommendRankResponse:
    request = gateway_pb2.RecommendRankFromRunRequest(
        run_id=run_id, options=optimizer_pb2.RecommendRankRequest(train_tokens=train_tokens)
    )
    return _call("RecommendRankFromRun", request, WRITE_TIMEOUT_S)


def start_comparison(request: comparator_pb2.StartComparisonRequest) -> comparator_pb2.Experiment:
    response = _call("StartComparison", request, WRITE_TIMEOUT_S)
    _read_live.clear()
    return response.experiment


def start_study(request: comparator_pb2.StartStudyRequest) -> comparator_pb2.Experiment:
    response = _call("StartStudy", request, WRITE_TIMEOUT_S)
    _read_live.clear()
    return response.experiment


def cancel_experiment(experiment_id: str) -> comparator_pb2.Experiment:
    request = comparator_pb2.CancelExperimentRequest(experiment_id=experiment_id)
    response = _call("CancelExperiment", request, WRITE_TIMEOUT_S)
    _read_live.clear()
    return response.experiment


def run_events(
    run_id: str, after_event_id: str = "", wait_s: float = 1.0, limit: int = 5000
) -> list[RunEvent]:
    """The run's events after `after_event_id` that arrive within `wait_s`: a bounded read of WatchRun, whose
    stream would otherwise stay open until the run ends. Pass the last id back to continue."""
    request = trainer_pb2.WatchRunRequest(run_id=run_id, after_event_id=after_event_id)
    stream = _gateway().stream("WatchRun", request, timeout=wait_s)
    events: list[RunEvent] = []
    try:
        for response in stream:
            events.append(response.event)
            if len(events) >= limit:
                break
    except client_errors.DeadlineExceededError:
        pass  # the wait is over: what arrived meanwhile is the answer
    except client_errors.GatewayError as exc:
        raise _error(exc) from None
    finally:
        stream.close()  # cancels the call
    return events


def generate(
    prompt: str, *, run_id: str = "", model: str = "", max_tokens: int = 128, temperature: float = 0.0
) -> Iterator[str]:
    """Text pieces as the trainer generates them, with a run's adapter or from a base model alone. The client
    is taken here, in the page's thread (st.cache_resource needs its context); the call starts at the first
    read, and the pieces may be read from another thread."""
    pieces = _gateway().generate(
        prompt,
        run_id=run_id,
        model=model,
        max_tokens=max_tokens,
        temperature=temperature,
        timeout=GENERATE_TIMEOUT_S,
    )
    return _pieces(pieces)


def _pieces(pieces: Iterator[str]) -> Iterator[str]:
    try:
        yield from pieces
    except client_errors.GatewayError as exc:
        raise GatewayError(exc.code, exc.details, "Generate") from None
    finally:
        pieces.close()


def download_adapter(run_id: str, artifact: str = "adapter") -> bytes:
    """One artifact of a finished run as a zip archive: "adapter" (mlx_lm format), "fused" (an mlx_lm model
    dir) or "gguf" (model.gguf and its Ollama Modelfile); the last two are exported on first request."""
    try:
        return _gateway().download_adapter_zip(run_id, artifact)
    except client_errors.GatewayError as exc:
        raise _error(exc) from None
