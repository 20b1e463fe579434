"""Benchmark of the engine's training step: tokens/s and peak memory of LoRA, DoRA, QLoRA and full fine-tuning
of the default model against mlx_lm's own `mlx_lm lora` CLI and PyTorch + HF transformers + PEFT, measured back
to back on this machine, with the sgemm peak of MLX's BLAS and a profile of our LoRA step.

Every contender runs in a process of its own (bench/engine_peers.py, bench/engine_profile.py, the mlx_lm CLI).
Results go to bench/results/engine.json (one entry per OpenBLAS setting, so the two runs of
`make bench-engine` sit side by side) and a Markdown table in bench/results/engine.md.

Comparisons:
- same batches: a synthetic text dataset whose samples are all exactly seq_len + 1 tokens, so our packed rows
  and mlx_lm's padded batches are the same (B, seq_len) inputs: step tokens/s compare directly.
- real padded chat data (the default dataset): *useful* (non-padding) tokens/s, ours packing several samples
  per row against mlx_lm padding each batch to its longest sample rounded up to 32.

FLOPs of a step (T = B x L positions, N = weights of the matmul path, 134.5M here: 7 projections x 30 blocks
plus the 49152-word tied head): forward 2NT; backward 2NT for the input gradients through the frozen weights
(LoRA/DoRA/QLoRA never form a frozen weight's gradient) plus another 2NT of weight gradients for full
fine-tuning; plus the adapters' own 6rT(d_in + d_out) per adapted projection and attention's 12 B H L^2 d_head
per block (forward 4, backward 8; MLX's CPU attention computes the whole L x L square). So LoRA is ~4NT, full
~6NT; the usual 6NT estimate would overstate what a LoRA step computes by 1.5x.

Run: `make bench-engine` (installs torch and peft, runs with OPENBLAS_CORETYPE as set and unset), or
`LD_PRELOAD=$(python -m services.trainer.engine.blas) python -m bench.engine [--steps 20] [--only lora,...]`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from bench.engine_cases import CASES, Case
from bench.engine_peers import summarize_steps
from bench.engine_report import RESULTS, ratio, render, render_run, rewrite_markdown, save
from services.common.paths import DEFAULT_QUANTIZED_MODEL_NAME, default_data, default_model
from services.common.spec import DEFAULT_TARGET_MODULES
from services.trainer.engine.blas import optimized_blas_path, preload_env

REPO = Path(__file__).resolve().parents[1]
PROJECTION_KEYS = DEFAULT_TARGET_MODULES  # what our LoRA adapts; mlx_lm.lora is given the same keys
# Words that are one token each with this tokenizer, so a sample of k words is exactly k tokens (checked).
WORDS = (
    "the of and to in is was for on that with as by at from his her an which are this be had not but they one"
)
OPENBLAS_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")


@dataclass
class Settings:
    model: str
    chat_data: str
    batch_size: int = 4
    seq_len: int = 256
    rank: int = 8
    alpha: float = 16.0
    num_layers: int = -1  # all 30 blocks, the engine's default
    warmup: int = 2
    steps: int = 20
    qlora_warmup: int = 1  # a QLoRA step takes ~2 minutes on CPU (no fast quantized kernels)
    qlora_steps: int = 2
    profile_reps: int = 2


# ---- data --------------------------------------------------------------------------------------------------


def write_synthetic(out: Path, tokenizer, n_train: int, n_valid: int, tokens: int) -> None:
    """Text samples of exactly `tokens` tokens once the EOS both trainers append is counted."""
    words = WORDS.split()
    rng = np.random.default_rng(0)
    out.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("valid", n_valid)):
        with open(out / f"{split}.jsonl", "w") as fh:
            for _ in range(n):
                text = " ".join(rng.choice(words, tokens - 1))
                if len(tokenizer.encode(text)) != tokens - 1:
                    raise SystemExit(
                        f"synthetic sample is not {tokens - 1} tokens; the word list needs fixing"
                    )
                fh.write(json.dumps({"text": text}) + "\n")


def link_train_valid(src: Path, out: Path) -> None:
    """train/valid only: without a test split our engine skips its end-of-run test pass."""
    out.mkdir(parents=True, exist_ok=True)
    for split in ("train", "valid"):
        (out / f"{split}.jsonl").symlink_to((src / f"{split}.jsonl").resolve())


def mlx_lm_step_tokens(data: Path, tokenizer, settings: Settings, steps: int, seed: int = 0) -> list[int]:
    """Non-padding tokens of each of mlx_lm's first `steps` batches, rebuilt as its trainer builds them.

    mlx_lm sorts samples by `len(dataset[i])`, which for its Text/ChatDataset is the raw record's key count,
    so the order stays the file's; it groups them in fours, and `lora.run` seeds numpy before the trainer's
    first `np.random.permutation` of the batches. Checked against the cumulative count mlx_lm prints.
    """
    records = [json.loads(line) for line in open(data / "train.jsonl") if line.strip()]

    def length(record: dict) -> int:
        if "messages" in record:
            return len(tokenizer.apply_chat_template(record["messages"], return_dict=False))
        tokens = tokenizer.encode(record["text"])
        return len(tokens) + (tokens[-1] != tokenizer.eos_token_id)

    order = sorted(range(len(records)), key=lambda i: len(records[i]))
    b = settings.batch_size
    batches = [order[i : i + b] for i in range(0, len(order) - b + 1, b)]
    np.random.seed(seed)
    perm = np.random.permutation(len(batches))
    limit = settings.seq_len + 1
    lengths: dict[int, int] = {}
    out = []
    for k in range(steps):
        members = batches[perm[k % len(batches)]]
        for i in members:
            if i not in lengths:
                lengths[i] = min(length(records[i]), limit)
        # Padded to one plus a multiple of 32 (at most max_seq_length); inputs are that width minus one.
        width = min(1 + 32 * ((max(lengths[i] for i in members) + 31) // 32), limit)
        out.append(sum(min(lengths[i], width - 1) for i in members))
    return out


# ---- FLOPs ---------------------------------------------------------------------------------------------------


def step_flops(config: dict, method: str, batch: int, length: int, rank: int, num_layers: int) -> float:
    """FLOPs of one training step over (batch, length) positions (see the module docstring)."""
    d, ff, vocab = config["hidden_size"], config["intermediate_size"], config["vocab_size"]
    heads, kv_heads = config["num_attention_heads"], config["num_key_value_heads"]
    head_dim = config.get("head_dim") or d // heads
    n_blocks = config["num_hidden_layers"]
    kv = kv_heads * head_dim
    proj = [(d, heads * head_dim), (d, kv), (d, kv), (heads * head_dim, d), (d, ff), (d, ff), (ff, d)]
    t = batch * length
    n = n_blocks * sum(i * o for i, o in proj) + d * vocab
    attention = n_blocks * 12 * batch * heads * length**2 * head_dim
    if method == "full":
        return 6 * n * t + attention
    adapted = n_blocks if num_layers == -1 else num_layers
    adapters = adapted * sum(6 * rank * t * (i + o) for i, o in proj)
    return 4 * n * t + adapters + attention


# ---- running contenders ------------------------------------------------------------------------------------


def run_child(cmd: list[str], env: dict, log: Path) -> tuple[int, int, float]:
    """(exit code, peak RSS bytes, wall seconds) of a child process, its output in `log`."""
    tic = time.perf_counter()
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=REPO)
        _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, usage.ru_maxrss * 1024, time.perf_counter() - tic


ANSI = re.compile(r"\x1b\[[0-9;]*m")
# "  12    1.234 ▼      180      2.0k": iteration, train loss, tokens/s of this report, cumulative tokens.
REPORT = re.compile(r"^\s*(\d+)\s+([\d.]+|nan)\s+[▼▲]\s+([\d,]+)\s+([\d.]+)k\s*$")


def parse_mlx_lm(text: str) -> list[tuple[int, float, float, float]]:
    rows = []
    for line in ANSI.sub("", text).splitlines():
        m = REPORT.match(line)
        if m:
            rows.append((int(m[1]), float(m[2]), float(m[3].replace(",", "")), float(m[4]) * 1000))
    return rows


def run_mlx_lm(case: Case, data: Path, settings: Settings, work: Path, env: dict, tokenizer) -> dict:
    iters = settings.warmup + settings.steps
    cfg = {
        "lora_parameters": {
            "rank": settings.rank,
            "scale": settings.alpha / settings.rank,
            "dropout": 0.0,
            "keys": list(PROJECTION_KEYS),
        },
        # AdamW with bias correction and no weight decay, as our engine's step (mlx's Adam defaults to none).
        "optimizer": "adamw",
        "optimizer_config": {"adamw": {"bias_correction": True, "weight_decay": 0.0}},
        "learning_rate": 2e-4,
        "steps_per_report": 1,
        "steps_per_eval": 10**6,
        "val_batches": 1,
        "save_every": 10**6,
        "seed": 0,
    }
    cfg_path = work / f"{case.name}.yaml"
    cfg_path.write_text(json.dumps(cfg))  # JSON is YAML
    cmd = [
        sys.executable,
        "-m",
        "mlx_lm",
        "lora",
        "--model",
        settings.model,
        "--train",
        "--data",
        str(data),
        "--iters",
        str(iters),
        "--batch-size",
        str(settings.batch_size),
        # mlx_lm's max_seq_length counts the one-token target shift; ours does not.
        "--max-seq-length",
        str(settings.seq_len + 1),
        "--num-layers",
        str(settings.num_layers),
        "--adapter-path",
        str(work / f"{case.name}-adapters"),
        "-c",
        str(cfg_path),
    ]
    log = work / f"{case.name}.log"
    code, rss, wall = run_child(cmd, env, log)
    if code != 0:
        raise RuntimeError(f"mlx_lm exited {code}: {log.read_text()[-2000:]}")
    rows = parse_mlx_lm(log.read_text())
    if len(rows) != iters:
        raise RuntimeError(f"parsed {len(rows)} of {iters} mlx_lm step reports; see {log}")
    tokens = mlx_lm_step_tokens(data, tokenizer, settings, iters)
    # Our rebuilt batch sizes must add up to what mlx_lm printed (0.1k resolution); if they do not, fall back
    # to the differences of its printed running total (coarser: +-50 tokens a step).
    drift = max(abs(cum - sum(tokens[:it])) for it, _, _, cum in rows)
    if drift > 60:
        print(f"  rebuilt mlx_lm batches drift {drift} tokens from its report; using its running total")
        totals = [0.0] + [cum for *_, cum in rows]
        tokens = [b - a for a, b in zip(totals, totals[1:])]
    steps = [
        {"seconds": n / rate, "tokens": n, "loss": loss, "reported_tokens_per_second": rate}
        for (_, loss, rate, _), n in zip(rows, tokens)
    ]
    out = summarize_steps(steps, settings.warmup)
    out.update(peak_rss_bytes=rss, wall_seconds=wall, tokens_check_drift=drift)
    return out


def run_python(module: str, args: list[str], cfg: dict, name: str, work: Path, env: dict) -> dict:
    out_path, log = work / f"{name}.json", work / f"{name}.log"
    cmd = [sys.executable, "-m", module, *args, "--config", json.dumps(cfg), "--out", str(out_path)]
    code, rss, wall = run_child(cmd, env, log)
    if code != 0 or not out_path.exists():
        raise RuntimeError(f"{module} {' '.join(args)} exited {code}: {log.read_text()[-2000:]}")
    result = json.loads(out_path.read_text())
    result.update(peak_rss_bytes=max(rss, result.get("peak_rss_bytes", 0)), wall_seconds=wall)
    return result


def without_preload(env: dict) -> dict:
    """PyTorch brings its own BLAS (MKL/oneDNN); the OpenBLAS preload is MLX's fix, so torch runs without it."""
    env = dict(env)
    blas = optimized_blas_path()
    parts = [p for p in env.get("LD_PRELOAD", "").split(":") if p and p != blas]
    if parts:
        env["LD_PRELOAD"] = ":".join(parts)
    else:
        env.pop("LD_PRELOAD", None)
    return env


def native_jit_env(env: dict, work: Path) -> dict:
    """MLX builds mx.compile'd CPU kernels with a hard-coded `g++ -std=c++17 -O3 ...` (no -march), so their
    simd::exp/fma run as scalar libm calls; a g++ first on PATH that adds -march=native lets the compiler use
    FMA and AVX. Kernels are cached by name under $TMPDIR/mlx, hence a cache of their own."""
    wrapper = work / "native-gxx"
    wrapper.mkdir(exist_ok=True)
    gxx = wrapper / "g++"
    real = shutil.which("g++") or "/usr/bin/g++"
    gxx.write_text(f'#!/bin/sh\nexec {real} -march=native "$@"\n')
    gxx.chmod(0o755)
    cache = work / "native-jit-tmp"
    cache.mkdir(exist_ok=True)
    return {**env, "PATH": f"{wrapper}:{env.get('PATH', '')}", "TMPDIR": str(cache)}


def run_case(
    case: Case, settings: Settings, dirs: dict[str, Path], work: Path, tokenizer, config: dict
) -> dict:
    env = preload_env()
    env.setdefault("PYTHONUNBUFFERED", "1")
    base = {
        "num_layers": settings.num_layers,
        "rank": settings.rank,
        "alpha": settings.alpha,
        "batch_size": settings.batch_size,
        "seq_len": settings.seq_len,
    }
    data = dirs[case.data]
    if case.runner == "sgemm":
        shape = {
            "hidden": config["hidden_size"],
            "intermediate": config["intermediate_size"],
            "kv_dim": config["num_key_value_heads"] * (config.get("head_dim") or 64),
            "vocab": config["vocab_size"],
            "tokens": settings.batch_size * settings.seq_len,
        }
        return run_python(
            "bench.engine_peers",
            ["sgemm"],
            {"sizes": [1024, 2048, 4096], "model_shape": shape},
            case.name,
            work,
            env,
        )
    if case.runner == "profile":
        cfg = {**base, "data": str(data), "reps": settings.profile_reps}
        return run_python("bench.engine_profile", [], cfg, case.name, work, env)
    if case.runner == "mlx_lm":
        return run_mlx_lm(case, data, settings, work, env, tokenizer)
    qlora = case.method == "qlora"
    cfg = {
        **base,
        "data": str(data),
        "model": settings.model,
        "method": case.method,
        "packing": case.packing,
        "warmup": settings.qlora_warmup if qlora else settings.warmup,
        "steps": settings.qlora_steps if qlora else settings.steps,
    }
    if case.runner == "torch":
        return run_python("bench.engine_peers", ["torch"], cfg, case.name, work, without_preload(env))
    if case.native_jit:
        env = native_jit_env(env, work)
    return run_python("bench.engine_peers", ["engine"], cfg, case.name, work, env)


# ---- report ------------------------------------------------------------------------------------------------


def openblas_label(env: dict | None = None) -> str:
    env = os.environ if env is None else env
    set_vars = [f"{k}={env[k]}" for k in OPENBLAS_VARS if k in env]
    return ", ".join(set_vars) if set_vars else "OPENBLAS_CORETYPE/L2_SIZE unset"


def uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, timeout=5).stdout.strip()
    except OSError:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())


def add_derived(run: dict, config: dict, settings: Settings) -> None:
    """FLOP rates and fractions of the sgemm peak per case, and the headline ratios."""
    cases = run["cases"]
    peak = (cases.get("sgemm") or {}).get("peak_gflops")
    for name, case in cases.items():
        spec = next((c for c in CASES if c.name == name), None)
        if spec is None or spec.runner in ("sgemm", "profile") or "error" in case:
            continue
        # FLOPs follow the positions computed (padding included), timed over the measured steps.
        if spec.data == "synthetic":
            positions = settings.batch_size * settings.seq_len
            flops = step_flops(
                config, spec.method, settings.batch_size, settings.seq_len, settings.rank, settings.num_layers
            )
            case["step_flops"] = flops
            seconds_per_step = case["seconds"] / max(1, case["timed_steps"])
            case["achieved_gflops"] = flops / seconds_per_step / 1e9
            if peak:
                case["fraction_of_sgemm_peak"] = case["achieved_gflops"] / peak
            case["positions_per_step"] = positions
    run["ratios"] = {
        "ours_vs_mlx_lm_same_batches": ratio(cases.get("ours_lora"), cases.get("mlx_lm_lora")),
        "ours_packed_vs_mlx_lm_padded_chat_useful": ratio(
            cases.get("ours_lora_chat"), cases.get("mlx_lm_lora_chat")
        ),
        "ours_padded_vs_mlx_lm_padded_chat_useful": ratio(
            cases.get("ours_lora_chat_unpacked"), cases.get("mlx_lm_lora_chat")
        ),
        "ours_packed_vs_ours_padded_chat_useful": ratio(
            cases.get("ours_lora_chat"), cases.get("ours_lora_chat_unpacked")
        ),
        "ours_vs_torch_peft_same_batches": ratio(cases.get("ours_lora"), cases.get("torch_lora")),
        "ours_native_jit_vs_ours": ratio(cases.get("ours_lora_native_jit"), cases.get("ours_lora")),
    }
    chat = cases.get("ours_lora_chat") or {}
    if chat.get("steps"):
        loss_share = [s.get("loss_tokens", 0) / s["tokens"] for s in chat["steps"] if s["tokens"]]
        if loss_share and any(loss_share):
            run["chat_loss_token_share"] = float(np.mean(loss_share))


# ---- main --------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20, help="timed steps (LoRA, DoRA, full, peers)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (compile, allocator)")
    parser.add_argument("--qlora-steps", type=int, default=2)
    parser.add_argument("--qlora-warmup", type=int, default=1)
    parser.add_argument("--num-layers", type=int, default=-1, help="adapted blocks (-1 = all)")
    parser.add_argument(
        "--only", default="", help="comma-separated case names (default: all but ours_lora_chat_unpacked)"
    )
    parser.add_argument("--profile-reps", type=int, default=2)
    parser.add_argument("--no-save", action="store_true", help="print only; leave bench/results alone")
    parser.add_argument("--render", action="store_true", help="only rewrite engine.md from engine.json")
    args = parser.parse_args(argv)
    if args.render:
        rewrite_markdown(json.loads((RESULTS / "engine.json").read_text()))
        return

    from transformers import AutoTokenizer  # a tokenizer only: the models load in the children

    settings = Settings(
        model=str(default_model()),
        chat_data=str(default_data()),
        num_layers=args.num_layers,
        warmup=args.warmup,
        steps=args.steps,
        qlora_warmup=args.qlora_warmup,
        qlora_steps=args.qlora_steps,
        profile_reps=args.profile_reps,
    )
    only = {n for n in args.only.split(",") if n}
    unknown = only - {c.name for c in CASES}
    if unknown:
        raise SystemExit(f"unknown case(s) {sorted(unknown)}; choose from {[c.name for c in CASES]}")
    config = json.loads((Path(settings.model) / "config.json").read_text())
    tokenizer = AutoTokenizer.from_pretrained(settings.model)
    label = openblas_label()
    run = {
        "label": label,
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "uptime_before": uptime(),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "settings": asdict(settings),
        "quantized_model": str(Path(settings.model).parent / DEFAULT_QUANTIZED_MODEL_NAME),
        "cases": {},
    }
    tic = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-engine-") as tmp:
        work = Path(tmp)
        synthetic, chat = work / "synthetic", work / "chat"
        n_train = settings.batch_size * (settings.warmup + settings.steps + 2)
        write_synthetic(synthetic, tokenizer, n_train, settings.batch_size * 2, settings.seq_len + 1)
        link_train_valid(Path(settings.chat_data), chat)
        dirs = {"synthetic": synthetic, "chat": chat}
        for case in CASES:
            if (only and case.name not in only) or (case.optional and not only):
                continue
            print(f"[{time.strftime('%H:%M:%S')}] {case.name} ({label})", flush=True)
            try:
                run["cases"][case.name] = run_case(case, settings, dirs, work, tokenizer, config)
            except Exception as exc:  # one contender failing must not lose the others' numbers
                run["cases"][case.name] = {"error": str(exc)}
                print(f"  failed: {str(exc)[-500:]}", flush=True)
            c = run["cases"][case.name]
            if "tokens_per_second" in c:
                print(f"  {c['tokens_per_second']:.1f} tok/s over {c['timed_steps']} steps", flush=True)
    run["total_seconds"] = time.perf_counter() - tic
    run["uptime_after"] = uptime()
    add_derived(run, config, settings)
    if args.no_save:
        print(render({"runs": {label: run}}))
        return
    results = save(label, run)
    print(render_run(label, results["runs"][label]))


if __name__ == "__main__":
    sys.exit(main())
