"""The Comparator gRPC servicer. Its RPCs arrive with the comparator's own issue; until then every one
answers UNIMPLEMENTED (the generated base class's behaviour) while the server is up and healthy."""

from __future__ import annotations

from peftlab.v1 import comparator_pb2_grpc


class ComparatorServicer(comparator_pb2_grpc.ComparatorServicer):
    pass
