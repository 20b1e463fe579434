"""The gateway's configuration (PEFTLAB_* environment variables)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from services.common import paths
from services.common.config import RedisConfig, env_field, load_config


@dataclass
class GatewayConfig(RedisConfig):
    host: str = env_field(
        "127.0.0.1", "Interface to listen on (0.0.0.0 for other machines).", "PEFTLAB_GATEWAY_HOST"
    )
    port: int = env_field(50051, "Port to listen on; 0 = any free port.", "PEFTLAB_GATEWAY_PORT")
    api_token: str = env_field(
        "", "When set, every call but health needs 'authorization: Bearer <token>' (the user 'default')."
    )
    api_tokens_file: Path = env_field(
        None, "A file of 'NAME TOKEN' lines, one per user (with or beside api_token); turns auth on."
    )
    max_datasets_per_user: int = env_field(
        200, "Datasets one user may create with CreateDataset; the next is RESOURCE_EXHAUSTED."
    )
    max_upload_bytes_per_user: int = env_field(
        2 << 30, "Bytes of datasets one user may have created with CreateDataset (default 2 GiB)."
    )
    models_root: Path = env_field(None, "Model dirs requests may name; default var/models.")
    data_root: Path = env_field(None, "Dataset dirs requests may name; default var/data.")
    runs_root: Path = env_field(None, "Run dirs; default var/runs.")
    comparator_address: str = env_field("127.0.0.1:50054", "host:port of the comparator.")
    optimizer_address: str = env_field(
        "127.0.0.1:50053", "host:port of the optimizer (status, RecommendBatchSize/Rank)."
    )
    trainer_timeout: float = env_field(
        30.0, "Deadline of unary calls to trainers and the comparator, seconds."
    )
    stream_timeout: float = env_field(
        3600.0, "Deadline of forwarded streams (Generate, WatchExperiment), seconds."
    )
    placement_interval: float = env_field(
        1.0, "Seconds between placement passes when nothing wakes the placer."
    )
    auto_resume: bool = env_field(
        True, "Resume LOST runs (their trainer died or shut down) from their checkpoint."
    )
    max_auto_resumes: int = env_field(3, "A run lost more often than this is FAILED instead.")
    max_workers: int = env_field(64, "gRPC worker threads for unary calls (watches hold none).")
    max_streams: int = env_field(2000, "Open server streams at most; the next gets RESOURCE_EXHAUSTED.")
    log_level: str = env_field("INFO", "Log level.")
    log_format: str = env_field("text", "text (key=value) or json.")

    def __post_init__(self) -> None:
        self.models_root = Path(self.models_root or paths.models_dir())
        self.data_root = Path(self.data_root or paths.data_dir())
        self.runs_root = Path(self.runs_root or paths.runs_dir())

    def address(self) -> str:
        return f"{self.host}:{self.port}"


def load() -> GatewayConfig:
    return load_config(GatewayConfig)
