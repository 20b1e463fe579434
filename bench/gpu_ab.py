"""A/B of our engine's step on the GPU: the same `api.train()` case with one knob changed per variant, each in
its own process (MLX_BFS_MAX_WIDTH is read once per process): tokens/s and peak memory side by side.

Knobs: `recompute` (recompute.py's SwiGLU tail, on by default; off = the step before it) and the environment
variable MLX_BFS_MAX_WIDTH (how many independent branches MLX's scheduler interleaves; the engine sets 1, MLX's
default is 20). Writes gpu_ab.json / gpu_ab.md under --out.

    python -m bench.gpu_ab --tokenizer DIR --shape 1.5b --out $OUT
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# name: (methods, config overrides, environment overrides)
VARIANTS = {
    "new": (["lora", "full"], {}, {}),
    "lora-before": (["lora"], {"recompute": False}, {"MLX_BFS_MAX_WIDTH": "20"}),
    "lora-recompute-w20": (["lora"], {}, {"MLX_BFS_MAX_WIDTH": "20"}),
    "lora-recompute-w1": (["lora"], {}, {"MLX_BFS_MAX_WIDTH": "1"}),
    "lora-before-w1": (["lora"], {"recompute": False}, {"MLX_BFS_MAX_WIDTH": "1"}),
    "full-before": (["full"], {"recompute": False}, {"MLX_BFS_MAX_WIDTH": "20"}),
    "full-recompute-w1": (["full"], {}, {"MLX_BFS_MAX_WIDTH": "1"}),
    "dora-qlora-w1": (["dora", "qlora"], {}, {"MLX_BFS_MAX_WIDTH": "1"}),
    "lora-ckpt-w1": (["lora"], {"grad_checkpoint": True}, {"MLX_BFS_MAX_WIDTH": "1"}),
    # Not measured yet. MLX's CUDA backend keeps every kernel's inputs alive until the CUDA graph holding it
    # completes, and an H100/H200 graph takes up to 100 ops / 1000 MB, with up to 10 graphs in flight
    # (mlx/backend/cuda/device.cpp, eval.cpp; transforms.cpp MAX_ACTIVE_TASKS): up to ~10 GB above the
    # step's live set, the gap to torch's peak (bench/results/gpu.md). Smaller graphs bound that, at some cost
    # in launch overhead: what these measure.
    "lora-mb100": (["lora"], {}, {"MLX_MAX_MB_PER_BUFFER": "100"}),
    "lora-mb250": (["lora"], {}, {"MLX_MAX_MB_PER_BUFFER": "250"}),
    "full-mb250": (["full"], {}, {"MLX_MAX_MB_PER_BUFFER": "250"}),
}


def run(peer: str, cfg: dict, out: Path, env: dict, timeout: float) -> dict:
    cmd = [sys.executable, "-m", "bench.gpu_peers", peer, "--config", json.dumps(cfg), "--out", str(out)]
    tic = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=REPO, env={**os.environ, **env}, capture_output=True, text=True,
                              timeout=timeout)  # fmt: skip
    except subprocess.TimeoutExpired:
        return {"error": f"stopped after {timeout:.0f} s"}
    if proc.returncode != 0 or not out.exists():
        return {"error": f"exited {proc.returncode}", "log_tail": (proc.stdout + proc.stderr)[-1500:]}
    result = json.loads(out.read_text())
    result["process_seconds"] = time.perf_counter() - tic
    return result


def render(results: dict) -> str:
    cfg = results["settings"]
    lines = [f"# A/B of the engine's step ({cfg['shape']}, batch {cfg['batch_size']} x {cfg['seq_len']}, "
             f"{cfg['steps']} timed steps after {cfg['warmup']} warm-up; one process per variant)", "",
             "| variant | method | tok/s | peak GiB | median step ms |", "|---|---|---:|---:|---:|"]  # fmt: skip
    for name, r in results["variants"].items():
        for method, row in r.get("methods", {"-": r}).items():
            if "tokens_per_second" in row:
                lines.append(f"| {name} | {method} | {row['tokens_per_second']:,.0f} | "
                             f"{row['peak_memory_bytes'] / 2**30:.2f} | {row['step_seconds_median'] * 1000:.0f} |")  # fmt: skip
            else:
                lines.append(f"| {name} | {method} | {row.get('error', '?')} | | |")
    for name, row in results.get("torch", {}).items():
        if "tokens_per_second" in row:
            lines.append(f"| torch.compile+PEFT | {name} | {row['tokens_per_second']:,.0f} | "
                         f"{row['peak_memory_bytes'] / 2**30:.2f} | {row['step_seconds_median'] * 1000:.0f} |")  # fmt: skip
        else:
            lines.append(f"| torch.compile+PEFT | {name} | {row.get('error', '?')} | | |")
    job = results.get("default_job")
    if job:
        lines += ["", f"default job: {json.dumps({k: v for k, v in job.items() if k != 'step_seconds'})}"]
    return "\n".join(lines) + "\n"


def time_torch(turns: list[str], results: dict, save, wait_s: float) -> None:
    """Let each torch case waiting at its barrier (bench/gpu.py's ready/turn files) time its steps, one at a time."""
    for turn in turns:
        ready, out = Path(turn).with_suffix(".ready"), Path(turn).with_suffix(".json")
        name = Path(turn).stem
        if not ready.exists():
            results["torch"][name] = {"error": "not compiled in time"}
            continue
        Path(turn).write_text("go")
        end = time.monotonic() + wait_s
        while not out.exists() and time.monotonic() < end:
            time.sleep(0.2)
        time.sleep(0.5)
        results["torch"][name] = json.loads(out.read_text()) if out.exists() else {"error": "no result"}
        save()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokenizer", required=True)
    parser.add_argument("--shape", default="1.5b")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--budget-s", type=float, default=400)
    parser.add_argument(
        "--torch-turns", default="", help="turn files of torch cases waiting at their barrier"
    )
    parser.add_argument("--torch-after", default="", help="time the torch cases after this variant")
    parser.add_argument(
        "--default-job-data", default="", help="the default dataset: run the default job last"
    )
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", ".")))
    args = parser.parse_args(argv)
    end = time.monotonic() + args.budget_s
    cfg = {"shape": args.shape, "tokenizer": args.tokenizer, "steps": args.steps, "warmup": args.warmup,
           "batch_size": args.batch_size, "seq_len": args.seq_len}  # fmt: skip
    results = {"settings": cfg, "variants": {}, "torch": {}}
    args.out.mkdir(parents=True, exist_ok=True)

    def save() -> None:  # after every case, so a call cut short still leaves its rows
        (args.out / "gpu_ab.json").write_text(json.dumps(results, indent=1))
        (args.out / "gpu_ab.md").write_text(render(results))

    turns = list(filter(None, args.torch_turns.split(",")))
    with tempfile.TemporaryDirectory(prefix="bench-gpu-ab-") as tmp:
        work = Path(tmp)
        prepared = run("prepare", {**cfg, "work": str(work)}, work / "prepare.json", {}, 300)
        print("prepared", prepared, flush=True)
        prepared.pop("process_seconds", None)
        for name in args.variants.split(","):
            methods, overrides, env = VARIANTS[name]
            left = end - time.monotonic()
            if left < 20:
                results["variants"][name] = {"error": "skipped (time budget)"}
                continue
            case = {**cfg, **prepared, **overrides, "methods": methods}
            r = run("engine", case, work / f"{name}.json", env, left)
            results["variants"][name] = r
            for method, row in r.get("methods", {}).items():
                print(f"{name} {method}: {row.get('tokens_per_second', 0):,.0f} tok/s, "
                      f"peak {row.get('peak_memory_bytes', 0) / 2**30:.2f} GiB, "
                      f"median step {row.get('step_seconds_median', 0) * 1000:.0f} ms "
                      f"{row.get('error', '')}", flush=True)  # fmt: skip
            if "error" in r:
                print(name, r, flush=True)
            save()
            if name == args.torch_after and turns:
                time_torch(turns, results, save, 60)
                turns = []
        if turns:
            time_torch(turns, results, save, 60)
    left = end - time.monotonic()
    if args.default_job_data and left > 30:
        job = {"tokenizer": args.tokenizer, "data": args.default_job_data}
        results["default_job"] = run("default_job", job, args.out / "default_job_raw.json", {}, left)
        save()
    save()
    print(render(results))


if __name__ == "__main__":
    sys.exit(main())
