"""The Markdown of bench/engine.py's results: one table per run (tokens/s, peak memory, ratios against the peers,
the profile of our LoRA step), written to bench/results/engine.md beside engine.json."""

from __future__ import annotations

import json
from pathlib import Path

from bench.engine_cases import CASES
from services.common.files import write_atomic

RESULTS = Path(__file__).resolve().parent / "results"
NOTES_MARKER = "<!-- analysis: kept across runs -->"


def ratio(a: dict | None, b: dict | None) -> float | None:
    if not a or not b or "error" in a or "error" in b or not b.get("tokens_per_second"):
        return None
    return a["tokens_per_second"] / b["tokens_per_second"]


def gb(x: float | None) -> str:
    return f"{x / 1e9:.2f}" if x else "-"


def fmt(x: float | None, spec: str = ".2f", suffix: str = "") -> str:
    return f"{x:{spec}}{suffix}" if x is not None else "-"


def render_run(label: str, run: dict) -> str:
    cases, lines = run["cases"], []
    sg = cases.get("sgemm") or {}
    lines += [
        f"### {label}",
        "",
        f"Started {run['started']}, {run['total_seconds'] / 60:.1f} min. Load before: `{run['uptime_before']}`; "
        f"after: `{run['uptime_after']}`. BLAS: {sg.get('blas', '?')}.",
        "",
        "MLX sgemm (GFLOP/s, best of 2-3): "
        + ", ".join(f"{n}^2 {v:.0f}" for n, v in (sg.get("square_gflops") or {}).items())
        + f"; peak {fmt(sg.get('peak_gflops'), '.0f')}.",
        "",
        "| contender | data | tok/s | vs ours LoRA | best step tok/s | median step s | timed steps | peak MLX GB "
        "| peak RSS GB | GFLOP/s | % of sgemm peak |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    reference = {"synthetic": cases.get("ours_lora"), "chat": cases.get("ours_lora_chat")}
    for spec in CASES:
        case = cases.get(spec.name)
        if spec.runner in ("sgemm", "profile") or case is None:
            continue
        data = "same batches (synthetic 4x256)" if spec.data == "synthetic" else "chat (useful tok/s)"
        if "error" in case:
            lines.append(f"| {spec.label} | {data} | error: {case['error'][:80]} |||||||| ")
            continue
        steps = f"{case['timed_steps']} (+{case['warmup_steps']} warm-up)"
        rel = ratio(reference[spec.data], case)
        frac = case.get("fraction_of_sgemm_peak")
        lines.append(
            f"| {spec.label} | {data} | {case['tokens_per_second']:.1f} | {fmt(1 / rel if rel else None, '.2f', 'x')} "
            f"| {case['tokens_per_second_max']:.1f} | {case['step_seconds_median']:.2f} | {steps} | {gb(case.get('peak_memory_bytes'))} "
            f"| {gb(case.get('peak_rss_bytes'))} | {fmt(case.get('achieved_gflops'), '.0f')} "
            f"| {fmt(frac * 100 if frac else None, '.0f', '%')} |"
        )
    r = run.get("ratios", {})
    lines += [
        "",
        "| ratio | value | goal |",
        "|---|---:|---:|",
        f"| ours LoRA / mlx_lm.lora, same batches | {fmt(r.get('ours_vs_mlx_lm_same_batches'), '.2f', 'x')} | >= 1.0x |",
        f"| ours LoRA packed / mlx_lm.lora padded, chat, useful tok/s | "
        f"{fmt(r.get('ours_packed_vs_mlx_lm_padded_chat_useful'), '.2f', 'x')} | >= 1.3x |",
        f"| ours LoRA padded / mlx_lm.lora padded, chat, useful tok/s | "
        f"{fmt(r.get('ours_padded_vs_mlx_lm_padded_chat_useful'), '.2f', 'x')} | |",
        f"| ours LoRA / PyTorch+PEFT, same batches | {fmt(r.get('ours_vs_torch_peft_same_batches'), '.2f', 'x')} "
        f"| close the 0.57x gap |",
        f"| ours LoRA with MLX's JIT at -march=native / ours LoRA | "
        f"{fmt(r.get('ours_native_jit_vs_ours'), '.2f', 'x')} | (engine candidate) |",
    ]
    torch_case = cases.get("torch_lora") or {}
    if torch_case.get("sgemm"):
        lines += [
            "",
            f"PyTorch {torch_case.get('torch_version')} ({torch_case.get('attention')} attention, "
            f"{torch_case.get('threads')} thread(s)) sgemm: "
            + ", ".join(f"{n}^2 {v:.0f}" for n, v in torch_case["sgemm"].items())
            + " GFLOP/s; forward alone (s) by thread count: "
            + ", ".join(f"{k}: {v:.2f}" for k, v in torch_case.get("forward_seconds_by_threads", {}).items())
            + f"; the steps ran with {torch_case.get('threads')}.",
        ]
    if sg.get("model_shapes_gflops"):
        lines += [
            "",
            "MLX matmul GFLOP/s on the step's shapes (T = 1024 tokens): "
            + "; ".join(f"{k} {v:.0f}" for k, v in sg["model_shapes_gflops"].items())
            + ".",
        ]
    lines += render_profile(cases.get("profile"), run)
    return "\n".join(lines)


def render_profile(p: dict | None, run: dict) -> list[str]:
    if not p or "error" in p:
        return ["", f"Profile: {p.get('error') if p else 'not run'}"]
    step = p["step_compiled"]
    n = p["layers"]
    forward, fwd_bwd = p["forward_compiled"], p["forward_backward_compiled"]
    blocks = n * p["block_forward_backward"]
    attention = n * p["attention_forward_backward_packed_mask"]
    adapters = n * (p["block_forward_backward"] - p["block_forward_backward_no_adapters"])
    head = p["head_forward_backward"]
    rows = [
        ("whole step (compiled, as the engine runs it)", step),
        ("forward (loss only)", forward),
        ("forward + backward (no update)", fwd_bwd),
        ("clip + AdamW update alone", p["update_compiled"]),
        ("vocabulary head + cross-entropy, fwd+bwd (576 -> 49152, tied)", head),
        (f"{n} blocks fwd+bwd ({n} x one block)", blocks),
        ("  of which attention (sdpa, packed mask) fwd+bwd", attention),
        ("  of which LoRA adapters (block minus block without adapters)", adapters),
        (
            f"all frozen-weight matmuls alone at the BLAS's speed on their shapes ({p['gemm_flops'] / 1e9:.0f} GFLOP)",
            p["gemm_seconds"],
        ),
        ("non-matmul time (step minus the matmuls)", step - p["gemm_seconds"]),
    ]
    cost, counts = p.get("elementwise_seconds_per_element"), p.get("transcendental_elements_per_pass")
    if cost and counts:
        # One forward pass each: a lower bound (the backward recomputes the vocabulary softmax's exp).
        rows += [
            ("  exp of the vocabulary softmax, one pass", counts["head_logits"] * cost["mlx_exp"]),
            ("  sigmoid of SiLU in the MLPs, one pass", counts["mlp_sigmoid"] * cost["mlx_sigmoid"]),
            ("  exp of attention's softmax, one pass", counts["attention_scores"] * cost["mlx_exp"]),
        ]
    out = [
        "",
        f"Profile of our LoRA step (batch {p['batch_shape']}, best of {p['reps']}; shares of the whole step):",
        "",
        "| part | seconds | share |",
        "|---|---:|---:|",
    ]
    out += [f"| {name} | {sec:.2f} | {sec / step * 100:.0f}% |" for name, sec in rows]
    if cost:
        out += [
            "",
            "Per-element cost on this CPU (ns): "
            + ", ".join(f"{k} {v * 1e9:.1f}" for k, v in cost.items())
            + ". MLX's CPU exp/sigmoid are scalar and single-threaded here; numpy's exp is vectorized.",
        ]
    out += [
        "",
        "Candidate changes, same batch:",
        "",
        "| change | seconds | vs now |",
        "|---|---:|---:|",
        f"| step without mx.compile | {p['step_uncompiled']:.2f} | {p['step_uncompiled'] / step:.2f}x |",
        f"| head fwd+bwd on 25% of positions (only loss tokens; chat learns "
        f"{fmt(run.get('chat_loss_token_share', None) and run['chat_loss_token_share'] * 100, '.0f', '%')}) | "
        f"{p['head_forward_backward_25pct_positions']:.2f} | {p['head_forward_backward_25pct_positions'] / head:.2f}x of head |",
        f"| head fwd+bwd on 50% of positions | {p['head_forward_backward_50pct_positions']:.2f} | "
        f"{p['head_forward_backward_50pct_positions'] / head:.2f}x of head |",
        f"| attention with the 'causal' mask, fwd+bwd x {n} | {n * p['attention_forward_backward_causal']:.2f} | "
        f"{p['attention_forward_backward_causal'] / p['attention_forward_backward_packed_mask']:.2f}x of attention |",
    ]
    return out


def render(results: dict) -> str:
    head = [
        "# Engine benchmark",
        "",
        "Written by `make bench-engine` (bench/engine.py); see its docstring for the method and the FLOP count. "
        "Tokens/s count non-padding tokens per second of step time (warm-up steps excluded); the synthetic data "
        "gives every contender the same (4, 256) batches. Ratios are measured back to back in one run; the "
        "machine is shared, so absolute numbers move with its load (noted per run).",
        "",
    ]
    body = [render_run(label, run) for label, run in results.get("runs", {}).items()]
    return "\n".join(head) + "\n" + "\n\n".join(body) + "\n"


def save(label: str, run: dict) -> dict:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / "engine.json"
    results = json.loads(path.read_text()) if path.exists() else {}
    results.setdefault("runs", {})[label] = run
    write_atomic(path, json.dumps(results, indent=1))
    rewrite_markdown(results)
    return results


def rewrite_markdown(results: dict) -> None:
    md = RESULTS / "engine.md"
    # A hand-written analysis below NOTES_MARKER survives re-runs; the tables above it are regenerated.
    notes = md.read_text().partition(NOTES_MARKER)[2] if md.exists() else ""
    write_atomic(md, render(results) + (f"\n{NOTES_MARKER}{notes}" if notes else ""))
