"""Writing a file or a dir so that a reader (or a crash) sees the old content or the new, never half of it.

Each writes beside its destination (so the rename stays on one filesystem), flushes what it wrote to disk,
then renames it into place; a block that raises leaves the destination as it was and no temp behind.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def write_atomic(path: str | Path, content: str | bytes) -> Path:
    """Write `content` (text as UTF-8, newlines as given) over `path`."""
    with replacing(path) as tmp:
        tmp.write_bytes(content.encode() if isinstance(content, str) else content)
    return Path(path)


@contextmanager
def replacing(path: str | Path) -> Iterator[Path]:
    """A temp path beside `path` for the block (or a library's saver) to write; renamed over `path` when the
    block ends. The temp keeps `path`'s suffix (savers such as `mx.save_safetensors` add theirs when it is
    missing) and the process id (two processes writing the same file do not share a temp)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp{path.suffix}")
    try:
        yield tmp
        _fsync(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextmanager
def replacing_dir(path: str | Path, shared: bool = False) -> Iterator[Path]:
    """A temp dir beside `path` for the block to fill; when the block ends its files are flushed, an old
    `path` is removed and the temp dir renamed into place (readable by all, as a model dir is shared).

    The temp is `.NAME.tmp`, cleared first: one writer at a time, and a killed write's leftover goes with the
    next write. `shared`: several processes may write `path` at once (a model dir under the shared models
    root), so each gets a temp of its own."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if shared:
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    else:
        tmp = path.with_name(f".{path.name}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
    try:
        yield tmp
        for file in tmp.rglob("*"):
            if file.is_file():
                _fsync(file)
        tmp.chmod(0o755)  # mkdtemp makes it private
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def fsync_dir(path: Path) -> None:
    """Flush a dir's entries (a rename into it) to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync(path: Path) -> None:
    with open(path, "rb") as file:
        os.fsync(file.fileno())
