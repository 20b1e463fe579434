"""What a failed write into a run dir means, in words a person can act on: a full disk is RESOURCE_EXHAUSTED,
a run dir the trainer may not write is FAILED_PRECONDITION, each naming the path and what to do.

MLX's own write errors carry no errno ("[write] Unable to write 8 bytes to file.", "[save_safetensors]
Failed to open file …"), so the file system is asked instead: how much space is left, and can a file be
created there."""

from __future__ import annotations

import errno
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from services.common.errors import FailedPrecondition, ResourceExhausted, ServiceError

FULL = {errno.ENOSPC, errno.EDQUOT}
NOT_WRITABLE = {errno.EROFS, errno.EACCES, errno.EPERM}
MLX_WRITE_FAILURE = re.compile(r"^\[\w+\] (?:Unable to write\b|Failed to open file (\S+))")
# Less free than this after a failed write: the disk was full (the write that failed used the rest).
NEARLY_FULL_BYTES = 64 * 2**20

_AFTER = "then ResumeRun continues from the newest checkpoint"


def mount_point(path: Path) -> Path:
    path = path.resolve()
    while not path.exists() or not os.path.ismount(path):
        path = path.parent
    return path


def disk_full(path: Path, where: Path) -> ResourceExhausted:
    usage = shutil.disk_usage(mount_point(where))
    return ResourceExhausted(
        f"disk full writing {path}: {usage.free // 2**20} MiB of {usage.total // 2**20} MiB free on "
        f"{mount_point(where)}; free space there or point the trainer's runs root (PEFTLAB_RUNS_ROOT) at a "
        f"bigger disk, {_AFTER}"
    )


def not_writable(path: Path, why: str, what: str = "run dir", after: str = _AFTER) -> FailedPrecondition:
    return FailedPrecondition(
        f"{what} not writable: {path} ({why}); make it writable for the trainer's user (uid {os.getuid()}) "
        f"or point its runs root (PEFTLAB_RUNS_ROOT) elsewhere, {after}"
    )


def writable_root_id(root: Path, read_id: Callable[[Path], str]) -> str:
    """The runs root's id (runs_root.py writes it at first use): a root the trainer cannot write stops the
    trainer at start, in words, rather than with a traceback."""
    try:
        return read_id(root)
    except OSError as exc:
        why = exc.strerror or str(exc)
        if exc.errno in FULL:
            raise disk_full(Path(exc.filename or root), root) from None
        raise not_writable(root, why, "runs root", "then start the trainer again") from None


def check_writable(run_dir: Path) -> None:
    """Before a run starts: its dir exists (or can be made) and takes a file."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=run_dir):
            pass
    except OSError as exc:  # named by the run dir: the probe file's name means nothing to a person
        if exc.errno in FULL:
            raise disk_full(run_dir, run_dir) from None
        raise not_writable(run_dir, exc.strerror or str(exc)) from None


def explain(exc: BaseException, run_dir: Path) -> ServiceError | None:
    """The status of a write that failed inside a run, or None when `exc` is not a failed write."""
    if isinstance(exc, OSError):
        return _from_os_error(exc, run_dir)
    match = MLX_WRITE_FAILURE.match(str(exc)) if isinstance(exc, RuntimeError) else None
    if match is None:
        return None
    path = Path(match.group(1)) if match.group(1) else run_dir
    if shutil.disk_usage(mount_point(run_dir)).free < NEARLY_FULL_BYTES:
        return disk_full(path, run_dir)
    try:
        check_writable(run_dir)
    except ServiceError as refused:
        return refused
    return None


def _from_os_error(exc: OSError, run_dir: Path) -> ServiceError | None:
    path = Path(exc.filename) if exc.filename else run_dir
    if exc.errno in FULL:
        return disk_full(path, run_dir)
    if exc.errno in NOT_WRITABLE:
        return not_writable(path, exc.strerror or str(exc))
    return None
