"""The contenders of bench/gpu.py, one process per (runner, shape): our engine through `api.train`, mlx_lm's
own `tuner.trainer.train`, PyTorch + PEFT under torch.compile, a bf16 matmul ceiling probe, and the default job
end to end. Each writes one JSON object to --out; bench/gpu.py runs them and writes the report.

By hand: `python -m bench.gpu_peers engine --config '{"shape": "135m", "methods": ["lora"], ...}' --out r.json`
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
WORDS = (
    "the of and to in is was for on that with as by at from his her an which are this be had not but they one"
)
SHAPES = {
    # Qwen2.5-1.5B's shape as a Llama (no q/k/v bias), tied embeddings as that model has.
    "1.5b": dict(hidden_size=1536, num_hidden_layers=28, intermediate_size=8960, num_attention_heads=12,
                 num_key_value_heads=2, head_dim=128, vocab_size=151936, rope_theta=1000000.0),
    "135m": dict(hidden_size=576, num_hidden_layers=30, intermediate_size=1536, num_attention_heads=9,
                 num_key_value_heads=3, head_dim=64, vocab_size=49152, rope_theta=100000.0),
    # For checking the bench itself on a CPU.
    "tiny": dict(hidden_size=64, num_hidden_layers=4, intermediate_size=192, num_attention_heads=4,
                 num_key_value_heads=2, head_dim=16, vocab_size=49152, rope_theta=10000.0),
}  # fmt: skip


def model_config(shape: str) -> dict:
    return {
        "model_type": "llama",
        "architectures": ["LlamaForCausalLM"],
        "rms_norm_eps": 1e-6,
        "max_position_embeddings": 4096,
        "tie_word_embeddings": True,
        "rope_traditional": False,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "pad_token_id": 2,
        **SHAPES[shape],
    }


def step_stats(seconds: list[float], tokens: list[int], warmup: int) -> dict:
    timed_s, timed_t = seconds[warmup:], tokens[warmup:]
    total = sum(timed_s)
    return {
        "timed_steps": len(timed_s),
        "warmup_steps": warmup,
        "tokens_per_second": sum(timed_t) / total if total else 0.0,
        "step_seconds_median": statistics.median(timed_s) if timed_s else 0.0,
        "step_seconds": seconds,
    }


# ---- shared setup (MLX side) --------------------------------------------------------------------------------


def write_model_dir(shape: str, tokenizer_dir: str, out: Path) -> Path:
    """A random-init bf16 model of `shape` in mlx_lm's layout, with the given tokenizer's files."""
    import shutil

    import mlx.core as mx
    from mlx_lm.models.llama import Model, ModelArgs
    from mlx_lm.utils import save_config, save_model

    from services.trainer.engine.methods import cast_floating

    config = model_config(shape)
    mx.random.seed(0)
    model = Model(ModelArgs.from_dict(config))
    cast_floating(model, mx.bfloat16)
    mx.eval(model.parameters())
    save_model(out, model, donate_model=True)
    save_config(config, out / "config.json")
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (Path(tokenizer_dir) / name).exists():
            shutil.copy(Path(tokenizer_dir) / name, out / name)
    return out


def write_synthetic(out: Path, tokenizer, n_train: int, tokens: int) -> Path:
    """Text samples of exactly `tokens` tokens once the EOS both MLX trainers append is counted."""
    import numpy as np

    words = WORDS.split()
    rng = np.random.default_rng(0)
    out.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("valid", 8)):
        with open(out / f"{split}.jsonl", "w") as fh:
            for _ in range(n):
                text = " ".join(rng.choice(words, tokens - 1))
                if len(tokenizer.encode(text)) != tokens - 1:
                    raise SystemExit(f"synthetic sample is not {tokens - 1} tokens; fix the word list")
                fh.write(json.dumps({"text": text}) + "\n")
    return out


def prepare(cfg: dict, work: Path) -> tuple[Path, Path]:
    from transformers import AutoTokenizer

    model_dir = write_model_dir(cfg["shape"], cfg["tokenizer"], work / "model")
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    n_train = cfg["batch_size"] * (cfg["warmup"] + cfg["steps"] + 2)
    data = write_synthetic(work / "data", tokenizer, n_train, cfg["seq_len"] + 1)
    return model_dir, data


def release() -> None:
    import mlx.core as mx

    gc.collect()
    mx.clear_cache()


# ---- our engine -----------------------------------------------------------------------------------------------


def run_engine(cfg: dict) -> dict:
    import mlx.core as mx

    from services.common.spec import RunSpec
    from services.trainer.engine.api import train
    from services.trainer.engine.callbacks import TrainingCallback

    class Collect(TrainingCallback):
        def __init__(self) -> None:
            self.seconds: list[float] = []
            self.tokens: list[int] = []

        def on_step(self, m) -> None:
            self.seconds.append(m.step_seconds)
            self.tokens.append(round(m.tokens_per_second * m.step_seconds))

    if cfg.get("recompute") is False:  # A/B (bench/gpu_ab.py): the step as it was before recompute.py
        import services.trainer.engine.methods as methods

        methods.recompute_mlp_tails = lambda model: 0
    out = {"mlx_version": mx.__version__, "device": str(mx.default_device()), "methods": {},
           "bfs_max_width": os.environ.get("MLX_BFS_MAX_WIDTH")}  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="bench-gpu-") as tmp:
        if cfg.get("model_dir"):  # prepared once by the caller (bench/gpu_ab.py)
            model_dir, data = Path(cfg["model_dir"]), Path(cfg["data_dir"])
        else:
            model_dir, data = prepare(cfg, Path(tmp))
        for method in cfg["methods"]:
            release()
            spec = RunSpec.from_dict(
                {
                    "model": str(model_dir),
                    "data": str(data),
                    "method": method,
                    "rank": 8,
                    "alpha": 16.0,
                    "batch_size": cfg["batch_size"],
                    "max_seq_length": cfg["seq_len"],
                    "iters": cfg["warmup"] + cfg["steps"],
                    "warmup_steps": 0,
                    "learning_rate": 1e-5 if method == "full" else 2e-4,
                    "eval_every": 0,
                    "val_batches": 1,
                    "save_every": 0,
                    "test_samples": 0,
                    "grad_checkpoint": bool(cfg.get("grad_checkpoint")),
                }
            )
            collect = Collect()
            tic = time.perf_counter()
            try:
                result = train(spec, Path(tmp) / f"run-{method}", callback=collect)
            except Exception as exc:  # one method failing must not lose the others
                out["methods"][method] = {"error": f"{type(exc).__name__}: {exc}"[:500]}
                continue
            stats = step_stats(collect.seconds, collect.tokens, cfg["warmup"])
            stats.update(
                peak_memory_bytes=result.peak_memory_bytes,
                predicted_peak_memory_bytes=result.predicted_peak_memory_bytes,
                wall_seconds=time.perf_counter() - tic,
                final_train_loss=result.final_train_loss,
            )
            out["methods"][method] = stats
            print(f"engine {cfg['shape']} {method}: {stats['tokens_per_second']:.0f} tok/s", flush=True)
    return out


# ---- mlx_lm's trainer ------------------------------------------------------------------------------------------


def run_mlx_lm(cfg: dict) -> dict:
    import mlx.core as mx
    import mlx.nn as nn
    import mlx.optimizers as optim
    from mlx_lm.tuner.datasets import CacheDataset, TextDataset
    from mlx_lm.tuner.trainer import TrainingArgs, TrainingCallback, train
    from mlx_lm.tuner.utils import linear_to_lora_layers
    from mlx_lm.utils import load

    class Collect(TrainingCallback):
        def __init__(self) -> None:
            self.seconds: list[float] = []
            self.tokens: list[int] = []
            self.total = 0

        def on_train_loss_report(self, info: dict) -> None:
            tokens = info["trained_tokens"] - self.total
            self.total = info["trained_tokens"]
            self.seconds.append(tokens / info["tokens_per_second"])
            self.tokens.append(tokens)

    out = {"mlx_version": mx.__version__, "methods": {}}
    with tempfile.TemporaryDirectory(prefix="bench-gpu-") as tmp:
        model_dir, data = prepare(cfg, Path(tmp))
        for method in cfg["methods"]:
            release()
            mx.reset_peak_memory()
            model, tokenizer = load(str(model_dir))
            if method == "qlora":
                nn.quantize(
                    model, group_size=32, bits=4, class_predicate=lambda p, m: isinstance(m, nn.Linear)
                )
            model.freeze()
            if method == "full":
                model.unfreeze()
            else:
                from services.common.spec import DEFAULT_TARGET_MODULES

                params = {"rank": 8, "scale": 2.0, "dropout": 0.0, "keys": list(DEFAULT_TARGET_MODULES)}
                linear_to_lora_layers(model, len(model.layers), params, use_dora=method == "dora")
            rows = [json.loads(line) for line in open(data / "train.jsonl")]
            train_set = CacheDataset(TextDataset(rows, tokenizer))
            args = TrainingArgs(
                batch_size=cfg["batch_size"],
                iters=cfg["warmup"] + cfg["steps"],
                val_batches=1,
                steps_per_report=1,
                steps_per_eval=10**6,
                steps_per_save=10**6,
                max_seq_length=cfg["seq_len"] + 1,
                adapter_file=str(Path(tmp) / f"{method}.safetensors"),
            )
            optimizer = optim.AdamW(learning_rate=1e-5 if method == "full" else 2e-4, bias_correction=True,
                                    weight_decay=0.0)  # fmt: skip
            collect = Collect()
            try:
                train(model, optimizer, train_set, None, args, training_callback=collect)
            except Exception as exc:
                out["methods"][method] = {"error": f"{type(exc).__name__}: {exc}"[:500]}
                continue
            stats = step_stats(collect.seconds, collect.tokens, cfg["warmup"])
            stats["peak_memory_bytes"] = mx.get_peak_memory()
            out["methods"][method] = stats
            print(f"mlx_lm {cfg['shape']} {method}: {stats['tokens_per_second']:.0f} tok/s", flush=True)
            del model, optimizer
    return out


# ---- PyTorch + PEFT, torch.compile ------------------------------------------------------------------------------


def run_torch(cfg: dict) -> dict:
    """One method per process (torch.compile state and CUDA memory start clean). With cfg["turn"], the
    process compiles and warms up, then waits until that file exists before timing: bench/gpu.py compiles
    every torch case in parallel and times them one at a time."""
    import peft
    import torch
    import torch.nn.functional as F
    from transformers import LlamaConfig, LlamaForCausalLM

    method = cfg["method"]
    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    dtype = torch.bfloat16 if cuda else torch.float32
    torch.manual_seed(0)
    config = LlamaConfig(**{k: v for k, v in model_config(cfg["shape"]).items() if k != "model_type"})
    config._attn_implementation = "sdpa"
    with torch.device(device):
        model = LlamaForCausalLM(config).to(dtype)
    if method != "full":
        lora = peft.LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=list(PROJECTIONS),
                               use_dora=method == "dora")  # fmt: skip
        model = peft.get_peft_model(model, lora)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-5 if method == "full" else 2e-4, weight_decay=0.0,
                                  fused=cuda)  # fmt: skip
    b, length, vocab = cfg["batch_size"], cfg["seq_len"], config.vocab_size
    g = torch.Generator().manual_seed(0)
    rows = torch.randint(3, 49152, (cfg["warmup"] + cfg["steps"], b, length + 1), generator=g).to(device)

    def loss_of(inputs, targets):
        logits = model(input_ids=inputs).logits
        return F.cross_entropy(logits.float().reshape(-1, vocab), targets.reshape(-1))

    compiled = torch.compile(loss_of)

    def step(i: int) -> float:
        inputs, targets = rows[i, :, :-1], rows[i, :, 1:]
        loss = compiled(inputs, targets)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.item()

    sync = torch.cuda.synchronize if cuda else (lambda: None)
    tic = time.perf_counter()
    seconds = []
    for i in range(cfg["warmup"]):
        t = time.perf_counter()
        step(i)
        sync()
        seconds.append(time.perf_counter() - t)
    compile_seconds = time.perf_counter() - tic
    if cfg.get("turn"):
        Path(cfg["ready"]).write_text("ready")
        while not Path(cfg["turn"]).exists():
            time.sleep(0.05)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    for i in range(cfg["warmup"], cfg["warmup"] + cfg["steps"]):
        t = time.perf_counter()
        step(i)
        sync()
        seconds.append(time.perf_counter() - t)
    stats = step_stats(seconds, [b * length] * len(seconds), cfg["warmup"])
    stats.update(
        compile_and_warmup_seconds=compile_seconds,
        peak_memory_bytes=torch.cuda.max_memory_allocated() if cuda else 0,
        torch_version=torch.__version__,
        peft_version=peft.__version__,
    )
    return stats


# ---- matmul ceiling, default job -------------------------------------------------------------------------------


def run_ceiling(cfg: dict) -> dict:
    """bf16 matmul rate (TFLOP/s) on random data, n^3, median of timed repeats after warm-up, MLX and torch."""
    import mlx.core as mx

    n, reps = cfg.get("n", 8192), cfg.get("reps", 20)
    out = {}
    a = mx.random.normal((n, n)).astype(mx.bfloat16)
    b = mx.random.normal((n, n)).astype(mx.bfloat16)
    mx.eval(a, b)
    for _ in range(3):
        mx.eval(a @ b)
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        mx.eval(a @ b)
        times.append(time.perf_counter() - t)
    out["mlx_tflops"] = 2 * n**3 / statistics.median(times) / 1e12
    try:
        import torch

        if torch.cuda.is_available():
            ta = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
            tb = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
            for _ in range(3):
                ta @ tb
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            times = []
            for _ in range(reps):
                start.record()
                ta @ tb
                end.record()
                end.synchronize()
                times.append(start.elapsed_time(end) / 1e3)
            out["torch_tflops"] = 2 * n**3 / statistics.median(times) / 1e12
            out["device_name"] = torch.cuda.get_device_name()
    except ImportError:
        pass
    out.update(n=n, reps=reps)
    return out


def run_default_job(cfg: dict) -> dict:
    """`peftlab train`'s default spec end to end (load, train, validate, save, test loss and scoring) on a
    random-init model of the default model's shape and the default dataset: wall time and each step's time."""
    from services.common.spec import RunSpec
    from services.trainer.engine.api import train
    from services.trainer.engine.callbacks import TrainingCallback

    class Collect(TrainingCallback):
        def __init__(self) -> None:
            self.seconds: list[float] = []
            self.lengths: list[int] = []

        def on_step(self, m) -> None:
            self.seconds.append(m.step_seconds)

    with tempfile.TemporaryDirectory(prefix="bench-gpu-") as tmp:
        tic = time.perf_counter()
        model_dir = write_model_dir("135m", cfg["tokenizer"], Path(tmp) / "model")
        setup = time.perf_counter() - tic
        collect = Collect()
        tic = time.perf_counter()
        result = train(RunSpec.from_dict({"model": str(model_dir), "data": cfg["data"]}), Path(tmp) / "run",
                       callback=collect)  # fmt: skip
        wall = time.perf_counter() - tic
    median = statistics.median(collect.seconds)
    return {
        "wall_seconds": wall,
        "model_write_seconds": setup,
        "train_seconds": result.train_seconds,
        "steps": result.steps,
        "step_seconds": collect.seconds,
        "step_seconds_median": median,
        # A retrace shows as a step several times the median: count them after the first three steps.
        "slow_steps_after_3": [i + 1 for i, s in enumerate(collect.seconds) if i >= 3 and s > 3 * median],
        "peak_memory_bytes": result.peak_memory_bytes,
        "predicted_peak_memory_bytes": result.predicted_peak_memory_bytes,
    }


def run_prepare(cfg: dict) -> dict:
    """Write the random-init model and synthetic data once into cfg["work"], for several engine processes."""
    model_dir, data = prepare(cfg, Path(cfg["work"]))
    return {"model_dir": str(model_dir), "data_dir": str(data)}


PEERS = {
    "prepare": run_prepare,
    "engine": run_engine,
    "mlx_lm": run_mlx_lm,
    "torch": run_torch,
    "ceiling": run_ceiling,
    "default_job": run_default_job,
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("peer", choices=sorted(PEERS))
    parser.add_argument("--config", required=True, help="JSON object of settings")
    parser.add_argument("--out", required=True, help="where to write the JSON result")
    args = parser.parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    result = PEERS[args.peer](json.loads(args.config))
    Path(args.out).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    sys.exit(main())
