"""`Client`: the gateway's API as Python calls, for notebooks and scripts (and the CLI and the web UI).

    from services.client import Client
    client = Client()                      # PEFTLAB_GATEWAY, PEFTLAB_API_TOKEN, PEFTLAB_TLS_* or the defaults
    run = client.submit(model="tiny-llama", method="lora", iters=50)
    for event in client.watch(run.id):     # resumable: reconnects from the last event it saw
        ...
    client.get(run.id).metrics

Every method returns the gateway's protobuf messages (peftlab.v1) and raises one `GatewayError` subclass per
gRPC status code (services/client/errors.py).
"""

from __future__ import annotations

import io
import time
import zipfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from peftlab.v1 import comparator_pb2, gateway_pb2, gateway_pb2_grpc, optimizer_pb2, trainer_pb2
from peftlab.v1.common_pb2 import Placement, Run, RunEvent, RunSpec, RunStatus

from services.client.connection import Connection
from services.client.errors import GatewayError, UnavailableError, from_rpc_error

TERMINAL_RUN = frozenset(
    RunStatus.Value(f"RUN_STATUS_{name}") for name in ("SUCCEEDED", "FAILED", "CANCELLED")
)
ACTIVE_EXPERIMENT = comparator_pb2.EXPERIMENT_STATUS_RUNNING
STREAM_TIMEOUT_S = 7 * 24 * 3600.0  # a watch lasts as long as the run: no practical deadline
_RECONNECT = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED)


def run_spec(spec: RunSpec | Mapping[str, Any] | None = None, **fields: Any) -> RunSpec:
    """A RunSpec from a message, a mapping of its fields, and/or keyword fields (which win); only the fields
    given are set, the rest keep the engine's defaults. An unknown field name is a ValueError naming it."""
    from services.common.codec import fill

    out = RunSpec()
    if isinstance(spec, RunSpec):
        out.CopyFrom(spec)
    values = {**(dict(spec) if isinstance(spec, Mapping) else {}), **fields}
    known = RunSpec.DESCRIPTOR.fields_by_name
    unknown = sorted(k for k in values if k not in known)
    if unknown:
        raise ValueError(f"unknown RunSpec field(s): {', '.join(unknown)}")
    return fill(out, values)


class Client:
    """A connection to one gateway. Cheap to create; one channel, closed by `close()` or a `with` block."""

    def __init__(
        self,
        address: str | None = None,
        *,
        token: str | None = None,
        tls_ca: str | Path | None = None,
        tls_cert: str | Path | None = None,
        tls_key: str | Path | None = None,
        timeout: float = 30.0,
        connection: Connection | None = None,
    ):
        self.connection = connection or Connection.from_env(
            address, token, tls_ca=tls_ca, tls_cert=tls_cert, tls_key=tls_key
        )
        self.timeout = timeout
        self.channel = self.connection.channel()
        self.stub = gateway_pb2_grpc.GatewayStub(self.channel)

    @property
    def address(self) -> str:
        return self.connection.address

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- plumbing: every call carries the token and a deadline; failures become typed errors ----

    def call(self, method: str, request: Any, timeout: float | None = None) -> Any:
        """One unary RPC of the Gateway service by name, e.g. `call("GetRun", GetRunRequest(run_id=...))`."""
        try:
            return getattr(self.stub, method)(
                request, timeout=timeout or self.timeout, metadata=self.connection.metadata
            )
        except grpc.RpcError as exc:
            raise from_rpc_error(exc, method) from None

    def stream(self, method: str, request: Any, timeout: float = STREAM_TIMEOUT_S) -> Iterator[Any]:
        """The responses of one server-streaming RPC; the call is cancelled when the iterator is closed."""
        responses = getattr(self.stub, method)(request, timeout=timeout, metadata=self.connection.metadata)
        try:
            yield from responses
        except grpc.RpcError as exc:
            raise from_rpc_error(exc, method) from None
        finally:
            responses.cancel()

    def healthy(self, timeout: float = 2.0) -> tuple[bool, str]:
        """Whether the gateway answers its health check (no token needed), and why not."""
        try:
            reply = health_pb2_grpc.HealthStub(self.channel).Check(
                health_pb2.HealthCheckRequest(), timeout=timeout
            )
        except grpc.RpcError as exc:
            return False, exc.code().name
        serving = reply.status == health_pb2.HealthCheckResponse.SERVING
        return serving, "" if serving else health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)

    # ---- runs ----

    def submit(
        self,
        spec: RunSpec | Mapping[str, Any] | None = None,
        *,
        name: str = "",
        labels: Mapping[str, str] | None = None,
        device: str = "",
        trainer: str = "",
        **fields: Any,
    ) -> Run:
        """Submit a run: a RunSpec, a dict of its fields, or keyword fields (`model=`, `method=`, `iters=`...).
        It is QUEUED until a trainer has a free slot, or PLACED on one at once."""
        request = gateway_pb2.SubmitRunRequest(
            spec=run_spec(spec, **fields),
            name=name,
            labels=dict(labels or {}),
            placement=Placement(device=device, trainer_id=trainer),
        )
        return self.call("SubmitRun", request).run

    def get(self, run_id: str) -> Run:
        return self.call("GetRun", trainer_pb2.GetRunRequest(run_id=run_id)).run

    def runs(self, statuses: Iterable[int | str] = (), limit: int = 20, experiment_id: str = "") -> list[Run]:
        """Runs, newest first; `statuses` as RunStatus values or names ("running", "RUN_STATUS_QUEUED")."""
        request = trainer_pb2.ListRunsRequest(
            page_size=limit, statuses=[status_value(s) for s in statuses], experiment_id=experiment_id
        )
        return list(self.call("ListRuns", request).runs)

    def queue_position(self, run_id: str) -> tuple[int, int]:
        """(place, length) of a QUEUED run in the gateway's first-come queue: (1, 3) is next of three waiting;
        (0, n) when it is not queued."""
        queued = self.runs([RunStatus.Value("RUN_STATUS_QUEUED")], limit=500)
        order = [r.id for r in sorted(queued, key=lambda r: (r.created_at.ToNanoseconds(), r.id))]
        return (order.index(run_id) + 1 if run_id in order else 0), len(order)

    def watch(self, run_id: str, after_event_id: str = "", reconnect_s: float = 60.0) -> Iterator[RunEvent]:
        """The run's events (steps, evals, logs, statuses...) as they happen, oldest first, until the run ends.
        Resumable: pass the last event's id as `after_event_id`; a gateway that goes away for less than
        `reconnect_s` is reconnected to from the last event seen."""
        after = after_event_id
        lost_since = 0.0
        while True:
            request = trainer_pb2.WatchRunRequest(run_id=run_id, after_event_id=after)
            try:
                for response in self.stream("WatchRun", request):
                    after, lost_since = response.event.id, 0.0
                    yield response.event
                return
            except GatewayError as error:
                if error.code not in _RECONNECT:
                    raise
                lost_since = lost_since or time.monotonic()
                if time.monotonic() - lost_since > reconnect_s:
                    raise
                time.sleep(1.0)  # a gateway restarting: retry from the last event

    def wait(self, run_id: str) -> Run:
        """Block until the run ends; the run as recorded then."""
        for _ in self.watch(run_id):
            pass
        return self.get(run_id)

    def cancel(self, run_id: str, reason: str = "") -> Run:
        """Ask a run to stop: a running one checkpoints first, then becomes CANCELLED."""
        return self.call("CancelRun", trainer_pb2.CancelRunRequest(run_id=run_id, reason=reason)).run

    def resume(self, run_id: str) -> Run:
        """Resume a FAILED, CANCELLED or LOST run from its newest checkpoint."""
        return self.call("ResumeRun", trainer_pb2.ResumeRunRequest(run_id=run_id)).run

    def generate(
        self,
        prompt: str,
        *,
        run_id: str = "",
        model: str = "",
        max_tokens: int = 128,
        temperature: float = 0.0,
        timeout: float = 300.0,
    ) -> Iterator[str]:
        """Text pieces as the trainer generates them: with a run's adapter (`run_id`), or a base `model`."""
        request = trainer_pb2.GenerateRequest(prompt=prompt, max_tokens=max_tokens, temperature=temperature)
        if run_id:
            request.run_id = run_id
        else:
            request.model = model
        for response in self.stream("Generate", request, timeout=timeout):
            if response.text:
                yield response.text

    def evaluate(
        self,
        run_id: str,
        split: str = "test",
        task_samples: int = 0,
        max_batches: int = 0,
        timeout: float = 900,
    ) -> trainer_pb2.EvaluateResponse:
        request = trainer_pb2.EvaluateRequest(
            run_id=run_id, split=split, task_samples=task_samples, max_batches=max_batches
        )
        return self.call("Evaluate", request, timeout)

    def download_adapter(self, run_id: str, artifact: str = "adapter") -> dict[str, bytes]:
        """A finished run's files, {file name: bytes}: "adapter" (mlx_lm format), "fused" (an mlx_lm model dir)
        or "gguf" (model.gguf and its Ollama Modelfile); the last two are exported on first request, which
        takes minutes for a large model."""
        files: dict[str, io.BytesIO] = {}
        request = gateway_pb2.DownloadAdapterRequest(run_id=run_id, artifact=artifact)
        for chunk in self.stream("DownloadAdapter", request, 120.0 if artifact == "adapter" else 1800.0):
            files.setdefault(chunk.file, io.BytesIO()).write(chunk.data)
        return {name: data.getvalue() for name, data in files.items()}

    def download_adapter_zip(self, run_id: str, artifact: str = "adapter") -> bytes:
        """download_adapter's files as one zip archive, under `<run_id>/`."""
        archive = io.BytesIO()
        with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
            for name, data in self.download_adapter(run_id, artifact).items():
                zf.writestr(f"{run_id}/{name}", data)
        return archive.getvalue()

    # ---- experiments: comparisons and studies ----

    def compare(
        self,
        methods: Iterable[str] = ("lora", "dora", "qlora", "full"),
        *,
        base: RunSpec | Mapping[str, Any] | None = None,
        seeds: Iterable[int] = (0,),
        name: str = "",
        request: comparator_pb2.StartComparisonRequest | None = None,
        **fields: Any,
    ) -> comparator_pb2.Experiment:
        """Start a comparison: one arm per method over `seeds`, on `base` (and keyword RunSpec fields); or send
        a full StartComparisonRequest (arms with their own overrides, a torch backend, a time budget)."""
        if request is None:
            request = comparator_pb2.StartComparisonRequest(
                name=name,
                base=run_spec(base, **fields),
                arms=[comparator_pb2.ComparisonArm(name=m, overrides=RunSpec(method=m)) for m in methods],
                seeds=list(seeds),
            )
        return self.call("StartComparison", request).experiment

    def study(
        self,
        space: optimizer_pb2.SearchSpace | Mapping[str, Any] | None = None,
        *,
        n_trials: int = 12,
        parallelism: int = 1,
        objective: str = "best_valid_loss",
        maximize: bool = False,
        base: RunSpec | Mapping[str, Any] | None = None,
        name: str = "",
        seed: int = 0,
        request: comparator_pb2.StartStudyRequest | None = None,
        **fields: Any,
    ) -> comparator_pb2.Experiment:
        """Start a hyperparameter study over `space` (a SearchSpace, or its JSON form as a dict; None = the
        comparator's default space), or send a full StartStudyRequest (several objectives, pruning)."""
        if request is None:
            from google.protobuf import json_format

            direction = optimizer_pb2.StudyObjective
            request = comparator_pb2.StartStudyRequest(
                name=name,
                base=run_spec(base, **fields),
                n_trials=n_trials,
                parallelism=parallelism,
                objectives=[
                    direction(
                        name=objective, direction=direction.MAXIMIZE if maximize else direction.MINIMIZE
                    )
                ],
                seed=seed,
            )
            if isinstance(space, optimizer_pb2.SearchSpace):
                request.space.CopyFrom(space)
            elif space is not None:
                json_format.ParseDict(dict(space), request.space)
        return self.call("StartStudy", request).experiment

    def experiment(self, experiment_id: str) -> comparator_pb2.Experiment:
        request = comparator_pb2.GetExperimentRequest(experiment_id=experiment_id)
        return self.call("GetExperiment", request).experiment

    def experiments(self, limit: int = 20) -> list[comparator_pb2.Experiment]:
        request = comparator_pb2.ListExperimentsRequest(page_size=limit)
        return list(self.call("ListExperiments", request).experiments)

    def watch_experiment(
        self, experiment_id: str, after_event_id: str = "", reconnect_s: float = 60.0
    ) -> Iterator[comparator_pb2.ExperimentEvent]:
        """The experiment's events (runs submitted and finished, trials, statuses) until it ends, from the start
        or after `after_event_id`; re-attaches to a running experiment after a restart of either side."""
        after = after_event_id
        lost_since = 0.0
        while True:
            request = comparator_pb2.WatchExperimentRequest(experiment_id=experiment_id, after_event_id=after)
            try:
                for response in self.stream("WatchExperiment", request):
                    after, lost_since = response.event.id, 0.0
                    yield response.event
            except GatewayError as error:
                if error.code not in (*_RECONNECT, grpc.StatusCode.DEADLINE_EXCEEDED):
                    raise
                lost_since = lost_since or time.monotonic()
                if time.monotonic() - lost_since > reconnect_s:
                    raise
            # The stream ended or broke: done once the experiment has; else a comparator restarted.
            try:
                if self.experiment(experiment_id).status != ACTIVE_EXPERIMENT:
                    return
            except UnavailableError:
                if time.monotonic() - (lost_since or time.monotonic()) > reconnect_s:
                    raise
            time.sleep(1.0)

    def wait_experiment(self, experiment_id: str) -> comparator_pb2.Experiment:
        for _ in self.watch_experiment(experiment_id):
            pass
        return self.experiment(experiment_id)

    def cancel_experiment(self, experiment_id: str) -> comparator_pb2.Experiment:
        request = comparator_pb2.CancelExperimentRequest(experiment_id=experiment_id)
        return self.call("CancelExperiment", request).experiment

    def report(self, experiment_id: str, timeout: float = 300.0) -> comparator_pb2.Report:
        """The experiment's report (partial while it runs): rows with means and 95% intervals, paired tests,
        plots as PNG, and the same as Markdown, HTML and JSON."""
        request = comparator_pb2.GetReportRequest(experiment_id=experiment_id)
        return self.call("GetReport", request, timeout).report

    # ---- the system and its catalog ----

    def status(self) -> gateway_pb2.GetStatusResponse:
        return self.call("GetStatus", gateway_pb2.GetStatusRequest())

    def models(self) -> list[gateway_pb2.ModelInfo]:
        return list(self.call("ListModels", gateway_pb2.ListModelsRequest()).models)

    def datasets(self) -> list[gateway_pb2.DatasetInfo]:
        return list(self.call("ListDatasets", gateway_pb2.ListDatasetsRequest()).datasets)

    def hardware(self) -> list[gateway_pb2.TrainerHardware]:
        return list(self.call("ListHardware", gateway_pb2.ListHardwareRequest()).hardware)


def status_value(status: int | str) -> int:
    """A RunStatus value from a value or a name in any case ("running", "RUN_STATUS_RUNNING")."""
    if isinstance(status, int):
        return status
    key = str(status).strip().upper()
    key = key if key.startswith("RUN_STATUS_") else f"RUN_STATUS_{key}"
    if key not in RunStatus.keys() or key == "RUN_STATUS_UNSPECIFIED":
        valid = ", ".join(n.removeprefix("RUN_STATUS_").lower() for n in RUN_STATUSES)
        raise ValueError(f"unknown run status {status!r}; valid: {valid}")
    return RunStatus.Value(key)


RUN_STATUSES = tuple(n for n in RunStatus.keys() if n != "RUN_STATUS_UNSPECIFIED")
