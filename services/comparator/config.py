"""The comparator's configuration (PEFTLAB_* environment variables)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from services.common import paths
from services.common.config import RedisConfig, env_field, load_config


@dataclass
class ComparatorConfig(RedisConfig):
    host: str = env_field("127.0.0.1", "Interface to listen on.", "PEFTLAB_COMPARATOR_HOST")
    port: int = env_field(50054, "Port to listen on; 0 = any free port.", "PEFTLAB_COMPARATOR_PORT")
    gateway_address: str = env_field("127.0.0.1:50051", "host:port of the gateway it submits runs through.")
    optimizer_address: str = env_field("127.0.0.1:50053", "host:port of the optimizer.")
    experiments_root: Path = env_field(None, "Report dirs (<id>/report.md, ...); default var/experiments.")
    models_root: Path = env_field(None, "Model dirs (for the PyTorch backend); default var/models.")
    data_root: Path = env_field(None, "Dataset dirs (for the PyTorch backend); default var/data.")
    poll_interval: float = env_field(1.0, "Seconds between two passes over the experiments it drives.")
    lease_seconds: float = env_field(
        10.0,
        "An experiment's driver holds a lease renewed every pass; a crashed comparator's experiments are "
        "taken over (by a replica or its restart) once it expires.",
    )
    call_timeout: float = env_field(30.0, "Deadline of calls to the gateway and the optimizer, seconds.")
    local_slots: int = env_field(1, "PyTorch-backend runs this comparator executes at once.")
    max_workers: int = env_field(16, "gRPC worker threads for unary calls (watches hold none).")
    max_streams: int = env_field(2000, "Open server streams at most; the next gets RESOURCE_EXHAUSTED.")
    log_level: str = env_field("INFO", "Log level.")
    log_format: str = env_field("text", "text (key=value) or json.")

    def __post_init__(self) -> None:
        self.experiments_root = Path(self.experiments_root or paths.var_dir() / "experiments")
        self.models_root = Path(self.models_root or paths.models_dir())
        self.data_root = Path(self.data_root or paths.data_dir())

    def address(self) -> str:
        return f"{self.host}:{self.port}"


def load() -> ComparatorConfig:
    return load_config(ComparatorConfig)
