"""Which runs root a run dir lives in, across machines: each runs root carries a random id in a file written
once at its top. A shared mount (NFS, SMB, a ReadWriteMany volume) shows every trainer the same file, hence
the same id; two machines' own disks mounted at the same path have different ids, which a path comparison
cannot tell apart (README, "Several machines").
"""

from __future__ import annotations

import os
import secrets
import time
from pathlib import Path

ID_FILE = ".peftlab-runs-root-id"


def runs_root_id(root: Path) -> str:
    """The root's id, created on first use. Two trainers starting at once on one shared root agree: the file
    is created exclusively, and the one that loses the race reads the winner's id."""
    root.mkdir(parents=True, exist_ok=True)
    path = root / ID_FILE
    fresh = f"root-{secrets.token_hex(8)}"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return _read(path)
    with os.fdopen(fd, "w") as out:
        out.write(fresh + "\n")
        out.flush()
        os.fsync(out.fileno())
    return fresh


def _read(path: Path) -> str:
    # The creator may not have written its line yet (another trainer on the shared mount): wait a moment.
    for _ in range(50):
        text = path.read_text().strip()
        if text:
            return text
        time.sleep(0.02)
    raise RuntimeError(
        f"{path} is empty: delete it and restart the trainer (it is written once, at first use)"
    )
