"""The Comparator gRPC servicer: decode the request, call the core (services/comparator/experiments.py),
encode the answer. Domain errors go to the shared interceptor, which maps each to its status code."""

from __future__ import annotations

from peftlab.v1 import comparator_pb2 as pb
from peftlab.v1 import comparator_pb2_grpc

from services.common.validation import check_id, check_range
from services.common.watch import AsyncRedis, follow_stream

from . import codec
from .experiments import Comparator
from .state import ExperimentEvent


class ComparatorServicer(comparator_pb2_grpc.ComparatorServicer):
    def __init__(self, comparator: Comparator):
        self.comparator = comparator
        self.events = AsyncRedis(comparator.config.redis_url)

    def StartComparison(self, request, context):
        view = self.comparator.start_comparison(codec.comparison_request_from_proto(request))
        return pb.StartComparisonResponse(experiment=codec.experiment_to_proto(view))

    def StartStudy(self, request, context):
        view = self.comparator.start_study(codec.study_request_from_proto(request))
        return pb.StartStudyResponse(experiment=codec.experiment_to_proto(view))

    def GetExperiment(self, request, context):
        check_id(request.experiment_id, "experiment_id")
        return pb.GetExperimentResponse(
            experiment=codec.experiment_to_proto(self.comparator.get(request.experiment_id))
        )

    def ListExperiments(self, request, context):
        check_range(request.page_size, 0, 500, "page_size")
        views, token = self.comparator.list(request.page_size, request.page_token)
        return pb.ListExperimentsResponse(
            experiments=[codec.experiment_to_proto(v) for v in views], next_page_token=token
        )

    async def WatchExperiment(self, request, context):
        """A coroutine: it waits on the experiment's Redis stream, not in a thread."""
        experiment_id = request.experiment_id
        check_id(experiment_id, "experiment_id")
        store = self.comparator.store
        entries = follow_stream(
            self.events,
            store.key(experiment_id),
            store.key(experiment_id, "events"),
            request.after_event_id,
            what=f"experiment {experiment_id!r}",
            field_name="experiment_id",
        )
        async for e in entries:
            event = ExperimentEvent(id=e.id, experiment_id=experiment_id, kind=e.kind, data=e.data)
            yield pb.WatchExperimentResponse(event=codec.event_to_proto(event))

    def CancelExperiment(self, request, context):
        check_id(request.experiment_id, "experiment_id")
        return pb.CancelExperimentResponse(
            experiment=codec.experiment_to_proto(self.comparator.cancel(request.experiment_id))
        )

    def GetReport(self, request, context):
        check_id(request.experiment_id, "experiment_id")
        return pb.GetReportResponse(
            report=codec.report_to_proto(self.comparator.report(request.experiment_id))
        )
