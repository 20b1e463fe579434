"""Writing an mlx_lm model dir atomically: into a temp dir beside the destination, renamed into place at the
end, so a killed conversion never leaves half a model where `mlx_lm.load` would find it."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import mlx.core as mx


def write_model_dir(
    dest: Path, config: dict, weights: dict[str, mx.array], add_tokenizer: Callable[[Path], None]
) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        mx.save_safetensors(str(tmp / "model.safetensors"), weights, metadata={"format": "mlx"})
        (tmp / "config.json").write_text(json.dumps(config, indent=2))
        add_tokenizer(tmp)
        tmp.chmod(0o755)  # mkdtemp makes it private; a model dir is meant to be shared
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest
