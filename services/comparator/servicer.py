"""The Comparator gRPC servicer: decode the request, call the core (services/comparator/experiments.py),
encode the answer. Domain errors go to the shared interceptor, which maps each to its status code."""

from __future__ import annotations

from peftlab.v1 import comparator_pb2 as pb
from peftlab.v1 import comparator_pb2_grpc

from services.common.errors import Unauthenticated
from services.common.identity import CALLER_KEY, GRANT_KEY, Principal, valid_user
from services.common.validation import check_id, check_range
from services.common.watch import AsyncRedis, follow_stream

from . import codec
from .experiments import Comparator
from .state import ExperimentEvent


def principal_of(context) -> Principal:
    """The user the gateway forwards this call for (metadata x-peftlab-caller, with its grant). Callers are
    the gateway only (the service token is checked first); a call that names no user is refused, so the
    comparator never acts for nobody, with rights of its own."""
    metadata = dict(context.invocation_metadata() or ())
    caller = str(metadata.get(CALLER_KEY, ""))
    if not valid_user(caller):
        raise Unauthenticated(
            f"the comparator serves the gateway on a caller's behalf: metadata '{CALLER_KEY}' names no "
            "user; call the gateway instead"
        )
    return Principal(caller, str(metadata.get(GRANT_KEY, "")))


class ComparatorServicer(comparator_pb2_grpc.ComparatorServicer):
    def __init__(self, comparator: Comparator):
        self.comparator = comparator
        self.events = AsyncRedis(comparator.config.redis_url)

    def StartComparison(self, request, context):
        principal = principal_of(context)
        view = self.comparator.start_comparison(codec.comparison_request_from_proto(request), principal)
        return pb.StartComparisonResponse(experiment=codec.experiment_to_proto(view))

    def StartStudy(self, request, context):
        principal = principal_of(context)
        view = self.comparator.start_study(codec.study_request_from_proto(request), principal)
        return pb.StartStudyResponse(experiment=codec.experiment_to_proto(view))

    def GetExperiment(self, request, context):
        principal_of(context)
        check_id(request.experiment_id, "experiment_id")
        return pb.GetExperimentResponse(
            experiment=codec.experiment_to_proto(self.comparator.get(request.experiment_id))
        )

    def ListExperiments(self, request, context):
        principal_of(context)
        check_range(request.page_size, 0, 500, "page_size")
        views, token = self.comparator.list(request.page_size, request.page_token)
        return pb.ListExperimentsResponse(
            experiments=[codec.experiment_to_proto(v) for v in views], next_page_token=token
        )

    async def WatchExperiment(self, request, context):
        """A coroutine: it waits on the experiment's Redis stream, not in a thread."""
        principal_of(context)
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
        caller = principal_of(context).caller
        check_id(request.experiment_id, "experiment_id")
        view = self.comparator.cancel(request.experiment_id, caller)
        return pb.CancelExperimentResponse(experiment=codec.experiment_to_proto(view))

    def GetReport(self, request, context):
        principal_of(context)
        check_id(request.experiment_id, "experiment_id")
        return pb.GetReportResponse(
            report=codec.report_to_proto(self.comparator.report(request.experiment_id))
        )
