"""`peftlab train`: run the engine locally, no services needed. Precedence: CLI flags > --config YAML > defaults."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

SHORTCUTS = {
    "model": "model dir (default: the converted SmolLM2-135M-Instruct)",
    "data": "dataset dir with train/valid/test.jsonl (default: the generated extraction task)",
    "method": "lora | dora | qlora | full",
    "iters": "optimizer steps",
    "rank": "LoRA rank",
    "learning_rate": "peak learning rate",
    "batch_size": "rows per micro-batch, or auto (largest that fits memory; see effective_batch_size)",
    "seed": "random seed",
    "report_to": "experiment trackers, comma-separated: tensorboard,mlflow,wandb",
    "workers": "data-parallel processes on this machine (mx.distributed: ring on CPU/Metal, NCCL on CUDA); "
    "each takes batch_size / workers rows",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="YAML file of RunSpec fields")
    for name, help_text in SHORTCUTS.items():
        parser.add_argument(f"--{name.replace('_', '-')}", dest=name, help=help_text)
    parser.add_argument(
        "--set", action="append", default=[], metavar="FIELD=VALUE", help="any other RunSpec field"
    )
    parser.add_argument("--output", type=Path, help="run dir (default: var/runs/<time>-<method>)")
    parser.add_argument(
        "--resume", type=Path, metavar="DIR", help="continue the run in DIR from its last checkpoint"
    )
    parser.add_argument(
        "--no-baseline",
        action="store_true",
        help="skip every evaluation before training (base-model scoring, step-0 validation)",
    )


def build_spec(args: argparse.Namespace):
    from services.common.spec import RunSpec

    values: dict = {}
    if args.resume:
        import json

        values.update(json.loads((args.resume / "spec.json").read_text()))
    if args.config:
        values.update(RunSpec.from_yaml(args.config).to_dict())
    for name in SHORTCUTS:
        if getattr(args, name, None) is not None:
            values[name] = getattr(args, name)
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--set expects FIELD=VALUE, got {item!r}")
        values[key.strip()] = value.strip()
    if values.get("model"):
        values["model"] = resolve_local(str(values["model"]), "model")
    if values.get("data"):
        values["data"] = resolve_local(str(values["data"]), "data")
    return RunSpec.from_dict(values)


def resolve_local(value: str, kind: str) -> str:
    """A model or dataset named the way the services take it (a dir under PEFTLAB_MODELS_ROOT /
    PEFTLAB_DATA_ROOT, default var/models and var/data), or a path on this machine. A name found nowhere
    fails here, naming where it looked, so it never reaches mlx_lm as a Hugging Face Hub id; only a
    `user/repo` name that is not a local dir is passed on for the hub."""
    import os

    from services.common import paths
    from services.common.errors import ServiceError
    from services.common.validation import DATASET_SUFFIXES, Roots, dataset_dir, model_dir

    given = Path(value).expanduser()
    # A local dir the engine reads: a model's config.json; a dataset's train split in any format it reads.
    markers = (
        ["config.json"]
        if kind == "model"
        else ["dataset_dict.json", *(f"train{s}" for s in DATASET_SUFFIXES)]
    )
    if any((given / marker).is_file() for marker in markers):
        return str(given.resolve())
    models = os.environ.get("PEFTLAB_MODELS_ROOT") or paths.models_dir()
    data = os.environ.get("PEFTLAB_DATA_ROOT") or paths.data_dir()
    roots = Roots.from_paths(Path(models), Path(data), paths.runs_dir())
    try:
        found = (model_dir if kind == "model" else dataset_dir)(value, roots, f"--{kind}")
        return str(found)
    except ServiceError as exc:
        if (
            kind == "model"
            and value.count("/") == 1
            and not given.exists()
            and not value.startswith((".", "/"))
        ):
            return value  # a hub id (user/repo): mlx_lm downloads it where the hub is reachable
        root = roots.models if kind == "model" else roots.data
        raise SystemExit(
            f"error: --{kind} {value!r}: not a {kind} dir here ({given.resolve()}) nor under {root} "
            f"({exc.message})"
        ) from None


class ProgressBar:
    """tqdm bar fed by the engine's callback hooks."""

    def __init__(self) -> None:
        from tqdm import tqdm

        self._tqdm = tqdm
        self.bar = None
        self.phase_bar = None
        self.phase = ""
        self.valid = float("nan")

    def progress(self, phase: str, done: int, total: int, unit: str) -> None:
        """A bar per phase outside training (test loss, scoring), so the CLI never sits silent."""
        if phase != self.phase or self.phase_bar is None:
            if self.phase_bar is not None:
                self.phase_bar.close()
            label = phase.replace("_", " ")
            self.phase_bar = self._tqdm(total=total, desc=label, unit=unit.rstrip("s"), leave=False)
            self.phase = phase
        self.phase_bar.n = done
        self.phase_bar.refresh()
        if done >= total:
            self.phase_bar.close()
            self.phase_bar, self.phase = None, ""

    def callback(self):
        from services.trainer.engine.callbacks import TrainingCallback

        outer = self

        class Hooks(TrainingCallback):
            def on_start(self, info: dict) -> None:
                spec = info["spec"]
                mem = info["predicted_peak_memory_bytes"] / 2**30
                print(
                    f"{spec['method']} on {info['base_model']}: {info['trainable_parameters']:,} trainable of "
                    f"{info['total_parameters']:,} parameters; predicted peak memory {mem:.2f} GiB; {info['backend']}"
                )
                outer.bar = outer._tqdm(total=spec["iters"], initial=info["resumed_from_step"], unit="step")

            def on_step(self, m) -> None:
                outer.bar.update(1)
                outer.bar.set_postfix(
                    loss=f"{m.train_loss:.3f}", valid=f"{outer.valid:.3f}", tok_s=f"{m.tokens_per_second:.0f}"
                )

            def on_eval(self, m) -> None:
                outer.valid = m.valid_loss

            def on_log(self, message: str) -> None:
                (outer.bar.write if outer.bar else print)(message)

            def on_progress(self, phase: str, done: int, total: int, unit: str) -> None:
                outer.progress(phase, done, total, unit)

            def on_end(self, result) -> None:
                if outer.bar:
                    outer.bar.close()

        return Hooks()


def print_result(result, baseline) -> None:
    rows = [
        ("status", result.status),
        ("steps", result.steps),
        ("train loss (last step)", f"{result.final_train_loss:.4f}"),
        ("valid loss / perplexity", f"{result.final_valid_loss:.4f} / {result.valid_perplexity:.2f}"),
        (
            f"test loss / perplexity ({result.test_loss_samples} samples)",
            f"{result.test_loss:.4f} / {result.test_perplexity:.2f}",
        ),
        (
            "micro-batch x accumulation",
            f"{result.batch_size} x {result.grad_accumulation}" + (" (auto)" if result.batch_auto else ""),
        ),
        ("tokens/s (training)", f"{result.tokens_per_second:.0f}"),
        ("wall time", f"{result.wall_seconds:.1f} s (training {result.train_seconds:.1f} s)"),
        (
            "peak memory (MLX)",
            f"{result.peak_memory_bytes / 2**20:.0f} MiB (predicted {result.predicted_peak_memory_bytes / 2**20:.0f} MiB)",
        ),
        ("peak RSS", f"{result.peak_rss_bytes / 2**20:.0f} MiB"),
        ("trainable parameters", f"{result.trainable_parameters:,} of {result.total_parameters:,}"),
        ("adapter size", f"{result.adapter_bytes / 2**20:.2f} MiB"),
    ]
    if result.task is not None:
        before = f"{baseline.exact_match:.1%} -> " if baseline is not None else ""
        rows.append((f"test exact match ({result.task.n} samples)", f"{before}{result.task.exact_match:.1%}"))
        for name, acc in sorted(result.task.field_accuracy.items()):
            rows.append((f"  field {name}", f"{acc:.1%}"))
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    print(f"run dir: {result.run_dir}")


def _end_ranks(ranks: list, workdir: Path | None) -> None:
    """Wait for the other ranks (they finish with rank 0); a rank left hanging after rank 0 failed is stopped."""
    import shutil

    for process in ranks:
        process.join(60.0)
        if process.is_alive():
            process.terminate()
            process.join(5.0)
    if workdir is not None:
        shutil.rmtree(workdir, ignore_errors=True)


def main(args: argparse.Namespace) -> int:
    from services.trainer.engine.blas import ensure_preloaded

    ensure_preloaded()  # re-execs with OpenBLAS on Linux CPU when mlx is not yet imported
    from services.common.errors import FailedPrecondition
    from services.common.paths import runs_dir
    from services.trainer.engine import api
    from services.trainer.engine.errors import EngineError, SpecError
    from services.trainer.trackers import RunContext
    from services.trainer.trackers.run import train_tracked

    try:
        spec = build_spec(args)
        run_dir = args.resume or args.output or runs_dir() / f"{time.strftime('%Y%m%d-%H%M%S')}-{spec.method}"
        baseline = None
        if not args.resume and not args.no_baseline and spec.test_samples:
            print(f"scoring the base model on {spec.test_samples} test samples ...", flush=True)
            bar = ProgressBar()
            baseline = api.score_base_model(spec, bar.callback())
            if baseline is not None:
                print(f"base model exact match: {baseline.exact_match:.1%}")
        run_dir = Path(run_dir)
        context = RunContext(run_id=run_dir.name, run_dir=run_dir, name=run_dir.name)
        ranks, workdir = [], None
        if spec.workers > 1:
            from services.trainer.engine.distributed import start_local_ranks

            ranks, workdir = start_local_ranks(spec.to_dict(), run_dir, bool(args.resume), spec.workers)
        try:
            result = train_tracked(
                spec,
                run_dir,
                context,
                resume=bool(args.resume),
                callback=ProgressBar().callback(),
                initial_eval=not args.no_baseline,
            )
        finally:
            _end_ranks(ranks, workdir)
        failed = [(p.name, p.exitcode) for p in ranks if p.exitcode != 0]
        if failed:
            print(f"error: data-parallel ranks failed: {failed}", file=sys.stderr)
            return 1
    except (EngineError, SpecError, FailedPrecondition) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print_result(result, baseline)
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="peftlab train", description=__doc__)
    add_arguments(parser)
    sys.exit(main(parser.parse_args()))
