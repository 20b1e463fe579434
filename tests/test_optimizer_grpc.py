"""The Optimizer over gRPC: a real server on a free port, health and reflection, a study driven through
Suggest, the other RPCs, and bad requests answered INVALID_ARGUMENT naming the field."""

from __future__ import annotations

import math
import re
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from peftlab.v1 import optimizer_pb2 as pb
from peftlab.v1 import optimizer_pb2_grpc

from services.common.config import load_config
from services.common.interceptors import FIELD_KEY
from services.optimizer import codec
from services.optimizer.config import OptimizerConfig
from services.optimizer.server import SERVICE_NAME, make_server
from services.optimizer.space import Condition, Parameter, SearchSpace
from services.optimizer.trials import Trial, TrialStatus

SPACE = SearchSpace(
    (
        Parameter.categorical("method", ("lora", "dora", "full")),
        Parameter.real("learning_rate", 1e-6, 1e-2, log=True),
        Parameter.integer("rank", 1, 64, log=True, condition=Condition("method", ("lora", "dora"))),
        Parameter.categorical("packing", (True, False)),
    )
)


def loss(p: dict) -> float:
    value = {"lora": 1.0, "dora": 0.95, "full": 1.1}[p["method"]] + 0.1 * (
        math.log10(p["learning_rate"]) + 4
    ) ** 2
    return (
        value
        + (0.02 * (math.log2(p["rank"]) - 3) ** 2 if "rank" in p else 0.0)
        + (0.0 if p["packing"] else 0.05)
    )


@pytest.fixture(scope="module")
def server():
    grpc_server = make_server(OptimizerConfig(host="127.0.0.1", port=0, max_trials=50))
    grpc_server.start()
    yield grpc_server
    grpc_server.stop(grace=1.0)


@pytest.fixture(scope="module")
def channel(server):
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as ch:
        yield ch


@pytest.fixture(scope="module")
def stub(channel):
    return optimizer_pb2_grpc.OptimizerStub(channel)


def test_health_and_reflection(channel):
    health = health_pb2_grpc.HealthStub(channel)
    for service in ("", SERVICE_NAME):
        reply = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
    replies = reflection.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5
    )
    names = {s.name for r in replies for s in r.list_services_response.service}
    assert SERVICE_NAME in names
    # Reflection also serves the file, so grpcurl can describe the messages with no .proto at hand.
    replies = reflection.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(file_containing_symbol="peftlab.v1.SuggestRequest")]),
        timeout=5,
    )
    assert any(r.file_descriptor_response.file_descriptor_proto for r in replies)


def test_a_study_over_grpc_is_deterministic_and_improves(stub):
    trials: list[Trial] = []
    for step in range(14):
        request = pb.SuggestRequest(
            space=codec.space_to_proto(SPACE), trials=[codec.trial_to_proto(t) for t in trials], seed=5
        )
        reply = stub.Suggest(request, timeout=30)
        assert stub.Suggest(request, timeout=30) == reply  # same request + seed => same answer
        (s,) = reply.suggestions
        params = {k: codec.value_from_proto(v, k) for k, v in s.params.items()}
        assert isinstance(params["packing"], bool) and isinstance(params["method"], str)
        assert ("rank" in params) == (params["method"] != "full")
        if s.source == "model":
            assert s.HasField("predicted_mean") and reply.model.length_scales.keys() == {
                "method",
                "learning_rate",
                "rank",
                "packing",
            }
        else:
            assert not s.HasField("predicted_mean")
        trials.append(Trial(params, values={"valid_loss": loss(params)}, trial_id=f"t{step}"))
    assert s.source == "model"
    assert min(t.values["valid_loss"] for t in trials[7:]) < min(t.values["valid_loss"] for t in trials[:7])
    # A batch for three idle trainers, with one trial still running and one failed: all distinct.
    running = codec.trial_to_proto(Trial(trials[-1].params, TrialStatus.RUNNING, trial_id="r"))
    failed = codec.trial_to_proto(Trial(trials[0].params, TrialStatus.FAILED, trial_id="f"))
    reply = stub.Suggest(
        pb.SuggestRequest(
            space=codec.space_to_proto(SPACE),
            trials=[*(codec.trial_to_proto(t) for t in trials), running, failed],
            n=3,
            seed=5,
        ),
        timeout=30,
    )
    assert len({s.SerializeToString(deterministic=True) for s in reply.suggestions}) == 3
    assert list(reply.pareto_front) == [int(np.argmin([t.values["valid_loss"] for t in trials]))]


def _invalid(stub, request) -> tuple[str, str]:
    with pytest.raises(grpc.RpcError) as info:
        stub.Suggest(request, timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, info.value.details()
    return dict(info.value.trailing_metadata()).get(FIELD_KEY, ""), info.value.details()


def test_bad_suggest_requests_are_invalid_argument_naming_the_problem(stub):
    line = pb.SearchSpace(parameters=[pb.Parameter(name="x", float_range=pb.FloatRange(low=0, high=1))])
    ok = {"x": pb.ParameterValue(float_value=0.5)}
    cases = [
        (pb.SuggestRequest(), "space.parameters", "empty"),
        (
            pb.SuggestRequest(
                space=pb.SearchSpace(
                    parameters=[pb.Parameter(name="lr", float_range=pb.FloatRange(low=1, high=0.1))]
                )
            ),
            "space.parameters[lr].low",
            "low (1.0) > high (0.1)",
        ),
        (
            pb.SuggestRequest(space=pb.SearchSpace(parameters=[pb.Parameter(name="y")])),
            "space.parameters[y]",
            "one of",
        ),
        (
            pb.SuggestRequest(
                space=line,
                trials=[
                    pb.Trial(
                        params={**ok, "depth": pb.ParameterValue(int_value=3)}, values={"valid_loss": 1.0}
                    )
                ],
            ),
            "trials[0].params[depth]",
            "unknown parameter 'depth'",
        ),
        (
            pb.SuggestRequest(
                space=line, trials=[pb.Trial(trial_id="run-7", params=ok, values={"valid_loss": math.nan})]
            ),
            "trials[run-7].values[valid_loss]",
            "not a finite number",
        ),
        (pb.SuggestRequest(space=line, n=65), "n", "[1, 64]"),
        (pb.SuggestRequest(space=line, trials=[pb.Trial(params=ok)] * 51), "trials", "at most 50"),
    ]
    for request, field, words in cases:
        got_field, details = _invalid(stub, request)
        assert got_field == field, details
        assert words in details


def test_recommend_rank_over_grpc(stub):
    rng = np.random.default_rng(0)
    layers = []
    for i in range(4):
        # A probe of rank 16 whose update really uses 3 directions, plus a little noise.
        a = rng.normal(size=(64, 16))
        b = np.zeros((16, 48))
        b[:3] = rng.normal(size=(3, 48)) * np.array([[2.0], [1.8], [1.5]])
        b += 0.01 * rng.normal(size=b.shape)
        layers.append(
            pb.AdapterLayer(
                name=f"layers.{i}.q_proj",
                lora_a=a.ravel(),
                lora_b=b.ravel(),
                in_features=64,
                out_features=48,
                rank=16,
                scale=2.0,
            )
        )
    reply = stub.RecommendRank(pb.RecommendRankRequest(layers=layers), timeout=10)
    assert reply.rank == 4 and reply.spectrum_rank <= 3 and not reply.saturated
    assert reply.params_per_rank == 4 * (64 + 48) and len(reply.layers) == 4
    assert "Recommended rank: 4" in reply.explanation
    with pytest.raises(grpc.RpcError) as info:
        stub.RecommendRank(
            pb.RecommendRankRequest(
                layers=[pb.AdapterLayer(name="q", lora_a=[1.0] * 5, in_features=4, out_features=4, rank=2)]
            ),
            timeout=10,
        )
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert dict(info.value.trailing_metadata())[FIELD_KEY] == "layers[q]"


def test_recommend_batch_size_over_grpc(stub):
    shape = pb.ModelShape(
        hidden_size=576, intermediate_size=1536, num_layers=30, num_heads=9, num_kv_heads=3, vocab_size=49152
    )
    reply = stub.RecommendBatchSize(
        pb.RecommendBatchSizeRequest(
            model_shape=shape, method="lora", seq_len=256, memory_budget_gb=8.0, target_effective_batch=64
        ),
        timeout=10,
    )
    assert reply.fits and reply.batch_size >= 1 and reply.batch_size * reply.grad_accumulation >= 64
    assert 0 < reply.predicted_peak_bytes <= 8e9 and reply.largest_fitting_batch >= reply.batch_size
    tiny = stub.RecommendBatchSize(
        pb.RecommendBatchSizeRequest(model_shape=shape, method="full", seq_len=256, memory_budget_gb=0.1),
        timeout=10,
    )
    assert not tiny.fits and tiny.largest_fitting_batch == 0 and "budget" in tiny.explanation
    with pytest.raises(grpc.RpcError) as info:
        stub.RecommendBatchSize(
            pb.RecommendBatchSizeRequest(model_shape=shape, method="prefix", seq_len=256, memory_budget_gb=8),
            timeout=10,
        )
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert dict(info.value.trailing_metadata())[FIELD_KEY] == "method"


def test_default_space_over_grpc(stub):
    reply = stub.GetDefaultSpace(
        pb.GetDefaultSpaceRequest(methods=["lora", "full"], total_steps=500), timeout=10
    )
    space = codec.space_from_proto(reply.space)
    assert space.names[:2] == ["method", "learning_rate"] and "rank" in space.names
    by_method = {s.method: s for s in reply.schedules}
    assert by_method["full"].learning_rate < by_method["lora"].learning_rate
    assert by_method["lora"].warmup_steps == 15 and by_method["full"].warmup_steps == 30
    assert by_method["lora"].schedule == "cosine" and by_method["lora"].reasoning


def test_config_reads_its_port_from_the_environment():
    assert load_config(OptimizerConfig, {}).port == 50053
    assert load_config(OptimizerConfig, {"PEFTLAB_OPTIMIZER_PORT": "6000"}).port == 6000


def test_every_optimizer_proto_field_is_documented():
    field = re.compile(r"^\s*(optional\s+|repeated\s+)?(map<[^>]+>|[\w.]+)\s+\w+\s*=\s*\d+;")
    lines = (
        (Path(__file__).resolve().parents[1] / "protos/peftlab/v1/optimizer.proto").read_text().splitlines()
    )
    for i, line in enumerate(lines):
        if field.match(line):
            assert lines[i - 1].strip().startswith("//"), (
                f"optimizer.proto:{i + 1} has no comment: {line.strip()}"
            )
