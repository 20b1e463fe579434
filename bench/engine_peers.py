"""The contenders of bench/engine.py that run in a process of their own: our engine through its public API,
PyTorch + HF transformers + PEFT, and an sgemm probe (MLX and torch). mlx_lm's CLI is run by bench/engine.py
itself. Each writes one JSON object to --out.

Run one by hand: `python -m bench.engine_peers engine --config '{"method": "lora", ...}' --out r.json`.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

# The seven projections of a Llama block: the adapters' targets in every contender.
PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def summarize_steps(steps: list[dict], warmup: int) -> dict:
    """Token-weighted throughput over the timed steps (those after `warmup`), plus the per-step spread."""
    timed = steps[warmup:]
    seconds = sum(s["seconds"] for s in timed)
    tokens = sum(s["tokens"] for s in timed)
    rates = [s["tokens"] / s["seconds"] for s in timed if s["seconds"] > 0]
    return {
        "timed_steps": len(timed),
        "warmup_steps": warmup,
        "tokens": tokens,
        "seconds": seconds,
        "tokens_per_second": tokens / seconds if seconds else 0.0,
        "step_seconds_median": statistics.median(s["seconds"] for s in timed) if timed else 0.0,
        "tokens_per_second_min": min(rates, default=0.0),
        "tokens_per_second_max": max(rates, default=0.0),
        "steps": steps,
    }


# ---- our engine ------------------------------------------------------------------------------------------


def run_engine(cfg: dict) -> dict:
    import mlx.core as mx

    from services.common.spec import RunSpec
    from services.trainer.engine.api import train
    from services.trainer.engine.blas import loaded_blas
    from services.trainer.engine.callbacks import TrainingCallback

    class Collect(TrainingCallback):
        def __init__(self) -> None:
            self.steps: list[dict] = []

        def on_step(self, m) -> None:
            # tokens_per_second counts every non-padding token of the batch; step tokens = rate x time.
            tokens = round(m.tokens_per_second * m.step_seconds)
            self.steps.append(
                {"seconds": m.step_seconds, "tokens": tokens, "loss_tokens": m.tokens, "loss": m.train_loss}
            )

    spec = RunSpec.from_dict(
        {
            "data": cfg["data"],
            "method": cfg["method"],
            "num_layers": cfg["num_layers"],
            "rank": cfg["rank"],
            "alpha": cfg["alpha"],
            "dropout": 0.0,
            "batch_size": cfg["batch_size"],
            "max_seq_length": cfg["seq_len"],
            "packing": cfg.get("packing", True),
            "iters": cfg["warmup"] + cfg["steps"],
            "warmup_steps": 0,
            "eval_every": 0,
            "val_batches": 1,
            "save_every": 0,
            "test_samples": 0,
            "seed": 0,
        }
    )
    collect = Collect()
    with tempfile.TemporaryDirectory(prefix="bench-engine-") as tmp:
        result = train(spec, Path(tmp) / "run", callback=collect)
    out = summarize_steps(collect.steps, cfg["warmup"])
    out.update(
        peak_memory_bytes=result.peak_memory_bytes,
        peak_rss_bytes=peak_rss_bytes(),
        trainable_parameters=result.trainable_parameters,
        total_parameters=result.total_parameters,
        backend=result.backend,
        blas=loaded_blas(),
        mlx_version=mx.__version__,
    )
    return out


# ---- PyTorch + PEFT ----------------------------------------------------------------------------------------


def load_rows(data_dir: str, tokenizer, length: int) -> list[list[int]]:
    """Token rows of the text dataset as mlx_lm and our engine tokenize them (encode + EOS), one per sample."""
    rows = []
    with open(Path(data_dir) / "train.jsonl") as fh:
        for line in fh:
            tokens = tokenizer.encode(json.loads(line)["text"])
            if tokens[-1] != tokenizer.eos_token_id:
                tokens.append(tokenizer.eos_token_id)
            if len(tokens) != length + 1:
                raise SystemExit(f"expected {length + 1} tokens per sample, got {len(tokens)}")
            rows.append(tokens)
    return rows


def run_torch(cfg: dict) -> dict:
    import peft
    import torch
    import torch.nn.functional as F
    import transformers
    from transformers import AutoTokenizer, LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM.from_pretrained(cfg["model"], dtype=torch.float32)
    n_blocks = model.config.num_hidden_layers
    layers = n_blocks if cfg["num_layers"] == -1 else cfg["num_layers"]
    lora = peft.LoraConfig(
        r=cfg["rank"],
        lora_alpha=cfg["alpha"],
        lora_dropout=0.0,
        target_modules=list(PROJECTIONS),
        layers_to_transform=list(range(n_blocks - layers, n_blocks)),
    )
    model = peft.get_peft_model(model, lora)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=2e-4, weight_decay=0.0)

    tokenizer = AutoTokenizer.from_pretrained(cfg["model"])
    rows = torch.tensor(load_rows(cfg["data"], tokenizer, cfg["seq_len"]), dtype=torch.long)
    b = cfg["batch_size"]

    def batch(i: int) -> tuple:
        chunk = rows[(i * b) % len(rows) : (i * b) % len(rows) + b]
        return chunk[:, :-1].contiguous(), chunk[:, 1:].contiguous()

    def loss_of(inputs, targets):
        logits = model(input_ids=inputs).logits
        return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1))

    # On a loaded machine OpenMP's spinning barriers can make 2 threads ~4x slower than 1 (measured here with
    # load 6 on 2 cores); give torch its best thread count for the load of the moment, from forward passes.
    probe = {}
    inputs, targets = batch(0)
    for threads in sorted({1, os.cpu_count() or 1}):
        torch.set_num_threads(threads)
        with torch.no_grad():
            probe[threads] = best_of(lambda: loss_of(inputs, targets).item(), reps=2)
    threads = cfg.get("threads") or min(probe, key=probe.get)
    torch.set_num_threads(threads)

    steps = []
    for i in range(cfg["warmup"] + cfg["steps"]):
        inputs, targets = batch(i)
        tic = time.perf_counter()
        loss = loss_of(inputs, targets)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)  # as our engine (max_grad_norm 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        steps.append({"seconds": time.perf_counter() - tic, "tokens": inputs.numel(), "loss": loss.item()})
    out = summarize_steps(steps, cfg["warmup"])

    out.update(
        forward_seconds_by_threads={str(k): v for k, v in probe.items()},
        forward_seconds=probe[threads],
        peak_rss_bytes=peak_rss_bytes(),
        trainable_parameters=sum(p.numel() for p in params),
        torch_version=torch.__version__,
        transformers_version=transformers.__version__,
        peft_version=peft.__version__,
        attention=model.config._attn_implementation,
        threads=threads,
        sgemm=torch_sgemm(cfg.get("sgemm_sizes", [1024, 2048])),
    )
    return out


def torch_sgemm(sizes: list[int]) -> dict[str, float]:
    import torch

    out = {}
    for n in sizes:
        a, b = torch.randn(n, n), torch.randn(n, n)
        out[str(n)] = 2 * n**3 / best_of(lambda a=a, b=b: a @ b, reps=3) / 1e9
    return out


# ---- sgemm probe (MLX) -------------------------------------------------------------------------------------


def best_of(fn, reps: int) -> float:
    """Fastest of `reps` timed calls after one warm-up: on a shared machine the minimum is the least noisy."""
    fn()
    times = []
    for _ in range(reps):
        tic = time.perf_counter()
        fn()
        times.append(time.perf_counter() - tic)
    return min(times)


def model_gemm_shapes(hidden: int, intermediate: int, kv_dim: int, vocab: int, tokens: int) -> dict:
    """(M, K, N) of the matmuls in one step of the default model, for `tokens` tokens in the batch."""
    return {
        "q/o proj (T x d x d)": (tokens, hidden, hidden),
        "k/v proj (T x d x kv)": (tokens, hidden, kv_dim),
        "gate/up proj (T x d x ff)": (tokens, hidden, intermediate),
        "down proj (T x ff x d)": (tokens, intermediate, hidden),
        "lm head (T x d x V)": (tokens, hidden, vocab),
        "lm head backward dX (T x V x d)": (tokens, vocab, hidden),
    }


def run_sgemm(cfg: dict) -> dict:
    import mlx.core as mx

    from services.trainer.engine.blas import loaded_blas

    mx.random.seed(0)

    def rate(m: int, k: int, n: int, reps: int) -> float:
        a, b = mx.random.normal((m, k)), mx.random.normal((k, n))
        mx.eval(a, b)
        return 2 * m * k * n / best_of(lambda: mx.eval(a @ b), reps) / 1e9

    square = {str(n): rate(n, n, n, 3 if n < 4096 else 2) for n in cfg["sizes"]}
    shapes = model_gemm_shapes(**cfg["model_shape"])
    return {
        "square_gflops": square,
        "peak_gflops": max(square.values()),
        "model_shapes_gflops": {name: rate(*mkn, 3) for name, mkn in shapes.items()},
        "blas": loaded_blas(),
    }


PEERS = {"engine": run_engine, "torch": run_torch, "sgemm": run_sgemm}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("peer", choices=sorted(PEERS))
    parser.add_argument("--config", required=True, help="JSON object of settings")
    parser.add_argument("--out", required=True, help="where to write the JSON result")
    args = parser.parse_args(argv)
    result = PEERS[args.peer](json.loads(args.config))
    Path(args.out).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    sys.exit(main())
