"""The Optimizer gRPC servicer: decode the request, call the pure core, encode the answer.

Domain errors (services/common/errors.py) propagate to the shared interceptor, which maps each to its one
status code (bad requests are INVALID_ARGUMENT naming the field).
"""

from __future__ import annotations

import logging

from peftlab.v1 import optimizer_pb2 as pb
from peftlab.v1 import optimizer_pb2_grpc

from services.common.errors import InvalidArgument

from . import codec
from .batch import recommend_batch_size
from .config import OptimizerConfig
from .rank import recommend_rank
from .schedules import default_space
from .suggest import suggest

log = logging.getLogger(__name__)


class OptimizerServicer(optimizer_pb2_grpc.OptimizerServicer):
    def __init__(self, config: OptimizerConfig):
        self.max_trials = config.max_trials

    def Suggest(self, request: pb.SuggestRequest, context) -> pb.SuggestResponse:
        if len(request.trials) > self.max_trials:
            raise InvalidArgument(
                f"{len(request.trials)} trials; this server accepts at most {self.max_trials} per request",
                field="trials",
            )
        result = suggest(codec.suggest_request_from_proto(request))
        sources = ",".join(sorted({s.source for s in result.suggestions}))
        log.info(
            "suggested",
            extra={"trials": len(request.trials), "n": len(result.suggestions), "source": sources},
        )
        return codec.suggest_response(result)

    def RecommendRank(self, request: pb.RecommendRankRequest, context) -> pb.RecommendRankResponse:
        return codec.rank_response(recommend_rank(codec.rank_request_from_proto(request)))

    def RecommendBatchSize(
        self, request: pb.RecommendBatchSizeRequest, context
    ) -> pb.RecommendBatchSizeResponse:
        return codec.batch_response(recommend_batch_size(codec.batch_request_from_proto(request)))

    def GetDefaultSpace(self, request: pb.GetDefaultSpaceRequest, context) -> pb.GetDefaultSpaceResponse:
        space, schedules = default_space(tuple(request.methods), request.total_steps or 200)
        return codec.default_space_response(space, schedules)
