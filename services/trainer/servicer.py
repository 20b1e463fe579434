"""The Trainer gRPC servicer: decode the request, call the core (services/trainer/trainer.py), encode."""

from __future__ import annotations

from peftlab.v1 import trainer_pb2, trainer_pb2_grpc

from services.common import codec
from services.common.interceptors import call_alive
from services.common.run_rpcs import evaluate_response, list_runs, watch_run
from services.common.validation import check_id
from services.common.watch import AsyncRedis
from services.trainer.trainer import Trainer


class TrainerServicer(trainer_pb2_grpc.TrainerServicer):
    def __init__(self, trainer: Trainer):
        self.trainer = trainer
        self.store = trainer.store
        self.events = AsyncRedis(trainer.config.redis_url)

    def StartRun(self, request, context):
        # A run the gateway placed here runs from its record; the request's copy is not decoded.
        placed = self.trainer.placed_here(request.run_id)
        record = self.trainer.start_run(
            None if placed else codec.spec_from_proto(request.spec),
            run_id=request.run_id,
            name=request.name,
            experiment_id=request.experiment_id,
            labels=dict(request.labels),
        )
        return trainer_pb2.StartRunResponse(run=codec.run_to_proto(record))

    def GetRun(self, request, context):
        check_id(request.run_id, "run_id")
        return trainer_pb2.GetRunResponse(run=codec.run_to_proto(self.store.get_run(request.run_id)))

    def ListRuns(self, request, context):
        return list_runs(self.store, request)

    async def WatchRun(self, request, context):
        async for response in watch_run(self.events, self.store, request):
            yield response

    def CancelRun(self, request, context):
        record = self.trainer.cancel_run(request.run_id, request.reason)
        return trainer_pb2.CancelRunResponse(run=codec.run_to_proto(record))

    def ResumeRun(self, request, context):
        record = self.trainer.resume_run(request.run_id)
        return trainer_pb2.ResumeRunResponse(run=codec.run_to_proto(record))

    def Evaluate(self, request, context):
        out = self.trainer.evaluate(
            request.run_id, request.split, request.max_batches, request.task_samples, call_alive(context)
        )
        return evaluate_response(request.run_id, out)

    def Generate(self, request, context):
        source = request.WhichOneof("source")
        pieces = self.trainer.generate(
            request.prompt,
            run_id=request.run_id if source == "run_id" else "",
            model=request.model if source == "model" else "",
            max_tokens=request.max_tokens,
            temperature=request.temperature,
            is_active=call_alive(context),
        )
        for text in pieces:
            yield trainer_pb2.GenerateResponse(text=text)
        yield trainer_pb2.GenerateResponse(done=True)

    def GetHardware(self, request, context):
        return trainer_pb2.GetHardwareResponse(trainer=codec.trainer_to_proto(self.trainer.info()))
