"""Run artifacts in mlx_lm's adapter format (`adapters.safetensors` + `adapter_config.json`), so
`python -m mlx_lm generate --model M --adapter-path RUN_DIR` and `mlx_lm fuse` accept a run dir as is;
plus fusing an adapter into a standalone model dir."""

from __future__ import annotations

import json
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten, tree_unflatten
from mlx_lm.utils import dequantize_model, load, save

from services.common.files import replacing
from services.common.spec import RunSpec

from .errors import ModelError
from .methods import PreparedModel, adapter_config, write_json_atomic

ADAPTER_FILE = "adapters.safetensors"
ADAPTER_CONFIG = "adapter_config.json"


def save_adapter(run_dir: Path, model: nn.Module, spec: RunSpec, prepared: PreparedModel) -> int:
    """Writes the trainable weights and their config atomically; returns the weights' size in bytes."""
    weights = dict(tree_flatten(model.trainable_parameters()))
    with replacing(run_dir / ADAPTER_FILE) as tmp:
        mx.save_safetensors(str(tmp), weights)
    write_json_atomic(run_dir / ADAPTER_CONFIG, adapter_config(spec, prepared))
    return (run_dir / ADAPTER_FILE).stat().st_size


def base_model_of(adapter_dir: Path) -> str:
    config_path = Path(adapter_dir) / ADAPTER_CONFIG
    if not config_path.exists():
        raise ModelError(f"{adapter_dir} has no {ADAPTER_CONFIG}: not a finished run")
    return json.loads(config_path.read_text())["model"]


def fuse(adapter_dir: Path, out_dir: Path, dequantize: bool = False) -> Path:
    """Merge a run's adapter into its base model and save a standalone mlx_lm model dir (as `mlx_lm fuse`)."""
    base = base_model_of(adapter_dir)
    model, tokenizer, config = load(base, adapter_path=str(adapter_dir), return_config=True)
    fused = [(n, m.fuse(dequantize=dequantize)) for n, m in model.named_modules() if hasattr(m, "fuse")]
    if fused:
        model.update_modules(tree_unflatten(fused))
    if dequantize:
        model = dequantize_model(model)
        config.pop("quantization", None)
        config.pop("quantization_config", None)
    save(Path(out_dir), base, model, tokenizer, config, donate_model=False)
    return Path(out_dir)
