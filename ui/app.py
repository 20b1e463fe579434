"""The Streamlit UI (placeholder until the UI issue): the system's status and recent runs, read from the
gateway, the UI's only backend (PEFTLAB_GATEWAY, PEFTLAB_API_TOKEN)."""

from __future__ import annotations

import os

import grpc
import streamlit as st
from peftlab.v1 import common_pb2, gateway_pb2, gateway_pb2_grpc, trainer_pb2

GATEWAY = os.environ.get("PEFTLAB_GATEWAY", "127.0.0.1:50051")
TOKEN = os.environ.get("PEFTLAB_API_TOKEN", "")


@st.cache_resource
def gateway() -> gateway_pb2_grpc.GatewayStub:
    return gateway_pb2_grpc.GatewayStub(grpc.insecure_channel(GATEWAY))


def call(method: str, request):
    metadata = (("authorization", f"Bearer {TOKEN}"),) if TOKEN else ()
    return getattr(gateway(), method)(request, timeout=5, metadata=metadata)


st.set_page_config(page_title="peftlab", layout="wide")
st.title("peftlab")
st.caption(
    f"gateway {GATEWAY} · the full UI arrives with its own issue; `peftlab` and grpcurl work meanwhile"
)


@st.fragment(run_every=5)
def overview() -> None:
    try:
        status = call("GetStatus", gateway_pb2.GetStatusRequest())
        runs = call("ListRuns", trainer_pb2.ListRunsRequest(page_size=20)).runs
    except grpc.RpcError as exc:
        st.error(f"gateway unreachable: {exc.code().name}: {exc.details()}")
        return
    st.subheader("services")
    st.table(
        [
            {"service": s.name, "address": s.address, "healthy": s.healthy, "detail": s.detail}
            for s in status.services
        ]
    )
    st.subheader("trainers")
    st.table(
        [
            {
                "id": t.id,
                "device": f"{t.hardware.device_kind}: {t.hardware.device_name}",
                "slots": f"{t.busy_slots}/{t.slots}",
                "runs": ", ".join(t.run_ids),
            }
            for t in status.trainers
        ]
    )
    st.subheader("recent runs")
    st.table(
        [
            {
                "id": r.id,
                "name": r.name,
                "status": common_pb2.RunStatus.Name(r.status).removeprefix("RUN_STATUS_"),
                "step": f"{r.progress.step}/{r.progress.total_steps}",
                "loss": round(r.progress.train_loss, 4),
                "trainer": r.trainer_id,
            }
            for r in runs
        ]
    )


overview()
