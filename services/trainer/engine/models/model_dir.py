"""Writing an mlx_lm model dir atomically: into a temp dir beside the destination, renamed into place at the
end, so a killed conversion never leaves half a model where `mlx_lm.load` would find it."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import mlx.core as mx

from services.common.files import replacing_dir


def write_model_dir(
    dest: Path, config: dict, weights: dict[str, mx.array], add_tokenizer: Callable[[Path], None]
) -> Path:
    with replacing_dir(dest, shared=True) as tmp:
        mx.save_safetensors(str(tmp / "model.safetensors"), weights, metadata={"format": "mlx"})
        (tmp / "config.json").write_text(json.dumps(config, indent=2))
        add_tokenizer(tmp)
    return dest
