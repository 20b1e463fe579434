"""How peftlab's processes reach each other: optional TLS on every server and client, and the service token
the internal services (trainer, optimizer, comparator) require of their callers.

TLS is on when PEFTLAB_TLS_CERT and PEFTLAB_TLS_KEY name a PEM certificate and key: servers listen with
them; clients verify servers against PEFTLAB_TLS_CA (else the system roots) and present the same pair, so
PEFTLAB_TLS_CLIENT_AUTH=1 on a server turns it into mutual TLS. The service token comes from
PEFTLAB_SERVICE_TOKEN or the file PEFTLAB_SERVICE_TOKEN_FILE; it is never logged.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from services.common.config import env_field, load_config


@dataclass
class TransportConfig:
    tls_cert: Path = env_field(None, "PEM certificate chain of this process (TLS on when set with the key).")
    tls_key: Path = env_field(None, "PEM private key of tls_cert.")
    tls_ca: Path = env_field(None, "PEM CA bundle clients verify servers against (default: system roots).")
    tls_client_auth: bool = env_field(False, "Servers require a client certificate signed by tls_ca (mTLS).")
    tls_server_name: str = env_field("", "Name clients expect in server certificates (default: the host).")
    service_token: str = env_field("", "Token the internal services require (x-peftlab-service-token).")
    service_token_file: Path = env_field(None, "File holding the service token (read once, stripped).")

    @property
    def tls(self) -> bool:
        return bool(self.tls_cert and self.tls_key)

    def token(self) -> str:
        if self.service_token:
            return self.service_token
        if self.service_token_file:
            try:
                return Path(self.service_token_file).read_text().strip()
            except OSError as exc:
                raise ValueError(f"PEFTLAB_SERVICE_TOKEN_FILE: cannot read it ({exc.strerror})") from None
        return ""


@functools.cache
def config() -> TransportConfig:
    return load_config(TransportConfig)


def reload() -> None:
    """Forget the cached settings (a test or launcher changed the environment)."""
    config.cache_clear()
    service_token.cache_clear()


@functools.cache
def service_token() -> str:
    return config().token()


def _read(path: Path | None) -> bytes | None:
    if not path:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read TLS file {path}: {exc.strerror}") from None


def server_credentials() -> grpc.ServerCredentials | None:
    c = config()
    if not c.tls:
        return None
    ca = _read(c.tls_ca)
    return grpc.ssl_server_credentials(
        [(_read(c.tls_key), _read(c.tls_cert))],
        root_certificates=ca,
        require_client_auth=bool(c.tls_client_auth and ca),
    )


def channel_credentials(settings: TransportConfig | None = None) -> grpc.ChannelCredentials | None:
    c = settings or config()
    if not (c.tls or c.tls_ca):
        return None
    return grpc.ssl_channel_credentials(
        root_certificates=_read(c.tls_ca),
        private_key=_read(c.tls_key) if c.tls else None,
        certificate_chain=_read(c.tls_cert) if c.tls else None,
    )


def _options(options: Sequence[tuple[str, Any]], settings: TransportConfig) -> list[tuple[str, Any]]:
    name = settings.tls_server_name
    return [*options, ("grpc.ssl_target_name_override", name)] if name else list(options)


def channel(
    address: str, options: Sequence[tuple[str, Any]] = (), settings: TransportConfig | None = None
) -> grpc.Channel:
    """A channel to a peftlab service: TLS when this process (or `settings`, e.g. a client's own arguments)
    is configured for it, else plaintext."""
    settings = settings or config()
    credentials = channel_credentials(settings)
    if credentials is None:
        return grpc.insecure_channel(address, options=list(options))
    return grpc.secure_channel(address, credentials, options=_options(options, settings))


def aio_channel(
    address: str, options: Sequence[tuple[str, Any]] = (), settings: TransportConfig | None = None
) -> grpc.aio.Channel:
    settings = settings or config()
    credentials = channel_credentials(settings)
    if credentials is None:
        return grpc.aio.insecure_channel(address, options=list(options))
    return grpc.aio.secure_channel(address, credentials, options=_options(options, settings))
