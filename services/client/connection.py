"""Where the gateway is and how to reach it: address, bearer token and TLS, from arguments or the same
environment the services read (PEFTLAB_GATEWAY, PEFTLAB_API_TOKEN or PEFTLAB_API_TOKEN_FILE, PEFTLAB_TLS_CA,
PEFTLAB_TLS_CERT, PEFTLAB_TLS_KEY)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import grpc

DEFAULT_GATEWAY = "127.0.0.1:50051"
MAX_MESSAGE_BYTES = 64 << 20  # reports carry their plots as PNGs


@dataclass(frozen=True)
class Connection:
    """How to reach one gateway. With `tls_ca` the channel is TLS, verified against that CA; `tls_cert` and
    `tls_key` add a client certificate (mutual TLS). Without them it is plaintext (loopback, a dev box)."""

    address: str = DEFAULT_GATEWAY
    token: str = ""
    tls_ca: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None

    @classmethod
    def from_env(
        cls,
        address: str | None = None,
        token: str | None = None,
        env: Mapping[str, str] | None = None,
        **tls: Path | str | None,
    ) -> Connection:
        """Arguments first, then the environment, then the defaults."""
        env = os.environ if env is None else env
        if token is None:
            token = env.get("PEFTLAB_API_TOKEN", "").strip()
            token_file = env.get("PEFTLAB_API_TOKEN_FILE", "").strip()
            if not token and token_file:
                try:
                    token = Path(token_file).read_text().strip()
                except OSError as exc:
                    raise ValueError(f"PEFTLAB_API_TOKEN_FILE={token_file}: {exc.strerror}") from None
        paths = {}
        for name in ("tls_ca", "tls_cert", "tls_key"):
            value = tls.get(name) or env.get(f"PEFTLAB_{name.upper()}", "").strip()
            paths[name] = Path(value) if value else None
        if bool(paths["tls_cert"]) != bool(paths["tls_key"]):
            raise ValueError(
                "PEFTLAB_TLS_CERT and PEFTLAB_TLS_KEY go together (a client certificate and its key)"
            )
        if paths["tls_cert"] and not paths["tls_ca"]:
            raise ValueError(
                "a client certificate (PEFTLAB_TLS_CERT) needs PEFTLAB_TLS_CA to verify the gateway"
            )
        return cls(
            address or env.get("PEFTLAB_GATEWAY", "").strip() or DEFAULT_GATEWAY, token.strip(), **paths
        )

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.token}"),) if self.token else ()

    def channel(self) -> grpc.Channel:
        options = [
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ]
        if self.tls_ca is None:
            return grpc.insecure_channel(self.address, options=options)
        credentials = grpc.ssl_channel_credentials(
            root_certificates=_read(self.tls_ca, "PEFTLAB_TLS_CA"),
            private_key=_read(self.tls_key, "PEFTLAB_TLS_KEY") if self.tls_key else None,
            certificate_chain=_read(self.tls_cert, "PEFTLAB_TLS_CERT") if self.tls_cert else None,
        )
        return grpc.secure_channel(self.address, credentials, options=options)


def _read(path: Path, setting: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ValueError(f"{setting}={path}: {exc.strerror}") from None
