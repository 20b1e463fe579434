"""The memory model against the measurement: predicted vs measured peak (mx.get_peak_memory) of the engine's own
`api.train()` for every method, on random-init models of given shapes, on whatever backend MLX has here.

    python -m bench.memory_check --shapes smollm2-135m,llama-1.5b --out DIR

Each case is a short real run (3 steps, compiled step, full rows so the batch is the shape the formula
describes). Prints a markdown table and writes `memory_check.jsonl` (one record per case, with the
prediction's breakdown) under --out, so the model's coefficients can be fitted per backend and dtype.
Needs no model or tokenizer files: the weights are random and the tokenizer is a word-level one built here.
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SHAPES = {
    # SmolLM2-135M (the default model's shape).
    "smollm2-135m": dict(
        hidden_size=576,
        intermediate_size=1536,
        num_hidden_layers=30,
        num_attention_heads=9,
        num_key_value_heads=3,
        head_dim=64,
        vocab_size=49152,
        tie_word_embeddings=True,
    ),
    # ~1.5B Llama (Qwen2.5-1.5B's numbers in a Llama block).
    "llama-1.5b": dict(
        hidden_size=1536,
        intermediate_size=8960,
        num_hidden_layers=28,
        num_attention_heads=12,
        num_key_value_heads=2,
        head_dim=128,
        vocab_size=151936,
        tie_word_embeddings=True,
    ),
    # For a smoke run on a CPU.
    "tiny": dict(
        hidden_size=64,
        intermediate_size=192,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        vocab_size=49152,
        tie_word_embeddings=True,
    ),
}
METHODS = ("lora", "dora", "qlora", "full")
WORDS = 4000  # word-level vocabulary of the generated tokenizer (ids beyond it are simply never seen)


def model_config(shape: dict) -> dict:
    return {
        "model_type": "llama",
        "architectures": ["LlamaForCausalLM"],
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "max_position_embeddings": 4096,
        "rope_traditional": False,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "pad_token_id": 2,
        **shape,
    }


def write_tokenizer(out: Path) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, **{f"w{i}": i + 3 for i in range(WORDS)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.save(str(out / "tokenizer.json"))
    (out / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "tokenizer_class": "PreTrainedTokenizerFast",
                "bos_token": "<s>",
                "eos_token": "</s>",
                "unk_token": "<unk>",
            }
        )
    )


def build_model(name: str, root: Path) -> Path:
    import mlx.core as mx
    from mlx.utils import tree_flatten
    from mlx_lm.models import llama

    from services.trainer.engine.models.model_dir import write_model_dir

    out = root / name
    if out.exists():
        return out
    config = model_config(SHAPES[name])
    mx.random.seed(0)
    model = llama.Model(llama.ModelArgs.from_dict(config))
    # Stored in bf16 (half the disk and load time); the engine casts to the run's compute dtype.
    weights = {k: v.astype(mx.bfloat16) for k, v in tree_flatten(model.parameters())}
    del model
    write_model_dir(out, config, weights, write_tokenizer)
    del weights
    gc.collect()
    mx.clear_cache()
    return out


def write_data(root: Path, seq_len: int, rows: int) -> Path:
    """Text rows longer than seq_len, so every packed row is full and the batch is exactly B x L."""
    out = root / f"text-{seq_len}"
    if out.exists():
        return out
    out.mkdir(parents=True)
    for split, n in (("train", rows), ("valid", 4)):
        with open(out / f"{split}.jsonl", "w") as fh:
            for r in range(n):
                text = " ".join(f"w{(r * 7 + j) % WORDS}" for j in range(seq_len + 8))
                fh.write(json.dumps({"text": text}) + "\n")
    return out


def run_case(
    model: Path, data: Path, method: str, batch: int, seq_len: int, dtype: str, ckpt: bool, work: Path
):
    import mlx.core as mx

    from services.common.spec import RunSpec
    from services.trainer.engine import api

    spec = RunSpec.from_dict(
        dict(
            model=str(model),
            data=str(data),
            method=method,
            iters=3,
            warmup_steps=0,
            batch_size=batch,
            max_seq_length=seq_len,
            eval_every=0,
            save_every=0,
            test_samples=0,
            val_batches=1,
            dtype=dtype,
            grad_checkpoint=ckpt,
            learning_rate=1e-5 if method == "full" else 1e-4,
        )
    )
    gc.collect()
    mx.clear_cache()
    tic = time.perf_counter()
    result = api.train(spec, work / f"{model.name}-{method}-{batch}-{dtype}-{int(ckpt)}-{time.time_ns()}")
    started = [json.loads(line) for line in open(Path(result.run_dir) / "metrics.jsonl")]
    steps = [r for r in started if r.get("kind") == "step"]
    return {
        "predicted_bytes": result.predicted_peak_memory_bytes,
        "measured_bytes": result.peak_memory_bytes,
        "step_peaks": [r["peak_memory_bytes"] for r in steps],
        "tokens_per_second": result.tokens_per_second,
        "seconds": time.perf_counter() - tic,
        "backend": result.backend,
    }


def breakdown(model: Path, method: str, batch: int, seq_len: int, dtype: str, ckpt: bool) -> dict:
    import mlx.core as mx

    from services.common.memory import predict_for_model, spec_dtype_bytes
    from services.common.spec import RunSpec

    config = json.loads((model / "config.json").read_text())
    spec = RunSpec.from_dict(
        dict(
            model=str(model),
            method=method,
            batch_size=batch,
            max_seq_length=seq_len,
            dtype=dtype,
            grad_checkpoint=ckpt,
        )
    )
    dtype_bytes = spec_dtype_bytes(spec, gpu=mx.default_device() == mx.gpu)
    return predict_for_model(spec, config, method == "qlora", dtype_bytes=dtype_bytes).to_dict()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shapes", default="smollm2-135m,llama-1.5b")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--batches", default="2,8", help="micro-batch sizes (two give the per-token slope)")
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--dtypes", default="auto", help="compute dtypes, e.g. auto,float32")
    parser.add_argument("--checkpointing", action="store_true", help="also lora with grad_checkpoint")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "peftlab-memory-check")
    parser.add_argument("--out", type=Path, default=None, help="dir for memory_check.jsonl (default: none)")
    args = parser.parse_args(argv)

    import mlx.core as mx

    args.work.mkdir(parents=True, exist_ok=True)
    batches = [int(b) for b in args.batches.split(",")]
    data = write_data(args.work, args.seq_len, rows=max(batches) * 8)
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    device = str(mx.default_device())
    if mx.default_device() == mx.gpu:
        device = str(mx.device_info().get("device_name", device))
    print(
        f"memory check: mlx {mx.__version__}, {device}, {platform.node()}, commit {commit or '?'}, seq {args.seq_len}"
    )
    print("| shape | method | dtype | ckpt | batch | predicted MiB | measured MiB | pred/meas | tok/s |")
    print("|---|---|---|---|---|---|---|---|---|")
    records = []
    out_file = None
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        out_file = open(args.out / "memory_check.jsonl", "a", buffering=1)
    for shape in args.shapes.split(","):
        model = build_model(shape, args.work / "models")
        cases = [
            (m, b, d, False) for d in args.dtypes.split(",") for m in args.methods.split(",") for b in batches
        ]
        if args.checkpointing and "lora" in args.methods.split(","):
            cases += [("lora", max(batches), d, True) for d in args.dtypes.split(",")]
        for method, batch, dtype, ckpt in cases:
            record = {"shape": shape, "method": method, "dtype": dtype, "grad_checkpoint": ckpt, "batch": batch,
                      "seq_len": args.seq_len, "device": device, "commit": commit}  # fmt: skip
            try:
                record.update(
                    run_case(model, data, method, batch, args.seq_len, dtype, ckpt, args.work / "runs")
                )
                record["breakdown"] = breakdown(model, method, batch, args.seq_len, dtype, ckpt)
                ratio = record["predicted_bytes"] / record["measured_bytes"]
                print(
                    f"| {shape} | {method} | {dtype} | {'yes' if ckpt else 'no'} | {batch} | "
                    f"{record['predicted_bytes'] / 2**20:.0f} | {record['measured_bytes'] / 2**20:.0f} | "
                    f"{ratio:.3f} | {record['tokens_per_second']:.0f} |",
                    flush=True,
                )
            except Exception as exc:  # one case's failure (e.g. out of memory) must not lose the others
                record["error"] = f"{type(exc).__name__}: {str(exc)[:300]}"
                print(
                    f"| {shape} | {method} | {dtype} | {'yes' if ckpt else 'no'} | {batch} | error: {record['error']} |"
                )
            records.append(record)
            if out_file:
                out_file.write(json.dumps(record) + "\n")
    ok = [r for r in records if "error" not in r]
    if ok:
        worst = max(ok, key=lambda r: abs(r["predicted_bytes"] / r["measured_bytes"] - 1))
        print(f"worst: {worst['shape']} {worst['method']} {worst['dtype']} batch {worst['batch']}: "
              f"{worst['predicted_bytes'] / worst['measured_bytes']:.3f}x")  # fmt: skip
    sys.stdout.flush()


if __name__ == "__main__":
    main()
