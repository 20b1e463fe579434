"""The comparator's configuration (PEFTLAB_* environment variables)."""

from __future__ import annotations

from dataclasses import dataclass

from services.common.config import RedisConfig, env_field, load_config


@dataclass
class ComparatorConfig(RedisConfig):
    host: str = env_field("127.0.0.1", "Interface to listen on.", "PEFTLAB_COMPARATOR_HOST")
    port: int = env_field(50054, "Port to listen on; 0 = any free port.", "PEFTLAB_COMPARATOR_PORT")
    gateway_address: str = env_field("127.0.0.1:50051", "host:port of the gateway it submits runs through.")
    optimizer_address: str = env_field("127.0.0.1:50053", "host:port of the optimizer.")
    max_workers: int = env_field(16, "gRPC worker threads.")
    log_level: str = env_field("INFO", "Log level.")
    log_format: str = env_field("text", "text (key=value) or json.")

    def address(self) -> str:
        return f"{self.host}:{self.port}"


def load() -> ComparatorConfig:
    return load_config(ComparatorConfig)
