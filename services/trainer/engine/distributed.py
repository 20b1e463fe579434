"""Data parallelism on MLX's own `mx.distributed`: how a run's N processes are launched (the environment
`mlx.launch` gives each rank) and what each rank does with its group.

Launching follows mlx/_distributed_utils/launch.py: the ring backend (CPU, Metal) reads MLX_RANK and
MLX_HOSTFILE, a JSON file listing each rank's "ip:port" (one list per rank); NCCL (CUDA) reads MLX_RANK,
MLX_WORLD_SIZE, NCCL_HOST_IP and NCCL_PORT, one GPU per rank through CUDA_VISIBLE_DEVICES. PEFTLAB_DIST_BACKEND
names the backend so a rank never silently falls back to a group of one.

Every rank builds the same global batch on the host (the plan is deterministic) and trains on rows
rank::size of it. Gradients are weighted by each rank's share of the global loss tokens before they are
averaged, so the update equals the one process's on the whole batch (token-weighted mean), not a mean of
per-rank means.
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BACKEND_ENV = "PEFTLAB_DIST_BACKEND"
# What a rank's decision at the top of each step is: all ranks take rank 0's (they must stop together).
GO, CANCEL, EARLY_STOP = 0, 1, 2


def backend_for(device_kind: str) -> str:
    """NCCL between CUDA GPUs, the ring (TCP) everywhere else, as mlx.launch picks by platform."""
    return "nccl" if device_kind == "cuda" else "ring"


def device_kind() -> str:
    import mlx.core as mx

    if mx.default_device() != mx.gpu:
        return "cpu"
    return "cuda" if mx.cuda.is_available() else "apple"


def free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """n ports free on `host` now (bound together, so they differ); the ranks bind them a moment later."""
    sockets = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind((host, 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def rank_environments(
    workers: int, backend: str, workdir: Path, host: str = "127.0.0.1"
) -> list[dict[str, str]]:
    """The environment of each of `workers` local ranks (what mlx.launch exports), the ring's hostfile
    written into `workdir`."""
    if backend == "nccl":
        (port,) = free_ports(1, host)
        return [
            {
                BACKEND_ENV: "nccl",
                "MLX_RANK": str(rank),
                "MLX_WORLD_SIZE": str(workers),
                "NCCL_HOST_IP": host,
                "NCCL_PORT": str(port),
                "CUDA_VISIBLE_DEVICES": str(rank),
            }
            for rank in range(workers)
        ]
    hosts = [[f"{host}:{port}"] for port in free_ports(workers, host)]
    workdir.mkdir(parents=True, exist_ok=True)
    hostfile = workdir / "hostfile.json"
    hostfile.write_text(json.dumps(hosts))
    return [
        {BACKEND_ENV: "ring", "MLX_RANK": str(rank), "MLX_HOSTFILE": str(hostfile)} for rank in range(workers)
    ]


@dataclass
class World:
    """This process's place in a data-parallel run: rank r of `size`, the mx.distributed group."""

    group: Any
    rank: int
    size: int

    @property
    def lead(self) -> bool:
        return self.rank == 0

    def shard(self, array):
        """This rank's rows of a (B, ...) host array."""
        return array[self.rank :: self.size]

    def agree(self, code: int) -> int:
        """Rank 0's decision, on every rank (the others pass GO)."""
        import mlx.core as mx

        out = mx.distributed.all_sum(mx.array(code if self.lead else GO, mx.int32), group=self.group)
        return int(out.item())


def join(workers: int) -> World | None:
    """The group of a run with `workers` processes (None for one), from the launcher's environment."""
    if workers <= 1:
        return None
    import mlx.core as mx

    from .errors import SpecError

    backend = os.environ.get(BACKEND_ENV, "")
    if not backend:
        raise SpecError(
            "workers",
            f"workers={workers} needs {workers} launched processes (peftlab train --workers, or a trainer); "
            f"this one was started alone",
        )
    group = mx.distributed.init(strict=True, backend=backend)
    if group.size() != workers:
        raise SpecError("workers", f"workers={workers} but the {backend} group has {group.size()} processes")
    return World(group, group.rank(), group.size())


def _rank_entry(env: dict[str, str], spec: dict[str, Any], run_dir: str, resume: bool) -> None:
    os.environ.update(env)  # before mx.distributed.init reads it
    from services.common.spec import RunSpec

    from .api import train

    train(RunSpec.from_dict(spec), Path(run_dir), resume=resume)


def start_local_ranks(spec: dict[str, Any], run_dir: Path, resume: bool, workers: int) -> tuple[list, Path]:
    """Launch ranks 1..workers-1 of a run on this machine (spawned processes) and put rank 0's environment
    into this process, which then trains as rank 0: what `peftlab train --workers N` does. Returns the
    processes and the hostfile's dir (the caller removes it)."""
    import multiprocessing
    import tempfile

    workdir = Path(tempfile.mkdtemp(prefix="peftlab-dp-"))
    envs = rank_environments(workers, backend_for(device_kind()), workdir)
    context = multiprocessing.get_context("spawn")
    ranks = [
        context.Process(target=_rank_entry, args=(env, spec, str(run_dir), resume), name=f"rank-{rank}")
        for rank, env in enumerate(envs[1:], start=1)
    ]
    for process in ranks:
        process.start()
    os.environ.update(envs[0])
    return ranks, workdir
