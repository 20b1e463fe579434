"""The optimizer service's configuration (PEFTLAB_* environment variables). It keeps no state: no Redis."""

from __future__ import annotations

from dataclasses import dataclass

from services.common.config import env_field, load_config


@dataclass
class OptimizerConfig:
    host: str = env_field(
        "127.0.0.1", "Interface to listen on (0.0.0.0 for other machines).", "PEFTLAB_OPTIMIZER_HOST"
    )
    port: int = env_field(50053, "Port to listen on; 0 = any free port.", "PEFTLAB_OPTIMIZER_PORT")
    max_trials: int = env_field(
        1000,
        "Most trials one Suggest request may carry (a suggestion takes ~0.1 s of CPU at 200 trials, ~0.5 s "
        "at 1000, ~3 s at 2000).",
        "PEFTLAB_OPTIMIZER_MAX_TRIALS",
    )
    blas_threads: int = env_field(1, "BLAS threads of the GP's linear algebra (1 is fastest under load).")
    max_workers: int = env_field(
        8, "gRPC worker threads (requests computed at once).", "PEFTLAB_OPTIMIZER_MAX_WORKERS"
    )
    suggest_processes: int = env_field(
        0,
        "Processes that compute Suggest (the GP is Python-heavy, so threads of one process share one core); "
        "0 = one per CPU core (at most 4), 1 = in the server process.",
        "PEFTLAB_OPTIMIZER_PROCESSES",
    )
    shutdown_grace: float = env_field(10.0, "Seconds in-flight requests get to finish on SIGTERM.")
    log_level: str = env_field("INFO", "Log level.")
    log_format: str = env_field("text", "text (key=value) or json.")

    def address(self) -> str:
        return f"{self.host}:{self.port}"


def load() -> OptimizerConfig:
    return load_config(OptimizerConfig)
