"""A finished run's adapter as the gateway reads it from the run's dir: its files (DownloadAdapter) and each
adapted layer's update spectrum (RecommendRankFromRun). No gRPC here."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from services.common.errors import FailedPrecondition

ADAPTER_FILES = ("adapter_config.json", "adapters.safetensors")
CHUNK_BYTES = 1 << 20


@dataclass(frozen=True)
class LayerUpdate:
    """One adapted layer: the singular values of its update dW = scale * lora_a @ lora_b."""

    name: str
    in_features: int
    out_features: int
    rank: int
    singular_values: list[float]


def adapter_chunks(run_dir: Path, chunk_bytes: int = CHUNK_BYTES) -> Iterator[tuple[str, bytes, int]]:
    """(file name, chunk, file size) for each adapter file, in order."""
    missing = [name for name in ADAPTER_FILES if not (run_dir / name).is_file()]
    if missing:
        raise FailedPrecondition(f"run dir {run_dir} has no {', '.join(missing)} (the run saved no adapter)")
    for name in ADAPTER_FILES:
        path = run_dir / name
        size = path.stat().st_size
        with open(path, "rb") as fh:
            while chunk := fh.read(chunk_bytes):
                yield name, chunk, size
        if size == 0:
            yield name, b"", 0


def layer_updates(run_dir: Path) -> list[LayerUpdate]:
    """The spectrum of every LoRA/DoRA layer of the adapter in `run_dir` (mlx_lm layout: `<module>.lora_a` is
    in x r, `<module>.lora_b` is r x out, scaled by `lora_parameters.scale`)."""
    from safetensors.numpy import load_file

    from services.common.lora_spectrum import update_singular_values

    config_path, weights_path = (run_dir / name for name in ADAPTER_FILES)
    if not (config_path.is_file() and weights_path.is_file()):
        raise FailedPrecondition(
            f"run dir {run_dir} has no adapter (adapter_config.json, adapters.safetensors)"
        )
    config = json.loads(config_path.read_text())
    scale = float((config.get("lora_parameters") or {}).get("scale", 1.0))
    weights = load_file(str(weights_path))
    layers = []
    for key in sorted(weights):
        if not key.endswith(".lora_a") or key[: -len("lora_a")] + "lora_b" not in weights:
            continue
        name = key[: -len(".lora_a")]
        a, b = weights[key], weights[f"{name}.lora_b"]
        values = update_singular_values(a, b, scale)
        layers.append(LayerUpdate(name, int(a.shape[0]), int(b.shape[1]), int(a.shape[1]), values.tolist()))
    if not layers:
        method = config.get("peftlab_method") or config.get("fine_tune_type", "?")
        raise FailedPrecondition(
            f"the run's adapter has no LoRA factors (method {method}); probe with lora, dora or qlora",
            "run_id",
        )
    return layers
