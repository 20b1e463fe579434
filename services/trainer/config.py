"""The trainer service's configuration (PEFTLAB_* environment variables)."""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path

from services.common import paths
from services.common.config import RedisConfig, env_field, load_config
from services.trainer.address import advertised_host, format_address


@dataclass
class TrainerConfig(RedisConfig):
    host: str = env_field(
        "127.0.0.1", "Interface to listen on (0.0.0.0 for other machines).", "PEFTLAB_TRAINER_HOST"
    )
    port: int = env_field(50052, "Port to listen on; 0 = any free port.", "PEFTLAB_TRAINER_PORT")
    advertise: str = env_field(
        "",
        "host:port others reach this trainer at; default host:port, or with host 0.0.0.0 the address of the "
        "interface that routes to Redis (services/trainer/address.py).",
        "PEFTLAB_TRAINER_ADVERTISE",
    )
    trainer_id: str = env_field("", "Registry id; default '<hostname>-<port>' (stable across restarts).")
    slots: int = env_field(1, "Runs executed at once.", "PEFTLAB_TRAINER_SLOTS")
    heartbeat_interval: float = env_field(2.0, "Seconds between heartbeats.")
    heartbeat_ttl: float = env_field(10.0, "Registry entry lifetime without a heartbeat, seconds.")
    models_root: Path = env_field(None, "Model dirs; default var/models.")
    data_root: Path = env_field(None, "Dataset dirs; default var/data.")
    runs_root: Path = env_field(None, "Run dirs; default var/runs.")
    cancel_grace: float = env_field(60.0, "Seconds a cancelled run gets to checkpoint before it is killed.")
    shutdown_grace: float = env_field(30.0, "Seconds running work gets to checkpoint on SIGTERM.")
    generate_slots: int = env_field(2, "Generate/Evaluate calls served at once (each in its own process).")
    max_workers: int = env_field(32, "gRPC worker threads for unary calls (watches hold none).")
    max_streams: int = env_field(2000, "Open server streams at most; the next gets RESOURCE_EXHAUSTED.")
    run_memory_limit_mb: int = env_field(
        0,
        "Address-space cap (RLIMIT_AS) on each run's process, MiB; 0 = none.",
        "PEFTLAB_TRAINER_RUN_MEMORY_LIMIT_MB",
    )
    memory_retries: int = env_field(
        3, "Times a run that ran out of memory resumes with half the micro-batch before it fails."
    )
    crash_retries: int = env_field(3, "Times a killed or crashed run process resumes before the run fails.")
    recovery_backoff: float = env_field(
        1.0, "Seconds before the first automatic resume of a dead run process; doubled each time."
    )
    log_level: str = env_field("INFO", "Log level.")
    log_format: str = env_field("text", "text (key=value) or json.")

    def __post_init__(self) -> None:
        self.models_root = Path(self.models_root or paths.models_dir())
        self.data_root = Path(self.data_root or paths.data_dir())
        self.runs_root = Path(self.runs_root or paths.runs_dir())

    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def advertised(self, port: int) -> str:
        """What the registry says to reach us at: never a loopback address when listening on all interfaces."""
        if self.advertise:
            return self.advertise
        return format_address(advertised_host(self.host, self.redis_url), port)

    def resolved_id(self, port: int) -> str:
        return self.trainer_id or f"{socket.gethostname()}-{port}"


def load() -> TrainerConfig:
    return load_config(TrainerConfig)
