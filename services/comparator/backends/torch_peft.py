"""The PyTorch + PEFT backend: trains a RunSpec with Hugging Face transformers and PEFT on the same model dir,
the same tokenized and packed batches (the engine's own dataset code), the same schedule, clipping and
evaluation as the MLX engine, and reports the engine's RunResult fields, so a comparison can set MLX and
PyTorch side by side on one machine and measure the speed difference instead of asserting it.

Run as a child of the comparator: `python -m services.comparator.backends.torch_peft --run-dir DIR` reads
DIR/spec.json (model and data as absolute paths) and writes DIR/metrics.jsonl (step / eval / result records,
as the engine's), then DIR/result.json, or DIR/error.json ({code, field, message}) when it cannot run.

Devices: CUDA or MPS when present, else the CPU (float32). Methods: lora, dora (PEFT's use_dora), full;
qlora needs bitsandbytes on CUDA and is refused elsewhere. Peak memory: the allocator's peak on CUDA; on
the CPU the growth of the process's resident memory from just before the model is loaded (the closest
analogue of MLX's allocator peak, which also counts the weights).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from services.common.files import write_atomic

LOG_EVERY_STEP = True


class BackendError(Exception):
    def __init__(self, code: str, field: str, message: str):
        super().__init__(message)
        self.code, self.field, self.message = code, field, message


def learning_rate(spec: Any, step: int) -> float:
    """The engine's schedule (training.learning_rate_schedule) at optimizer step `step` (0-based): linear
    warmup from 0, then cosine / linear decay to min_lr_ratio x peak, or constant."""
    peak, floor = spec.learning_rate, spec.learning_rate * spec.min_lr_ratio
    if spec.warmup_steps and step < spec.warmup_steps:
        return peak * step / spec.warmup_steps
    k = step - spec.warmup_steps
    decay_steps = max(1, spec.iters - spec.warmup_steps)
    k = min(k, decay_steps)
    if spec.schedule == "cosine":
        return floor + 0.5 * (peak - floor) * (1 + math.cos(math.pi * k / decay_steps))
    if spec.schedule == "linear":
        return peak + (floor - peak) * k / decay_steps
    return peak


def _device():
    import torch

    if torch.cuda.is_available():
        return torch.device("cuda"), f"cuda ({torch.cuda.get_device_name(0)})"
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps"), "mps"
    return torch.device("cpu"), f"cpu ({torch.get_num_threads()} threads)"


def choose_threads(forward) -> int:
    """torch's CPU thread count for this run: PEFTLAB_TORCH_THREADS, else the faster of 1 and all cores on
    two timed forward passes. On a loaded machine OpenMP's spinning barriers can make all cores several times
    slower than one (measured 3x on 2 shared cores), and a comparison should not measure that."""
    import torch

    if os.environ.get("PEFTLAB_TORCH_THREADS"):
        return int(os.environ["PEFTLAB_TORCH_THREADS"])
    timings = {}
    for threads in sorted({1, os.cpu_count() or 1}):
        torch.set_num_threads(threads)
        forward()
        tic = time.perf_counter()
        forward()
        timings[threads] = time.perf_counter() - tic
    return min(timings, key=timings.get)


def _rss() -> int:
    import psutil

    return psutil.Process().memory_info().rss


class Run:
    def __init__(self, spec: Any, run_dir: Path, time_budget: float):
        import torch

        self.spec = spec
        self.run_dir = run_dir
        self.time_budget = time_budget
        self.torch = torch
        self.device, self.device_label = _device()
        self.metrics_file = open(run_dir / "metrics.jsonl", "w", buffering=1)
        self.peak_rss = 0

    def log(self, record: dict[str, Any]) -> None:
        self.metrics_file.write(json.dumps(record) + "\n")

    def cancelled(self) -> bool:
        return (self.run_dir / "cancel").exists()

    # ---- model ----

    def load(self):
        import peft
        from transformers import AutoModelForCausalLM, AutoTokenizer

        spec, torch = self.spec, self.torch
        if spec.method == "qlora":
            raise BackendError(
                "UNIMPLEMENTED",
                "method",
                f"qlora on the PyTorch backend needs bitsandbytes with CUDA; this machine runs {self.device_label}",
            )
        if spec.dtype not in ("auto", "float32") and self.device.type == "cpu":
            raise BackendError("INVALID_ARGUMENT", "dtype", f"{spec.dtype} is not supported on the CPU here")
        dtype = {"bfloat16": torch.bfloat16, "float16": torch.float16}.get(spec.dtype, torch.float32)
        if spec.dtype == "auto" and self.device.type != "cpu":
            dtype = torch.bfloat16
        torch.manual_seed(spec.seed)
        self.baseline_rss = _rss()
        model = AutoModelForCausalLM.from_pretrained(spec.model_path, dtype=dtype).to(self.device)
        tokenizer = AutoTokenizer.from_pretrained(spec.model_path)
        n_blocks = model.config.num_hidden_layers
        if spec.num_layers > n_blocks:
            raise BackendError(
                "INVALID_ARGUMENT", "num_layers", f"{spec.num_layers} exceeds {n_blocks} blocks"
            )
        if spec.method == "full":
            for p in model.parameters():
                p.requires_grad_(True)
        else:
            layers = n_blocks if spec.num_layers == -1 else spec.num_layers
            config = peft.LoraConfig(
                r=spec.rank,
                lora_alpha=spec.alpha,
                lora_dropout=spec.dropout,
                # "self_attn.q_proj" -> "q_proj": PEFT matches module name suffixes inside each block.
                target_modules=sorted({m.rsplit(".", 1)[-1] for m in spec.target_modules}),
                layers_to_transform=list(range(n_blocks - layers, n_blocks)),
                use_dora=spec.method == "dora",
            )
            model = peft.get_peft_model(model, config)
            # Adapters stay float32 whatever the base's dtype, as in the engine.
            for p in model.parameters():
                if p.requires_grad:
                    p.data = p.data.float()
        self.model, self.tokenizer = model, tokenizer
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.trainable = sum(p.numel() for p in self.params)
        self.total = sum(p.numel() for p in model.parameters())

    def predicted_peak(self) -> int:
        from services.common.memory import predict_for_model

        config = json.loads(Path(self.spec.model_path, "config.json").read_text())
        return predict_for_model(self.spec, config, quantized=False).peak_bytes

    # ---- data and loss ----

    def batch_tensors(self, batch):
        torch = self.torch
        inputs = torch.from_numpy(batch.inputs.astype("int64")).to(self.device)
        targets = torch.from_numpy(batch.targets.astype("int64")).to(self.device)
        mask = torch.from_numpy(batch.loss_mask).to(self.device)
        attention = None
        if batch.segments is not None:
            # Block-diagonal causal mask: packed samples never attend to each other (the engine's PackedMask).
            seg = torch.from_numpy(batch.segments).to(self.device)
            length = seg.shape[1]
            causal = torch.tril(torch.ones(length, length, dtype=torch.bool, device=self.device))
            attention = (seg[:, None, :, None] == seg[:, None, None, :]) & causal
        return inputs, targets, mask, attention

    def loss(self, batch):
        torch = self.torch
        inputs, targets, mask, attention = self.batch_tensors(batch)
        logits = self.model(input_ids=inputs, attention_mask=attention).logits.float()
        ce = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="none"
        ).reshape(targets.shape)
        ntoks = mask.sum()
        return (ce * mask).sum() / ntoks.clamp(min=1), ntoks

    def evaluate_loss(self, plan, max_batches: int = -1) -> float:
        torch = self.torch
        self.model.eval()
        total, ntoks = 0.0, 0.0
        with torch.no_grad():
            for batch in plan.epoch_batches(shuffle=False, limit=max_batches):
                loss, n = self.loss(batch)
                total += loss.item() * n.item()
                ntoks += n.item()
        self.model.train()
        return total / ntoks if ntoks else float("nan")

    # ---- the loop ----

    def train(self) -> dict[str, Any]:
        from services.common.datasets.layouts import Columns
        from services.common.datasets.samples import BatchPlan, load_dataset
        from services.common.datasets.scoring import perplexity

        spec, torch = self.spec, self.torch
        wall_start = time.perf_counter()
        self.load()
        splits = load_dataset(
            spec.data_path, self.tokenizer, spec.max_seq_length, spec.mask_prompt, Columns.of(spec)
        )
        train_plan = BatchPlan(splits["train"], spec.batch_size, spec.max_seq_length, spec.packing, spec.seed)
        valid_plan = BatchPlan(splits["valid"], spec.batch_size, spec.max_seq_length, spec.packing, spec.seed)
        per_epoch = train_plan.batches_per_epoch()
        if self.device.type == "cpu":
            probe = train_plan.batch(0, 0)

            def forward() -> None:
                with torch.no_grad():
                    self.loss(probe)

            torch.set_num_threads(choose_threads(forward))
            self.device_label = f"cpu ({torch.get_num_threads()} threads)"
        optimizer = torch.optim.AdamW(self.params, lr=spec.learning_rate, weight_decay=spec.weight_decay)
        best, evals = math.inf, []

        def evaluate(step: int) -> float:
            nonlocal best
            tic = time.perf_counter()
            loss = self.evaluate_loss(valid_plan, spec.val_batches)
            best = min(best, loss)
            evals.append(loss)
            self.log(
                {
                    "kind": "eval",
                    "step": step,
                    "valid_loss": loss,
                    "valid_perplexity": perplexity(loss),
                    "eval_seconds": time.perf_counter() - tic,
                    "best_valid_loss": best,
                }
            )
            return loss

        step, epoch, index, tokens, loss_tokens, train_seconds = 0, 0, 0, 0, 0, 0.0
        last_loss, status = math.nan, "succeeded"
        self.model.train()
        if spec.eval_every:
            evaluate(0)
        started = time.perf_counter()
        while step < spec.iters:
            if self.cancelled():
                raise BackendError("CANCELLED", "", "cancelled")
            if self.time_budget and train_seconds >= self.time_budget:
                status = "budget_stopped"
                break
            tic = time.perf_counter()
            lr = learning_rate(spec, step)
            for group in optimizer.param_groups:
                group["lr"] = lr
            step_loss, step_loss_tokens, step_tokens = 0.0, 0, 0
            for _ in range(spec.grad_accumulation):
                if index >= per_epoch:
                    epoch, index = epoch + 1, 0
                batch = train_plan.batch(epoch, index)
                index += 1
                loss, _ = self.loss(batch)
                (loss / spec.grad_accumulation).backward()
                step_loss += loss.item() * batch.loss_tokens
                step_loss_tokens += batch.loss_tokens
                step_tokens += batch.tokens
            clip = spec.max_grad_norm if spec.max_grad_norm > 0 else float("inf")
            norm = float(torch.nn.utils.clip_grad_norm_(self.params, clip))
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            seconds = time.perf_counter() - tic
            last_loss = step_loss / max(1, step_loss_tokens)
            if not math.isfinite(last_loss):
                raise BackendError(
                    "FAILED_PRECONDITION", "learning_rate", f"training diverged at step {step + 1}"
                )
            step += 1
            tokens += step_tokens
            loss_tokens += step_loss_tokens
            train_seconds += seconds
            rss = _rss()
            self.peak_rss = max(self.peak_rss, rss)
            self.log(
                {
                    "kind": "step",
                    "step": step,
                    "total_steps": spec.iters,
                    "train_loss": last_loss,
                    "learning_rate": lr,
                    "tokens": step_loss_tokens,
                    "tokens_per_second": step_tokens / seconds if seconds > 0 else 0.0,
                    "step_seconds": seconds,
                    "elapsed_seconds": time.perf_counter() - started,
                    "peak_memory_bytes": self.peak_memory(),
                    "rss_bytes": rss,
                    "grad_norm": norm,
                }
            )
            if spec.eval_every and step % spec.eval_every == 0 and step < spec.iters:
                evaluate(step)
        final_valid = evaluate(step) if step else math.nan
        adapter_bytes = self.save()
        test_loss, task = math.nan, None
        if "test" in splits and status == "succeeded":
            test_plan = BatchPlan(
                splits["test"], spec.batch_size, spec.max_seq_length, spec.packing, spec.seed
            )
            test_loss = self.evaluate_loss(test_plan)
            task = self.score(splits["test"])
        result = {
            "status": status,
            "steps": step,
            "final_train_loss": last_loss,
            "final_valid_loss": final_valid,
            "best_valid_loss": best,
            "valid_perplexity": perplexity(final_valid),
            "test_loss": test_loss,
            "test_perplexity": perplexity(test_loss) if math.isfinite(test_loss) else math.nan,
            "task": task,
            "train_tokens": tokens,
            "tokens_per_second": tokens / train_seconds if train_seconds else 0.0,
            "wall_seconds": time.perf_counter() - wall_start,
            "train_seconds": train_seconds,
            "peak_memory_bytes": self.peak_memory(),
            "peak_rss_bytes": max(self.peak_rss, _rss()),
            "predicted_peak_memory_bytes": self.predicted_peak(),
            "trainable_parameters": self.trainable,
            "total_parameters": self.total,
            "adapter_bytes": adapter_bytes,
            "run_dir": str(self.run_dir),
            "backend": f"torch {torch.__version__} {self.device_label}",
            "kind": "result",
        }
        self.log(result)
        return result

    def peak_memory(self) -> int:
        torch = self.torch
        if self.device.type == "cuda":
            return int(torch.cuda.max_memory_allocated())
        return max(0, max(self.peak_rss, _rss()) - self.baseline_rss)

    def save(self) -> int:
        """The adapter (PEFT's format) or the full weights; their size on disk."""
        out = self.run_dir / "adapter"
        self.model.save_pretrained(out)
        names = ("adapter_model.safetensors",) if self.spec.method != "full" else ()
        files = [out / n for n in names] if names else list(out.glob("*.safetensors"))
        return sum(f.stat().st_size for f in files if f.exists())

    def score(self, split) -> dict[str, Any] | None:
        """Greedy answers to the test prompts, scored by the engine's task scorer."""
        from services.common.datasets.samples import prompt_messages, reference_answer
        from services.common.datasets.scoring import scorer, task_name

        spec, torch = self.spec, self.torch
        if split.format == "text" or spec.test_samples <= 0:
            return None
        records = split.records[: spec.test_samples]
        tokenizer = self.tokenizer
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        texts, generated, seconds = [], 0, 0.0
        self.model.eval()
        for start in range(0, len(records), 16):
            prompts = [
                list(
                    tokenizer.apply_chat_template(
                        prompt_messages(r), add_generation_prompt=True, return_dict=False
                    )
                )
                for r in records[start : start + 16]
            ]
            width = max(len(p) for p in prompts)
            ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts], device=self.device)
            attention = torch.tensor(
                [[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=self.device
            )
            tic = time.perf_counter()
            with torch.no_grad():
                out = self.model.generate(
                    input_ids=ids,
                    attention_mask=attention,
                    max_new_tokens=spec.max_new_tokens,
                    do_sample=False,
                    eos_token_id=tokenizer.eos_token_id,
                    pad_token_id=pad,
                )
            seconds += time.perf_counter() - tic
            for row in out[:, width:].tolist():
                if tokenizer.eos_token_id in row:
                    row = row[: row.index(tokenizer.eos_token_id)]
                generated += len(row)
                texts.append(tokenizer.decode(row, skip_special_tokens=True))
        task = task_name(Path(spec.data_path))
        scores = scorer(task)(texts, [reference_answer(r) for r in records])
        return {
            "task": task,
            "n": len(records),
            "exact_match": scores["exact_match"],
            "field_accuracy": scores["field_accuracy"],
            "parse_rate": scores["parse_rate"],
            "generation_tokens_per_second": generated / seconds if seconds else 0.0,
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", required=True, type=Path)
    parser.add_argument(
        "--time-budget", type=float, default=0.0, help="stop training after this many seconds"
    )
    args = parser.parse_args(argv)
    run_dir: Path = args.run_dir

    def fail(code: str, field: str, message: str) -> int:
        write_atomic(run_dir / "error.json", json.dumps({"code": code, "field": field, "message": message}))
        return 1

    try:
        from services.common.errors import EngineError, SpecError
        from services.common.spec import RunSpec

        spec = RunSpec.from_dict(json.loads((run_dir / "spec.json").read_text()))
        result = Run(spec, run_dir, args.time_budget).train()
    except ImportError as exc:
        return fail(
            "FAILED_PRECONDITION",
            "",
            f"the PyTorch backend is not installed ({exc}); pip install 'peftlab[torch]'",
        )
    except BackendError as exc:
        return fail(exc.code, exc.field, exc.message)
    except SpecError as exc:
        return fail("INVALID_ARGUMENT", f"spec.{exc.field}", exc.problem)
    except EngineError as exc:
        return fail("INVALID_ARGUMENT", "spec.data", str(exc))
    except MemoryError:
        return fail("RESOURCE_EXHAUSTED", "", "out of memory")
    except Exception as exc:  # noqa: BLE001 - the comparator needs an outcome whatever happened
        traceback.print_exc()
        first = (str(exc).splitlines() or [""])[0][:300]
        return fail("INTERNAL", "", f"{type(exc).__name__}: {first} (traceback in {run_dir / 'log.txt'})")
    write_atomic(
        run_dir / "result.json",
        json.dumps(result, default=lambda v: None if isinstance(v, float) else str(v)),
    )
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
