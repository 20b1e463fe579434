"""The Gateway gRPC servicer: decode, call the core (services/gateway/gateway.py) or forward to a trainer
or the comparator, encode. Downstream calls carry the request id and at most the caller's deadline."""

from __future__ import annotations

import dataclasses
import time

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from peftlab.v1 import comparator_pb2_grpc, gateway_pb2, gateway_pb2_grpc, optimizer_pb2, trainer_pb2

from services.common import codec, transport
from services.common.config import peftlab_version
from services.common.errors import InvalidArgument
from services.common.experiment_rules import check_arm_names, check_seeds
from services.common.interceptors import downstream_timeout, outgoing_metadata
from services.common.messages import placement_from_proto
from services.common.redis_store import redacted
from services.common.run_rpcs import get_run, list_runs_async, watch_run
from services.common.status_names import run_status_value
from services.common.validation import check_evaluation, check_generation, check_id, check_range
from services.common.watch import AsyncRedis
from services.gateway import adapters
from services.gateway.gateway import Gateway, check_placement
from services.gateway.placement import may_wait_for_a_trainer, waiting_reason
from services.gateway.trainers import CHANNEL_OPTIONS, Channels, comparator_stub, optimizer_stub


class GatewayServicer(gateway_pb2_grpc.GatewayServicer):
    def __init__(self, gateway: Gateway, channels: Channels):
        self.gateway = gateway
        self.store = gateway.store
        self.config = gateway.config
        self.channels = channels
        self.events = AsyncRedis(self.config.redis_url)
        self._aio_comparator = None

    def _principal(self, context) -> tuple[tuple[str, str], ...]:
        """Who the comparator acts for (the caller) and the grant it may use later for their runs."""
        return self.gateway.principal_of(dict(context.invocation_metadata() or ())).metadata()

    def _caller(self, context) -> str:
        """The user this call is for (who owns the runs it submits, and may cancel or resume them)."""
        return self.gateway.caller_of(dict(context.invocation_metadata() or ()))

    def _comparator(self):
        return comparator_stub(self.channels, self.config.comparator_address)

    # ---- runs ----

    def SubmitRun(self, request, context):
        record = self.gateway.submit(
            codec.spec_from_proto(request.spec),
            name=request.name,
            placement=placement_from_proto(request.placement),
            labels=dict(request.labels),
            experiment_id=request.experiment_id,
            owner=self._caller(context),
        )
        return gateway_pb2.SubmitRunResponse(run=codec.run_to_proto(record))

    async def GetRun(self, request, context):
        # A coroutine on the server's loop: no hop to the unary pool and back (bench/load.py: GetRun p99).
        record = await get_run(self.events, self.store, request.run_id)
        run = codec.run_to_proto(record)
        if may_wait_for_a_trainer(record):  # queued or resuming, unplaced: reads the trainer registry
            # On the loop too: a hop to a pool thread and back would wait on the interpreter lock twice.
            trainers = await self.store.list_trainers_async(self.events.client())
            run.waiting = waiting_reason(record, trainers)
        return trainer_pb2.GetRunResponse(run=run)

    async def ListRuns(self, request, context):
        return await list_runs_async(self.events, self.store, request)

    async def WatchRun(self, request, context):
        async for response in watch_run(self.events, self.store, request):
            yield response

    def CancelRun(self, request, context):
        record = self.gateway.cancel(request.run_id, request.reason, self._caller(context))
        return trainer_pb2.CancelRunResponse(run=codec.run_to_proto(record))

    def ResumeRun(self, request, context):
        record = self.gateway.resume(request.run_id, self._caller(context))
        return trainer_pb2.ResumeRunResponse(run=codec.run_to_proto(record))

    def Evaluate(self, request, context):
        check_evaluation(request.split, request.max_batches, request.task_samples)
        trainer = self.gateway.trainer_for_run(request.run_id)
        stub = self.gateway.trainers.stub(trainer.address)
        timeout = downstream_timeout(context, self.config.stream_timeout)
        return stub.Evaluate(request, timeout=timeout, metadata=outgoing_metadata())

    def Generate(self, request, context):
        check_generation(request.prompt, request.max_tokens, request.temperature)
        if request.WhichOneof("source") == "run_id":
            trainer = self.gateway.trainer_for_run(request.run_id)
        else:
            self.gateway.check_model(request.model)
            trainer = self.gateway.any_trainer()
        stub = self.gateway.trainers.stub(trainer.address)
        timeout = downstream_timeout(context, self.config.stream_timeout)
        responses = stub.Generate(request, timeout=timeout, metadata=outgoing_metadata())
        try:
            yield from responses
        finally:
            responses.cancel()  # the caller left: stop the trainer's generation too

    # ---- models, datasets, trainers ----

    def ListModels(self, request, context):
        models = [gateway_pb2.ModelInfo(**dataclasses.asdict(m)) for m in self.gateway.list_models()]
        return gateway_pb2.ListModelsResponse(models=models, root=str(self.gateway.roots.models))

    def ListDatasets(self, request, context):
        datasets = [
            codec.fill(gateway_pb2.DatasetInfo(), dataclasses.asdict(d)) for d in self.gateway.list_datasets()
        ]
        return gateway_pb2.ListDatasetsResponse(datasets=datasets, root=str(self.gateway.roots.data))

    def ValidateDataset(self, request, context):
        valid, info, problems = self.gateway.validate_dataset(
            request.path, request.max_problems, _mapping(request)
        )
        return gateway_pb2.ValidateDatasetResponse(
            valid=valid,
            dataset=codec.fill(gateway_pb2.DatasetInfo(), dataclasses.asdict(info)),
            problems=[gateway_pb2.DatasetProblem(**dataclasses.asdict(p)) for p in problems],
        )

    def PreviewDataset(self, request, context):
        rows, total, model = self.gateway.preview_dataset(
            request.path, request.split, request.rows, request.model, _mapping(request)
        )
        return gateway_pb2.PreviewDatasetResponse(
            rows=[gateway_pb2.PreviewRow(**dataclasses.asdict(r)) for r in rows],
            total_rows=total,
            model=model,
        )

    def ListTrainers(self, request, context):
        return gateway_pb2.ListTrainersResponse(
            trainers=[codec.trainer_to_proto(t) for t in self.store.list_trainers()]
        )

    def ListHardware(self, request, context):
        return gateway_pb2.ListHardwareResponse(
            hardware=[
                gateway_pb2.TrainerHardware(
                    trainer_id=t.id, address=t.address, hardware=codec.hardware_to_proto(t.hardware)
                )
                for t in self.store.list_trainers()
            ]
        )

    def GetStatus(self, request, context):
        response = gateway_pb2.GetStatusResponse(version=peftlab_version())
        response.time.FromMilliseconds(int(time.time() * 1000))
        redis_ok = self.store.ping()
        response.services.add(name="gateway", address=self.config.address(), healthy=True)
        response.services.add(
            name="redis",
            address=redacted(self.config.redis_url),
            healthy=redis_ok,
            detail="" if redis_ok else "no PONG",
        )
        for name, address in (
            ("comparator", self.config.comparator_address),
            ("optimizer", self.config.optimizer_address),
        ):
            healthy, detail = self._health(address)
            response.services.add(name=name, address=address, healthy=healthy, detail=detail)
        if redis_ok:
            response.trainers.extend(codec.trainer_to_proto(t) for t in self.store.list_trainers())
            for status, count in self.store.count_by_status().items():
                response.runs.add(status=run_status_value(status), count=count)
        return response

    def CreateDataset(self, request, context):
        files = {"train": request.train, "valid": request.valid, "test": request.test}
        user = self.gateway.caller_of(dict(context.invocation_metadata() or ()))
        info, problems = self.gateway.create_dataset(request.name, files, request.max_problems, user)
        response = gateway_pb2.CreateDatasetResponse(
            created=info is not None,
            problems=[gateway_pb2.DatasetProblem(**dataclasses.asdict(p)) for p in problems],
        )
        if info is not None:
            codec.fill(response.dataset, dataclasses.asdict(info))
        return response

    def DownloadAdapter(self, request, context):
        artifact = request.artifact or "adapter"
        if artifact not in adapters.ARTIFACTS:
            raise InvalidArgument(
                f"must be one of {', '.join(adapters.ARTIFACTS)}, got {artifact!r}", "artifact"
            )
        run_dir = self.gateway.adapter_dir(request.run_id)
        for name, chunk, size in adapters.adapter_chunks(run_dir, artifact=artifact):
            yield gateway_pb2.DownloadAdapterResponse(file=name, data=chunk, size_bytes=size)

    # ---- sizing a run: forwarded to the optimizer ----

    def _optimizer(self):
        return optimizer_stub(self.channels, self.config.optimizer_address)

    def RecommendBatchSize(self, request, context):
        timeout = downstream_timeout(context, self.config.trainer_timeout)
        return self._optimizer().RecommendBatchSize(request, timeout=timeout, metadata=outgoing_metadata())

    def GetDefaultSpace(self, request, context):
        timeout = downstream_timeout(context, self.config.trainer_timeout)
        return self._optimizer().GetDefaultSpace(request, timeout=timeout, metadata=outgoing_metadata())

    def RecommendRankFromRun(self, request, context):
        if len(request.options.layers):
            raise InvalidArgument(
                "must be empty: the gateway reads the layers from the run", "options.layers"
            )
        forwarded = optimizer_pb2.RecommendRankRequest()
        forwarded.CopyFrom(request.options)
        for layer in adapters.layer_updates(self.gateway.adapter_dir(request.run_id)):
            forwarded.layers.add(
                name=layer.name,
                in_features=layer.in_features,
                out_features=layer.out_features,
                rank=layer.rank,
                singular_values=layer.singular_values,
            )
        timeout = downstream_timeout(context, self.config.trainer_timeout)
        return self._optimizer().RecommendRank(forwarded, timeout=timeout, metadata=outgoing_metadata())

    def _health(self, address: str) -> tuple[bool, str]:
        try:
            reply = health_pb2_grpc.HealthStub(self.channels.get(address)).Check(
                health_pb2.HealthCheckRequest(), timeout=1.0
            )
        except grpc.RpcError as exc:
            return False, exc.code().name
        serving = reply.status == health_pb2.HealthCheckResponse.SERVING
        return serving, "" if serving else health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)

    # ---- experiments: checked here, run by the comparator ----

    def _unary(self, method: str, request, context):
        timeout = downstream_timeout(context, self.config.trainer_timeout)
        return getattr(self._comparator(), method)(
            request, timeout=timeout, metadata=outgoing_metadata(self._principal(context))
        )

    def StartComparison(self, request, context):
        check_arm_names([arm.name for arm in request.arms])
        check_seeds(request.seeds)
        check_placement(placement_from_proto(request.placement))
        self.gateway.check_experiment_base(
            codec.spec_from_proto(request.base, "base"),
            [codec.spec_fields(arm.overrides) for arm in request.arms],
        )
        return self._unary("StartComparison", request, context)

    def StartStudy(self, request, context):
        check_range(request.n_trials, 1, 1000, "n_trials")
        check_range(request.parallelism, 0, request.n_trials, "parallelism")
        check_placement(placement_from_proto(request.placement))
        self.gateway.check_experiment_base(codec.spec_from_proto(request.base, "base"), [])
        return self._unary("StartStudy", request, context)

    def GetExperiment(self, request, context):
        check_id(request.experiment_id, "experiment_id")
        return self._unary("GetExperiment", request, context)

    def ListExperiments(self, request, context):
        check_range(request.page_size, 0, 500, "page_size")
        return self._unary("ListExperiments", request, context)

    def CancelExperiment(self, request, context):
        check_id(request.experiment_id, "experiment_id")
        return self._unary("CancelExperiment", request, context)

    def GetReport(self, request, context):
        check_id(request.experiment_id, "experiment_id")
        return self._unary("GetReport", request, context)

    async def WatchExperiment(self, request, context):
        """Forwarded over an asyncio channel: the wait for the comparator's next event holds no thread."""
        check_id(request.experiment_id, "experiment_id")
        if self._aio_comparator is None:  # made here, inside the server's event loop that it belongs to
            self._aio_comparator = comparator_pb2_grpc.ComparatorStub(
                transport.aio_channel(self.config.comparator_address, CHANNEL_OPTIONS)
            )
        timeout = downstream_timeout(context, self.config.stream_timeout)
        responses = self._aio_comparator.WatchExperiment(
            request, timeout=timeout, metadata=outgoing_metadata(self._principal(context))
        )
        try:
            async for response in responses:
                yield response
        finally:
            responses.cancel()


def _mapping(request) -> dict[str, str]:
    """ValidateDataset's and PreviewDataset's column mapping (RunSpec's field names)."""
    return {
        name: getattr(request, name)
        for name in ("prompt_field", "completion_field", "messages_field", "system_field")
    }
