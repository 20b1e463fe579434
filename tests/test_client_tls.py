"""The Python client over TLS, against a real gateway that requires client certificates (mutual TLS), with
a CA, server and client certificates this test makes: its own arguments or the PEFTLAB_TLS_* environment,
a refused handshake as UnavailableError, and settings that cannot work as a ValueError before connecting."""

from __future__ import annotations

import datetime
import ipaddress

import pytest
from service_helpers import start_gateway

from services.client import Client
from services.client.errors import UnavailableError
from services.common import transport


def _pki(directory):
    """A CA, a server certificate for localhost/127.0.0.1 and a client certificate, all PEM files."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    pem = serialization.Encoding.PEM

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def signed(subject: str, key, issuer, issuer_key, *extensions):
        builder = (
            x509.CertificateBuilder()
            .subject_name(name(subject))
            .issuer_name(issuer)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
        )
        for extension, critical in extensions:
            builder = builder.add_extension(extension, critical=critical)
        return builder.sign(issuer_key, hashes.SHA256())

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = signed("peftlab client-test CA", ca_key, name("peftlab client-test CA"), ca_key,
                (x509.BasicConstraints(ca=True, path_length=None), True))  # fmt: skip
    paths = {"ca": directory / "ca.pem"}
    paths["ca"].write_bytes(ca.public_bytes(pem))
    san = x509.SubjectAlternativeName(
        [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    )
    for role, extensions in (("server", [(san, False)]), ("client", [])):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = signed(f"peftlab {role}", key, ca.subject, ca_key, *extensions)
        paths[f"{role}_cert"] = directory / f"{role}.pem"
        paths[f"{role}_key"] = directory / f"{role}.key"
        paths[f"{role}_cert"].write_bytes(cert.public_bytes(pem))
        paths[f"{role}_key"].write_bytes(
            key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        )
    return paths


@pytest.fixture
def tls_gateway(monkeypatch, tmp_path, redis_url, redis_prefix, chat_data):
    pki = _pki(tmp_path / "pki")
    for name, value in (("PEFTLAB_TLS_CERT", pki["server_cert"]), ("PEFTLAB_TLS_KEY", pki["server_key"]),
                        ("PEFTLAB_TLS_CA", pki["ca"]), ("PEFTLAB_TLS_CLIENT_AUTH", "1")):  # fmt: skip
        monkeypatch.setenv(name, str(value))
    transport.reload()
    gateway = start_gateway(redis_url, redis_prefix, chat_data.parent, tmp_path / "runs")
    # The server has its credentials; the client below gets only what each case gives it.
    for name in ("PEFTLAB_TLS_CERT", "PEFTLAB_TLS_KEY", "PEFTLAB_TLS_CA", "PEFTLAB_TLS_CLIENT_AUTH"):
        monkeypatch.delenv(name)
    monkeypatch.delenv("PEFTLAB_API_TOKEN", raising=False)
    transport.reload()
    yield gateway.address, pki
    gateway.stop(0)
    monkeypatch.undo()
    transport.reload()


def test_the_client_speaks_mutual_tls_from_arguments_or_the_environment(tls_gateway, monkeypatch, tmp_path):
    address, pki = tls_gateway
    mine = {"tls_ca": pki["ca"], "tls_cert": pki["client_cert"], "tls_key": pki["client_key"]}
    with Client(address, token="", **mine) as client:
        assert "tiny-llama" in {m.name for m in client.models()}

    # The same settings from the environment the services read.
    monkeypatch.setenv("PEFTLAB_TLS_CA", str(pki["ca"]))
    monkeypatch.setenv("PEFTLAB_TLS_CERT", str(pki["client_cert"]))
    monkeypatch.setenv("PEFTLAB_TLS_KEY", str(pki["client_key"]))
    with Client(address, token="") as client:
        assert client.healthy(timeout=10) == (True, "") and client.datasets()
    monkeypatch.delenv("PEFTLAB_TLS_CERT")
    monkeypatch.delenv("PEFTLAB_TLS_KEY")

    # Refused handshakes are UnavailableError: no client certificate for a mutual-TLS gateway, a CA that did
    # not sign the gateway's certificate, plaintext.
    other = _pki(tmp_path / "other")
    for settings in (
        {"tls_ca": pki["ca"]},
        {"tls_ca": other["ca"], "tls_cert": other["client_cert"], "tls_key": other["client_key"]},
    ):
        with Client(address, token="", timeout=5, **settings) as client:
            with pytest.raises(UnavailableError):
                client.models()
    monkeypatch.delenv("PEFTLAB_TLS_CA")
    with Client(address, token="", timeout=5) as client, pytest.raises(UnavailableError):
        client.models()

    # Settings that cannot work say so before any connection.
    with pytest.raises(ValueError, match="PEFTLAB_TLS_CA"):
        Client(address, tls_cert=pki["client_cert"], tls_key=pki["client_key"])
    with pytest.raises(ValueError, match="go together"):
        Client(address, tls_ca=pki["ca"], tls_cert=pki["client_cert"])
