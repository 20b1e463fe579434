"""Scaling benchmark: data-parallel tokens/s (1 vs N workers) and the gateway's placement latency.

CPU (default, `make bench-scaling`): a LoRA run of the default model on the default dataset through
`peftlab train --workers N` with 1 and 2 workers (ring backend over loopback TCP): tokens/s over the timed
steps, and the placement latency with 2 and 8 registered trainers. On a 2-core machine two workers share the
same cores, so the 2-worker row measures the data-parallel overhead (gradient all-reduce, the per-step
agreement), not a speedup. Results: bench/results/scaling.{json,md}.

CUDA (`python -m bench.scaling --device cuda --gpus 2`, issue 15): random-init models of the SmolLM2-135M
and ~1.5B (Qwen2.5-1.5B) shapes, bf16 base, fp32 adapters, LoRA rank 8 on all 7 projections, global batch
16 x 512 on synthetic text, NCCL between the GPUs; per GPU count (1 and --gpus): tokens/s, peak memory per
GPU (rank 0's), the scaling efficiency (N-GPU tokens/s / (N x 1-GPU tokens/s)) and the largest loss
difference between the 1-GPU and N-GPU curves (same global batch, same data order). Needs only the MLX CUDA
wheel (../shared/gpu/README.md): the tokenizer is a word-level one built here. Results:
bench/results/scaling_gpu.{json,md} (and $OUT when set). `--gpus 1` runs the 1-GPU baseline alone.

Placement latency: each sample submits one run to a real Redis (the embedded server) and times the gateway's
placement pass (`Placer.place_now`: read the queue and the registry, choose a trainer, book its slot in the
Lua script) until the run is PLACED; the trainer's StartRun RPC is left out (dispatch returns at once), then
the run is cancelled, which frees the slot. Trainers are registry entries with one slot each, all but one
busy, so every pass ranks all of them.

Run: `.venv/bin/python -m bench.scaling [--samples 200] [--steps 8]`
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
REPO = Path(__file__).resolve().parents[1]
# One run of each row: the fields the CLI sets (`--set`), over the spec's defaults.
CPU_RUN = {"batch_size": 4, "max_seq_length": 256, "learning_rate": 2e-3, "warmup_steps": 0}
GPU_RUN = {"batch_size": 16, "max_seq_length": 512, "learning_rate": 2e-4, "warmup_steps": 0,
           "dtype": "bfloat16", "rank": 8, "alpha": 16.0}  # fmt: skip
QUIET = {"eval_every": 0, "save_every": 0, "test_samples": 0, "val_batches": 1}


# ---- data-parallel runs ------------------------------------------------------------------------------------


def train_run(
    model: str, data: str, workers: int, fields: dict, work: Path, warmup: int, timeout: float
) -> dict:
    """One `peftlab train --workers N` process tree; its step records give tokens/s past the warm-up steps."""
    out = work / f"run-w{workers}"
    cmd = [
        sys.executable,
        "-m",
        "services.cli.train",
        "--model",
        model,
        "--data",
        data,
        "--workers",
        str(workers),
    ]
    cmd += ["--output", str(out), "--no-baseline"]
    for key, value in {**QUIET, **fields}.items():
        cmd += ["--set", f"{key}={value}"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "protos")])}
    tic = time.perf_counter()
    try:
        done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"workers": workers, "error": f"stopped after {timeout:.0f} s"}
    if done.returncode != 0:
        return {"workers": workers, "error": f"exited {done.returncode}", "log_tail": done.stderr[-1500:]}
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    steps = [r for r in records if r["kind"] == "step"]
    result = next(r for r in records if r["kind"] == "result")
    timed = steps[warmup:] or steps
    seconds = sum(r["step_seconds"] for r in timed)
    tokens = sum(r["tokens_per_second"] * r["step_seconds"] for r in timed)
    return {
        "workers": workers,
        "tokens_per_second": tokens / seconds if seconds else 0.0,
        "step_seconds_median": statistics.median(r["step_seconds"] for r in timed),
        "timed_steps": len(timed),
        "warmup_steps": len(steps) - len(timed),
        "peak_memory_bytes": result["peak_memory_bytes"],
        "backend": result["backend"],
        "losses": [r["train_loss"] for r in steps],
        "process_seconds": time.perf_counter() - tic,
    }


def compare(rows: list[dict]) -> None:
    """Each N-worker row against the 1-worker row: efficiency and the largest step-loss difference."""
    base = rows[0]
    for row in rows[1:]:
        if "error" in row or "error" in base:
            continue
        row["scaling_efficiency"] = row["tokens_per_second"] / (row["workers"] * base["tokens_per_second"])
        row["max_loss_difference"] = max(abs(a - b) for a, b in zip(base["losses"], row["losses"]))


def word_tokenizer(out: Path) -> Path:
    """A word-level tokenizer over bench.gpu_peers' word list (what its synthetic text uses): the GPU mode
    needs no downloaded tokenizer. Ids 0-2 are <unk>, <s>, </s> (the model configs' bos/eos)."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    from bench.gpu_peers import WORDS

    vocab = {
        "<unk>": 0,
        "<s>": 1,
        "</s>": 2,
        **{w: i + 3 for i, w in enumerate(dict.fromkeys(WORDS.split()))},
    }
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    out.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(out / "tokenizer.json"))
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<s>", "eos_token": "</s>",
              "unk_token": "<unk>", "pad_token": "</s>", "model_max_length": 4096}  # fmt: skip
    (out / "tokenizer_config.json").write_text(json.dumps(config))
    return out


def gpu_rows(args, work: Path, done=lambda out: None) -> dict:
    """Each shape's 1-GPU and N-GPU rows; `done(rows so far)` after each shape (a cut-off call keeps them)."""
    from transformers import AutoTokenizer

    from bench.gpu_peers import write_model_dir, write_synthetic

    tokenizer_dir = word_tokenizer(work / "tokenizer")
    fields = {**GPU_RUN, "iters": args.steps, "batch_size": args.batch_size, "max_seq_length": args.seq_len}
    counts = sorted({1, args.gpus})
    out: dict = {}
    for shape in args.shapes.split(","):
        model = write_model_dir(shape, str(tokenizer_dir), work / f"model-{shape}")
        tokenizer = AutoTokenizer.from_pretrained(str(model))
        rows_per_epoch = args.batch_size * (args.steps + 2)
        data = write_synthetic(work / f"data-{shape}", tokenizer, rows_per_epoch, args.seq_len + 1)
        rows = []
        for n in counts:
            print(f"{shape}: {n} GPU(s) ...", flush=True)
            rows.append(train_run(str(model), str(data), n, fields, work / shape, args.warmup, args.timeout))
            print(json.dumps({k: v for k, v in rows[-1].items() if k != "losses"}), flush=True)
        compare(rows)
        out[shape] = rows
        done(out)
    return out


def cpu_rows(args, work: Path) -> list[dict]:
    from services.common.paths import default_data, default_model

    fields = {**CPU_RUN, "iters": args.steps}
    model, data = args.model or str(default_model()), args.data or str(default_data())
    rows = []
    for n in (1, 2):
        print(f"{Path(model).name}: {n} worker(s) ...", flush=True)
        rows.append(train_run(model, data, n, fields, work, args.warmup, args.timeout))
        print(json.dumps({k: v for k, v in rows[-1].items() if k != "losses"}), flush=True)
    compare(rows)
    return rows


# ---- placement ---------------------------------------------------------------------------------------------


def placement_latency(store, n_trainers: int, samples: int) -> list[float]:
    from services.common.records import RunRecord, TrainerRecord
    from services.gateway.placement import Placer

    prefix = store.prefix
    for i in range(n_trainers):
        record = TrainerRecord(id=f"t{i}", address=f"10.0.0.{i + 1}:50052", slots=1, runs_root="/runs")
        store.register_trainer(record, ttl_seconds=600)
    # All trainers but the last hold a run, so every pass looks at every trainer and books the free one.
    for i in range(n_trainers - 1):
        store.create_run(RunRecord(id=f"busy-{prefix.strip(':')}-{i}", spec={}), claim=f"t{i}")
    placer = Placer(store, dispatch=lambda run, trainer: None, auto_resume=False)
    out = []
    for n in range(samples):
        run_id = f"r-{prefix.strip(':')}-{n}"
        start = time.perf_counter()
        store.create_run(RunRecord(id=run_id, spec={}))
        placer.place_now()
        out.append((time.perf_counter() - start) * 1000)
        record = store.get_run(run_id)
        assert record.status == "PLACED" and record.trainer == f"t{n_trainers - 1}", record
        store.transition(run_id, "CANCELLED", release=True, reason="bench")
    return out


def uptime() -> str:
    try:
        return "load average " + ", ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return ""


def placement_rows(samples: int) -> dict:
    from services.common.redis_server import start_redis
    from services.common.redis_store import RunStore

    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        redis = start_redis(Path(tmp))
        try:
            for n in (2, 8):
                store = RunStore.from_url(redis.url, prefix=f"bench{n}:")
                ms = sorted(placement_latency(store, n, samples))
                out[str(n)] = {
                    "samples": len(ms),
                    "median_ms": statistics.median(ms),
                    "p95_ms": ms[int(0.95 * (len(ms) - 1))],
                }
                store.close()
        finally:
            redis.stop()
    return out


def render_dp(rows: list[dict], label: str) -> list[str]:
    lines = [
        f"| {label} | workers | tokens/s | median step s | peak GiB (rank 0) | efficiency | max loss diff | backend |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| | {r['workers']} | {r['error']} | | | | | |")
            continue
        eff, diff = r.get("scaling_efficiency"), r.get("max_loss_difference")
        lines.append(
            f"| | {r['workers']} | {r['tokens_per_second']:,.0f} | {r['step_seconds_median']:.3f} | "
            f"{r['peak_memory_bytes'] / 2**30:.2f} | {f'{eff:.2f}' if eff is not None else '-'} | "
            f"{f'{diff:.2e}' if diff is not None else '-'} | {r['backend']} |"
        )
    return lines


def save(args, results: dict) -> str:
    """Write results/{scaling,scaling_gpu}.{json,md} (and to $OUT); returns the markdown."""
    gpu = args.device == "cuda"
    name = "scaling_gpu" if gpu else "scaling"
    lines = [
        f"# Scaling ({'CUDA, NCCL' if gpu else 'CPU, ring over loopback'})",
        "",
        f"{results['machine']}; {results['started']}; {results['load']} (after: {results['load_after']}).",
        "",
    ]
    if not gpu:
        lines += [
            f"Data-parallel LoRA, batch 4 x 256, {args.steps} steps ({args.warmup} warm-up left out), "
            "`peftlab train --workers N`. "
            "Two workers on this machine's cores measure the data-parallel overhead, not a speedup.",
            "",
        ]
    else:
        lines += [
            f"Random-init models, bf16 base, fp32 LoRA rank 8 on all projections, global batch "
            f"{args.batch_size} x {args.seq_len}, {args.steps} steps ({args.warmup} warm-up left out).",
            "",
        ]
    for label, rows in results["data_parallel"].items():
        lines += render_dp(rows, label) + [""]
    if "placement" in results:
        lines += [
            "## Gateway placement latency",
            "",
            "Submit one run + one placement pass (choose, book the slot) until PLACED; trainer RPC excluded.",
            "",
            "| registered trainers | samples | median ms | p95 ms |",
            "|---|---|---|---|",
        ]
        for n, r in results["placement"].items():
            lines.append(f"| {n} | {r['samples']} | {r['median_ms']:.2f} | {r['p95_ms']:.2f} |")
    text = "\n".join(lines) + "\n"
    targets = [RESULTS] + ([Path(os.environ["OUT"])] if os.environ.get("OUT") else [])
    for target in targets:
        target.mkdir(parents=True, exist_ok=True)
        (target / f"{name}.json").write_text(json.dumps(results, indent=1) + "\n")
        (target / f"{name}.md").write_text(text)
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, default=200, help="placement samples per trainer count")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument(
        "--gpus", type=int, default=2, help="cuda: the N of the N-GPU row (1 = baseline only)"
    )
    parser.add_argument("--shapes", default="135m,1.5b", help="cuda: model shapes (bench.gpu_peers.SHAPES)")
    parser.add_argument(
        "--steps", type=int, default=0, help="optimizer steps per run (default: cpu 6, cuda 12)"
    )
    parser.add_argument(
        "--warmup", type=int, default=0, help="steps left out of tokens/s (default: cpu 2, cuda 4)"
    )
    parser.add_argument("--batch-size", type=int, default=16, help="cuda: global batch (rows)")
    parser.add_argument("--seq-len", type=int, default=512, help="cuda: tokens per row")
    parser.add_argument(
        "--timeout", type=float, default=0, help="seconds per training run (default: cpu 900, cuda 280)"
    )
    parser.add_argument("--model", default="", help="cpu: model dir (default: the default model)")
    parser.add_argument("--data", default="", help="cpu: dataset dir (default: the default dataset)")
    parser.add_argument("--skip-placement", action="store_true")
    args = parser.parse_args(argv)
    gpu = args.device == "cuda"
    args.steps = args.steps or (12 if gpu else 6)
    args.warmup = args.warmup or (4 if gpu else 2)
    args.timeout = args.timeout or (280 if gpu else 900)  # cuda: one device call is at most 600 s
    results: dict = {
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip() + f", {os.cpu_count()} cores",
        "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "load": uptime(),
        "settings": {k: v for k, v in vars(args).items()},
    }
    with tempfile.TemporaryDirectory(prefix="bench-scaling-") as tmp:
        if gpu:

            def partial(rows: dict) -> None:
                save(args, {**results, "data_parallel": rows, "load_after": uptime()})

            results["data_parallel"] = gpu_rows(args, Path(tmp), partial)
        else:
            label = f"{Path(args.model).name if args.model else 'default model'} (cpu)"
            results["data_parallel"] = {label: cpu_rows(args, Path(tmp))}
    if not gpu and not args.skip_placement:
        results["placement"] = placement_rows(args.samples)
    results["load_after"] = uptime()
    print(save(args, results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
