"""Where the gateway is and how to reach it: address, bearer token and TLS, from arguments or the same
environment the services read (PEFTLAB_GATEWAY, PEFTLAB_API_TOKEN or PEFTLAB_API_TOKEN_FILE, PEFTLAB_TLS_CA,
PEFTLAB_TLS_CERT, PEFTLAB_TLS_KEY)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import grpc

from services.common import transport
from services.common.transport import TransportConfig

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
        # The services' own transport (one TLS code path): this connection's CA and client pair, and the
        # certificate name the services expect (PEFTLAB_TLS_SERVER_NAME) from the environment.
        settings = TransportConfig(
            tls_cert=self.tls_cert,
            tls_key=self.tls_key,
            tls_ca=self.tls_ca,
            tls_server_name=transport.config().tls_server_name if self.tls_ca else "",
        )
        return transport.channel(self.address, options, settings)
