"""GPU benchmark (NVIDIA, MLX's CUDA backend): our engine's LoRA/DoRA/QLoRA/full step against mlx_lm's trainer
and PyTorch + PEFT under torch.compile, on random-init models of the ~1.5B (Qwen2.5-1.5B) and SmolLM2-135M
shapes, batch 8 x 512, bf16 base, fp32 adapters, rank 8 on all 7 projections; tokens/s, peak memory and MFU
against the card's measured bf16 matmul rate and the 989 TFLOP/s datasheet; and the default job end to end.
Results: bench/results/gpu.json and gpu.md (and $OUT when set).

One call of the `device` tool runs all of it (see ../shared/gpu/README.md for installing MLX there):
`python -m bench.gpu --tokenizer DIR --data DIR`. The torch cases compile in parallel first (torch.compile
takes minutes and is CPU work), then each is timed alone; the MLX cases follow one at a time; a time budget
skips (and says so) whatever would not fit the call. On a CPU, `--shapes tiny --steps 2` checks the bench.

FLOPs per step are bench/engine.py's count: LoRA-type 4NT + adapters + attention, full 6NT + attention
(N = matmul weights including the head, T = tokens); MFU = those FLOPs x steps/s over the rate.
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

from bench.engine import step_flops
from bench.gpu_peers import model_config

RESULTS = Path(__file__).resolve().parent / "results"
REPO = Path(__file__).resolve().parents[1]
DATASHEET_TFLOPS = 989.0  # H100/H200 SXM dense bf16
METHODS = ("lora", "dora", "qlora", "full")
TORCH_METHODS = ("lora", "dora", "full")  # QLoRA needs bitsandbytes, which the device image lacks


class Budget:
    def __init__(self, seconds: float):
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        return self.end - time.monotonic()


def child(peer: str, cfg: dict, work: Path, name: str, timeout: float) -> dict:
    out, log = work / f"{name}.json", work / f"{name}.log"
    cmd = [sys.executable, "-m", "bench.gpu_peers", peer, "--config", json.dumps(cfg), "--out", str(out)]
    tic = time.perf_counter()
    with open(log, "w") as fh:
        try:
            code = subprocess.run(
                cmd, stdout=fh, stderr=subprocess.STDOUT, cwd=REPO, timeout=timeout
            ).returncode
        except subprocess.TimeoutExpired:
            return {
                "error": f"stopped after {timeout:.0f} s (time budget)",
                "log_tail": log.read_text()[-800:],
            }
    if code != 0 or not out.exists():
        return {"error": f"exited {code}", "log_tail": log.read_text()[-1500:]}
    result = json.loads(out.read_text())
    result["process_seconds"] = time.perf_counter() - tic
    return result


def run_torch_cases(
    shapes, settings: dict, work: Path, budget: Budget, compile_limit: float, only: set[str]
) -> dict:
    """Compile every torch case in parallel, then time them one at a time (each waits for its turn file)."""
    procs = {}
    for shape in shapes:
        for method in TORCH_METHODS:
            if method not in settings["methods"] or (only and f"{shape}-{method}" not in only):
                continue
            name = f"torch-{shape}-{method}"
            cfg = {**settings, "shape": shape, "method": method, "ready": str(work / f"{name}.ready"),
                   "turn": str(work / f"{name}.turn")}  # fmt: skip
            log = open(work / f"{name}.log", "w")
            cmd = [sys.executable, "-m", "bench.gpu_peers", "torch", "--config", json.dumps(cfg),
                   "--out", str(work / f"{name}.json")]  # fmt: skip
            procs[name] = (subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=REPO), cfg, log)
    deadline = time.monotonic() + min(compile_limit, budget.left())
    results = {}
    for proc, cfg, _ in procs.values():
        while not Path(cfg["ready"]).exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
    for name, (proc, cfg, log) in procs.items():  # timed one at a time, the others idle at their barrier
        if not Path(cfg["ready"]).exists():
            proc.kill()
            proc.wait()
            log.close()
            tail = (work / f"{name}.log").read_text()[-800:]
            why = (
                "failed"
                if proc.returncode not in (-9, None)
                else f"not compiled within {compile_limit:.0f} s"
            )
            results[name] = {"error": why, "log_tail": tail}
            continue
        Path(cfg["turn"]).write_text("go")
        try:
            proc.wait(timeout=max(10.0, min(120.0, budget.left())))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        out = work / f"{name}.json"
        results[name] = (
            json.loads(out.read_text())
            if out.exists()
            else {"error": f"exited {proc.returncode}", "log_tail": (work / f"{name}.log").read_text()[-800:]}
        )
        print(f"{name}: {results[name].get('tokens_per_second', 0):.0f} tok/s", flush=True)
    return results


def add_mfu(row: dict, shape: str, method: str, settings: dict, ceiling: float | None) -> None:
    if "tokens_per_second" not in row:
        return
    b, length = settings["batch_size"], settings["seq_len"]
    flops = step_flops(model_config(shape), "full" if method == "full" else "lora", b, length, 8, -1)
    achieved = flops * row["tokens_per_second"] / (b * length) / 1e12
    row.update(step_tflop=flops / 1e12, achieved_tflops=achieved, mfu_datasheet=achieved / DATASHEET_TFLOPS)
    if ceiling:
        row["mfu_measured"] = achieved / ceiling


def gib(x) -> str:
    return f"{x / 2**30:.1f}" if x else "-"


def cell(row: dict | None) -> str:
    if not row:
        return "not run"
    if "error" in row:
        return f"error: {row['error'][:60]}"
    return f"{row['tokens_per_second']:,.0f} · {gib(row.get('peak_memory_bytes'))}"


def render(results: dict) -> str:
    s, c = results["settings"], results.get("ceiling", {})
    ceiling = c.get("ceiling_tflops")
    lines = [
        "# GPU benchmark",
        "",
        f"Written by `python -m bench.gpu` ({results['started']}, {results['total_seconds']:.0f} s in one process "
        f"tree). Device: {c.get('device_name', '?')}; MLX {results.get('mlx_version', '?')}; "
        f"torch {results.get('torch_version', '?')}, peft {results.get('peft_version', '?')}. "
        f"Batch {s['batch_size']} x {s['seq_len']}, {s['steps']} timed steps after {s['warmup']} warm-up "
        "steps, tokens/s = timed tokens / timed step seconds; peak = mx.get_peak_memory() (MLX) or "
        "torch.cuda.max_memory_allocated() over the timed steps (torch). Random-init weights.",
        "",
        f"bf16 matmul {c.get('n', '?')}^3, median of {c.get('reps', '?')}: MLX {c.get('mlx_tflops', 0):.0f}, "
        f"torch {c.get('torch_tflops', 0):.0f} TFLOP/s; MFU uses the higher ({ceiling or 0:.0f}) and the "
        f"{DATASHEET_TFLOPS:.0f} TFLOP/s datasheet.",
        "",
        "| shape | method | ours tok/s · peak GiB | mlx_lm | torch.compile + PEFT | ours / mlx_lm | ours / torch "
        "| ours MFU (measured · datasheet) | torch MFU (measured) |",
        "|---|---|---|---|---|---:|---:|---:|---:|",
    ]
    for shape in s["shapes"]:
        for method in s["methods"]:
            ours = results["engine"].get(shape, {}).get(method)
            peer = results["mlx_lm"].get(shape, {}).get(method)
            torch_row = results["torch"].get(f"torch-{shape}-{method}")

            def ratio(a, b):
                if a and b and "tokens_per_second" in a and b.get("tokens_per_second"):
                    return f"{a['tokens_per_second'] / b['tokens_per_second']:.2f}x"
                return "-"

            mfu = (
                f"{ours.get('mfu_measured', 0) * 100:.0f}% · {ours['mfu_datasheet'] * 100:.0f}%"
                if ours and "mfu_datasheet" in ours
                else "-"
            )
            tmfu = (
                f"{torch_row['mfu_measured'] * 100:.0f}%"
                if torch_row and "mfu_measured" in torch_row
                else "-"
            )
            torch_cell = "n/a (no bitsandbytes)" if method not in TORCH_METHODS else cell(torch_row)
            lines.append(
                f"| {shape} | {method} | {cell(ours)} | {cell(peer)} | {torch_cell} | {ratio(ours, peer)} "
                f"| {ratio(ours, torch_row)} | {mfu} | {tmfu} |"
            )
    job = results.get("default_job")
    if job:
        lines += [
            "",
            "Default job (`peftlab train` defaults, random-init 135M shape, default dataset), end to end:",
        ]
        if "error" in job:
            lines.append(f"error: {job['error']}")
        else:
            lines.append(
                f"{job['wall_seconds']:.1f} s wall ({job['train_seconds']:.1f} s in {job['steps']} steps, median "
                f"step {job['step_seconds_median'] * 1000:.0f} ms); steps over 3x the median after step 3: "
                f"{job['slow_steps_after_3'] or 'none'}; peak {gib(job['peak_memory_bytes'])} GiB "
                f"(predicted {gib(job['predicted_peak_memory_bytes'])})."
            )
    compile_notes = [
        f"{k}: {v['compile_and_warmup_seconds']:.0f} s"
        for k, v in results["torch"].items()
        if "compile_and_warmup_seconds" in v
    ]
    if compile_notes:
        lines += [
            "",
            "torch.compile + warm-up steps (compiled in parallel): " + ", ".join(compile_notes) + ".",
        ]
    skipped = results.get("skipped")
    if skipped:
        lines += ["", "Skipped for the time budget: " + ", ".join(skipped) + "."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", default="1.5b,135m")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--tokenizer", required=True, help="dir with tokenizer.json (SmolLM2's)")
    parser.add_argument(
        "--data", default="", help="the default dataset, for the default job (empty: skip it)"
    )
    parser.add_argument("--budget-s", type=float, default=520, help="stop starting cases after this")
    parser.add_argument("--torch-compile-limit-s", type=float, default=230)
    parser.add_argument("--ceiling-n", type=int, default=8192, help="matmul size of the ceiling probe")
    parser.add_argument(
        "--ceiling-tflops", default="", help="MLX,torch rates measured before: skip the probe"
    )
    parser.add_argument("--torch-cases", default="", help="only these torch cases, e.g. 1.5b-lora")
    parser.add_argument("--skip", default="", help="comma-separated: torch,engine,mlx_lm,default_job")
    args = parser.parse_args(argv)
    budget = Budget(args.budget_s)
    skip = set(filter(None, args.skip.split(",")))
    shapes = args.shapes.split(",")
    settings = {"shapes": shapes, "methods": args.methods.split(","), "steps": args.steps, "warmup": args.warmup,
                "batch_size": args.batch_size, "seq_len": args.seq_len, "tokenizer": args.tokenizer}  # fmt: skip
    results = {"settings": settings, "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
               "engine": {}, "mlx_lm": {}, "torch": {}, "skipped": []}  # fmt: skip
    tic = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-gpu-") as tmp:
        work = Path(tmp)
        if args.ceiling_tflops:  # measured in an earlier call of the same session
            mlx_rate, torch_rate = map(float, args.ceiling_tflops.split(","))
            c = {"mlx_tflops": mlx_rate, "torch_tflops": torch_rate, "n": "8192 (earlier call)", "reps": 20}
        else:
            c = child("ceiling", {"n": args.ceiling_n}, work, "ceiling", 120)
        c["ceiling_tflops"] = max(c.get("mlx_tflops", 0), c.get("torch_tflops", 0)) or None
        results["ceiling"] = c
        print(f"ceiling: {c}", flush=True)
        if "torch" not in skip:
            only = set(filter(None, args.torch_cases.split(",")))
            results["torch"] = run_torch_cases(
                shapes, settings, work, budget, args.torch_compile_limit_s, only
            )
        # Most wanted first: the time budget drops what comes last.
        order = [(r, sh) for sh in shapes for r in ("engine", "mlx_lm")]
        if args.data:
            order.insert(min(len(order), 3), ("default_job", ""))
        for runner, shape in order:
            if runner in skip:
                continue
            if budget.left() < 30:
                results["skipped"].append(f"{runner} {shape}".strip())
                continue
            if runner == "default_job":
                cfg = {"tokenizer": args.tokenizer, "data": args.data}
                results["default_job"] = child("default_job", cfg, work, "default_job", budget.left() + 40)
                continue
            r = child(runner, {**settings, "shape": shape}, work, f"{runner}-{shape}", budget.left())
            results[runner][shape] = r.get("methods", {m: r for m in settings["methods"]})
            results.setdefault("mlx_version", r.get("mlx_version"))
    for name, row in results["torch"].items():
        _, shape, method = name.split("-", 2)
        add_mfu(row, shape, method, settings, results["ceiling"].get("ceiling_tflops"))
        results.setdefault("torch_version", row.get("torch_version"))
        results.setdefault("peft_version", row.get("peft_version"))
    for runner in ("engine", "mlx_lm"):
        for shape, rows in results[runner].items():
            for method, row in rows.items():
                add_mfu(row, shape, method, settings, results["ceiling"].get("ceiling_tflops"))
    results["total_seconds"] = time.perf_counter() - tic
    text = render(results)
    targets = [RESULTS] + ([Path(os.environ["OUT"])] if os.environ.get("OUT") else [])
    for target in targets:
        target.mkdir(parents=True, exist_ok=True)
        (target / "gpu.json").write_text(json.dumps(results, indent=1))
        (target / "gpu.md").write_text(text)
    print(text)


if __name__ == "__main__":
    sys.exit(main())
