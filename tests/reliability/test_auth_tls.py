"""Doors and locks: the internal services answer only holders of the service token (constant-time check,
never logged), health stays open; TLS on servers and clients with a CA this test makes."""

from __future__ import annotations

import datetime
import ipaddress
import logging

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from peftlab.v1 import optimizer_pb2, optimizer_pb2_grpc, trainer_pb2, trainer_pb2_grpc
from service_helpers import start_optimizer, start_trainer

from services.common import transport
from services.common.interceptors import SERVICE_TOKEN_KEY, outgoing_metadata

TOKEN = "svc-7f3a9c1e-not-for-logs"


@pytest.fixture
def env(monkeypatch):
    """Set PEFTLAB_* transport variables for this test only."""

    def set_env(**values: str) -> None:
        for name, value in values.items():
            monkeypatch.setenv(name, value)
        transport.reload()

    yield set_env
    monkeypatch.undo()
    transport.reload()


def _code(rpc, request, **kwargs) -> grpc.StatusCode:
    try:
        rpc(request, **kwargs)
    except grpc.RpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


def test_internal_services_need_the_service_token(env, caplog, redis_url, redis_prefix, chat_data, tmp_path):
    env(PEFTLAB_SERVICE_TOKEN=TOKEN)
    caplog.set_level(logging.DEBUG)
    optimizer = start_optimizer()
    trainer = start_trainer(redis_url, redis_prefix, chat_data.parent, tmp_path / "runs")
    try:
        suggest = optimizer_pb2_grpc.OptimizerStub(optimizer.channel).Suggest
        runs = trainer_pb2_grpc.TrainerStub(trainer.channel).ListRuns
        for rpc, request in (
            (suggest, optimizer_pb2.SuggestRequest()),
            (runs, trainer_pb2.ListRunsRequest()),
        ):
            assert _code(rpc, request, timeout=5) == grpc.StatusCode.UNAUTHENTICATED
            wrong = ((SERVICE_TOKEN_KEY, TOKEN[:-1] + "x"),)
            assert _code(rpc, request, timeout=5, metadata=wrong) == grpc.StatusCode.UNAUTHENTICATED
        # With the token (what the gateway, comparator and trainers send) the call gets through to the service.
        assert _code(suggest, optimizer_pb2.SuggestRequest(), timeout=5, metadata=outgoing_metadata()) in (
            grpc.StatusCode.INVALID_ARGUMENT,
            grpc.StatusCode.OK,
        )
        assert _code(runs, trainer_pb2.ListRunsRequest(), timeout=5, metadata=outgoing_metadata()) == (
            grpc.StatusCode.OK
        )
        # Health stays open for probes.
        health = health_pb2_grpc.HealthStub(trainer.channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert health.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        trainer.stop(0)
        optimizer.stop(0)
    assert TOKEN not in caplog.text and TOKEN[:-1] not in caplog.text


def test_the_service_token_can_come_from_a_file(env, tmp_path):
    path = tmp_path / "token"
    path.write_text(TOKEN + "\n")
    env(PEFTLAB_SERVICE_TOKEN_FILE=str(path))
    assert transport.service_token() == TOKEN


def _make_ca_and_server_cert(directory):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(name("peftlab test CA"))
        .issuer_name(name("peftlab test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name("localhost"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    paths = {"ca": directory / "ca.pem", "cert": directory / "server.pem", "key": directory / "server.key"}
    paths["ca"].write_bytes(ca.public_bytes(pem))
    paths["cert"].write_bytes(cert.public_bytes(pem))
    paths["key"].write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return paths


def test_tls_on_server_and_client_with_a_ca_made_here(env, tmp_path):
    paths = _make_ca_and_server_cert(tmp_path)
    env(
        PEFTLAB_TLS_CERT=str(paths["cert"]),
        PEFTLAB_TLS_KEY=str(paths["key"]),
        PEFTLAB_TLS_CA=str(paths["ca"]),
    )
    optimizer = start_optimizer()
    try:
        address = optimizer.address
        with transport.channel(address) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        # A plaintext client gets no answer from a TLS server.
        with grpc.insecure_channel(address) as plain:
            check = health_pb2_grpc.HealthStub(plain).Check
            assert _code(check, health_pb2.HealthCheckRequest(), timeout=3) == grpc.StatusCode.UNAVAILABLE
        # A client trusting another CA refuses the server.
        other = _make_ca_and_server_cert(
            tmp_path / "other" if (tmp_path / "other").mkdir() is None else tmp_path
        )
        credentials = grpc.ssl_channel_credentials(root_certificates=other["ca"].read_bytes())
        with grpc.secure_channel(address, credentials) as stranger:
            check = health_pb2_grpc.HealthStub(stranger).Check
            assert _code(check, health_pb2.HealthCheckRequest(), timeout=3) == grpc.StatusCode.UNAVAILABLE
    finally:
        optimizer.stop(0)


def test_the_client_library_and_cli_status_speak_tls(env, tmp_path, redis_url, redis_prefix, chat_data):
    from peftlab.v1 import gateway_pb2, gateway_pb2_grpc
    from service_helpers import start_gateway

    from services.cli.status import health
    from services.client.connection import Connection

    paths = _make_ca_and_server_cert(tmp_path)
    env(PEFTLAB_TLS_CERT=str(paths["cert"]), PEFTLAB_TLS_KEY=str(paths["key"]))
    gateway = start_gateway(redis_url, redis_prefix, chat_data.parent, tmp_path / "runs")
    try:
        # peftlab.client: the CA from its own arguments (the environment names no CA here).
        connection = Connection.from_env(address=gateway.address, tls_ca=str(paths["ca"]), env={})
        with connection.channel() as channel:
            reply = gateway_pb2_grpc.GatewayStub(channel).ListModels(
                gateway_pb2.ListModelsRequest(), timeout=10
            )
            assert any(m.name == "tiny-llama" for m in reply.models)
        with Connection.from_env(address=gateway.address, env={}).channel() as plain:
            check = health_pb2_grpc.HealthStub(plain).Check
            assert _code(check, health_pb2.HealthCheckRequest(), timeout=3) == grpc.StatusCode.UNAVAILABLE
        # `peftlab status` probes through the services' transport: TLS once PEFTLAB_TLS_CA is set.
        assert health(gateway.address, timeout=3) == (False, "UNAVAILABLE")
        env(PEFTLAB_TLS_CA=str(paths["ca"]))
        assert health(gateway.address, timeout=10) == (True, "")
    finally:
        gateway.stop(0)
