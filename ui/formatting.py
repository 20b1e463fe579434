"""How the UI writes numbers, sizes, durations and statuses."""

from __future__ import annotations

import math
import time

from peftlab.v1 import common_pb2

from services.common.status_names import experiment_status_name, run_status_name, trial_status_name

GB = 10**9
ACTIVE_RUN = {
    common_pb2.RUN_STATUS_QUEUED,
    common_pb2.RUN_STATUS_PLACED,
    common_pb2.RUN_STATUS_RUNNING,
    common_pb2.RUN_STATUS_RESUMING,
}
RESUMABLE_RUN = {common_pb2.RUN_STATUS_FAILED, common_pb2.RUN_STATUS_CANCELLED, common_pb2.RUN_STATUS_LOST}
HAS_ADAPTER = {common_pb2.RUN_STATUS_SUCCEEDED, common_pb2.RUN_STATUS_CANCELLED}
_RUN_COLORS = {
    "QUEUED": "gray",
    "PLACED": "blue",
    "RUNNING": "blue",
    "RESUMING": "blue",
    "SUCCEEDED": "green",
    "FAILED": "red",
    "CANCELLED": "orange",
    "LOST": "orange",
    "COMPLETE": "green",
    "PRUNED": "orange",
}


run_status = run_status_name
experiment_status = experiment_status_name
trial_status = trial_status_name


def badge(status: str) -> str:
    """Markdown for a colored status badge."""
    return f":{_RUN_COLORS.get(status, 'gray')}-badge[{status}]"


def gigabytes(n_bytes: float) -> str:
    if not n_bytes:
        return "-"
    if n_bytes < 10**6:
        return f"{n_bytes / 1e3:.0f} kB"
    if n_bytes < GB:
        return f"{n_bytes / 1e6:.0f} MB"
    return f"{n_bytes / GB:.1f} GB"


def duration(seconds: float) -> str:
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return "-"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m {seconds % 60:02d}s"
    return f"{seconds // 3600}h {seconds % 3600 // 60:02d}m"


def number(value: float, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if abs(value) >= 10**digits:  # a perplexity of 18440, not "1.844e+04"
        return f"{value:,.0f}"
    return f"{value:.{digits}g}"


def age(timestamp) -> str:
    """'12s ago' for a protobuf Timestamp; '-' when unset."""
    if not timestamp.seconds:
        return "-"
    return f"{duration(time.time() - timestamp.ToMilliseconds() / 1000)} ago"


def when(timestamp) -> str:
    if not timestamp.seconds:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(timestamp.seconds))


def device(hardware) -> str:
    kind = {"apple": "Apple GPU (Metal)", "cuda": "NVIDIA GPU (CUDA)", "cpu": "CPU"}.get(
        hardware.device_kind, hardware.device_kind or "?"
    )
    return f"{kind}: {hardware.device_name}" if hardware.device_name else kind
