"""`peftlab trainer join`: serve a trainer on this machine that joins the shared Redis (ARCHITECTURE.md §6).

It listens where --listen says, advertises an address the gateway can reach (services/trainer/address.py:
never a loopback address when listening on all interfaces), reports its hardware, heartbeats and takes runs.
Token and TLS come from the same PEFTLAB_* variables as every service (PEFTLAB_SERVICE_TOKEN[_FILE],
PEFTLAB_TLS_CERT / _KEY / _CA); the runs root from PEFTLAB_RUNS_ROOT or --runs-root (README, "Several machines").
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def split_host_port(value: str, flag: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"{flag}: want HOST:PORT (e.g. 0.0.0.0:50052), got {value!r}")
    return host.strip("[]") or "0.0.0.0", int(port)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--redis", required=True, metavar="URL", help="the shared Redis, redis://HOST:6379/0")
    parser.add_argument(
        "--listen",
        default="0.0.0.0:50052",
        metavar="HOST:PORT",
        help="where to serve (default 0.0.0.0:50052)",
    )
    parser.add_argument(
        "--advertise",
        default="",
        metavar="HOST:PORT",
        help="the address others reach this trainer at (default: this machine's address towards Redis)",
    )
    parser.add_argument("--slots", type=int, default=1, help="runs executed at once (default 1)")
    parser.add_argument(
        "--id", default="", help="registry id (default <hostname>-<port>, stable across restarts)"
    )
    parser.add_argument("--runs-root", type=Path, help="run dirs: a shared mount, or this machine's own")
    parser.add_argument(
        "--heartbeat-ttl", type=float, help="seconds without a heartbeat before runs are LOST"
    )


def trainer_config(args: argparse.Namespace):
    from services.common.config import load_config
    from services.trainer.config import TrainerConfig

    host, port = split_host_port(args.listen, "--listen")
    if args.advertise:
        split_host_port(args.advertise, "--advertise")
    if args.slots < 1:
        raise argparse.ArgumentTypeError(f"--slots: must be at least 1, got {args.slots}")
    overrides = {"redis_url": args.redis, "host": host, "port": port, "slots": args.slots}
    for name, value in (
        ("advertise", args.advertise),
        ("trainer_id", args.id),
        ("runs_root", args.runs_root),
        ("heartbeat_ttl", args.heartbeat_ttl),
    ):
        if value:
            overrides[name] = value
    return load_config(TrainerConfig, **overrides)


def announce(trainer) -> None:
    from services.common.redis_store import redacted

    record = trainer.registration.record
    hw = record.hardware
    memory = hw.get("total_memory_bytes", 0) / 2**30
    print(
        f"trainer {trainer.id} joined {redacted(trainer.config.redis_url)}: reachable at {record.address}, "
        f"{trainer.config.slots} slot(s), {hw.get('device_kind', '?')} ({hw.get('device_name', '?')}, "
        f"{memory:.1f} GiB), runs root {record.runs_root}",
        flush=True,
    )


def main(args: argparse.Namespace) -> int:
    import redis

    from services.common.redis_store import redacted
    from services.trainer import server
    from services.trainer.address import NoReachableAddress

    try:
        config = trainer_config(args)
        redis.Redis.from_url(config.redis_url, socket_connect_timeout=5).ping()
        config.advertised(config.port or 1)  # fail now, not after binding, when nothing can be advertised
    except (argparse.ArgumentTypeError, NoReachableAddress, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except redis.RedisError as exc:
        print(f"error: cannot reach Redis at {redacted(args.redis)}: {exc}", file=sys.stderr)
        return 2
    server.main(config, announce=announce)
    return 0
