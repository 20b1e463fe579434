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


ARTIFACTS = ("adapter", "fused", "gguf")
EXPORT_TIMEOUT_S = 900


def ensure_export(run_dir: Path) -> Path:
    """The run's export dir (fused model, GGUF, Modelfile), written on first use by the engine's exporter in a
    child process, so the gateway never loads MLX itself."""
    import subprocess
    import sys

    export = run_dir / "export"
    if (export / "model.gguf").is_file() and (export / "Modelfile").is_file():
        return export
    done = subprocess.run(
        [sys.executable, "-m", "services.trainer.engine.export", str(run_dir)],
        capture_output=True,
        text=True,
        timeout=EXPORT_TIMEOUT_S,
    )
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["exporter failed"])[-1]
        raise FailedPrecondition(f"cannot export run dir {run_dir}: {last[:300]}", "artifact")
    return export


def artifact_files(run_dir: Path, artifact: str) -> list[tuple[str, Path]]:
    """(name in the download, path) of each file of one artifact of a finished run."""
    if artifact == "adapter":
        missing = [name for name in ADAPTER_FILES if not (run_dir / name).is_file()]
        if missing:
            raise FailedPrecondition(
                f"run dir {run_dir} has no {', '.join(missing)} (the run saved no adapter)"
            )
        return [(name, run_dir / name) for name in ADAPTER_FILES]
    export = ensure_export(run_dir)
    if artifact == "fused":
        return [(f"fused/{p.name}", p) for p in sorted((export / "fused").iterdir()) if p.is_file()]
    return [("model.gguf", export / "model.gguf"), ("Modelfile", export / "Modelfile")]


def adapter_chunks(
    run_dir: Path, chunk_bytes: int = CHUNK_BYTES, artifact: str = "adapter"
) -> Iterator[tuple[str, bytes, int]]:
    """(file name, chunk, file size) for each file of the artifact, in order."""
    for name, path in artifact_files(run_dir, artifact):
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
