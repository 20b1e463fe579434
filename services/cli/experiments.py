"""`peftlab compare` and `peftlab study`: start a method comparison or a hyperparameter study on the
gateway, follow it, and print (and save) its report.

    peftlab compare --methods lora,dora,qlora,full --iters 60 --seeds 0,1 [--torch lora] [--out DIR]
    peftlab study --trials 12 --parallelism 2 --methods lora,dora [--prune median] [--out DIR]
    peftlab experiment list | watch ID [--out DIR] | report ID [--out DIR] | cancel ID
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

DEFAULT_METHODS = "lora,dora,qlora,full"
REATTACH = (
    "It runs on the comparator: if this command stops, `peftlab experiment watch {id}` follows it again, "
    "`peftlab experiment report {id} --out DIR` fetches its report."
)


def _base_spec(args: argparse.Namespace):
    """The base RunSpec: --config YAML, then the shortcuts, then --set key=value (CLI > YAML)."""
    import yaml
    from peftlab.v1 import common_pb2

    from services.cli.client import load_spec
    from services.common.codec import fill

    spec = load_spec(args.config) if args.config else common_pb2.RunSpec()
    shortcuts = {
        "model": args.model,
        "data": args.data,
        "iters": args.iters,
        "test_samples": args.test_samples,
        "eval_every": args.eval_every,
    }
    values: dict[str, Any] = {k: v for k, v in shortcuts.items() if v is not None}
    if args.report_to:
        values["report_to"] = [name.strip() for name in args.report_to.split(",") if name.strip()]
    for item in args.set or []:
        key, sep, text = item.partition("=")
        if not sep:
            raise SystemExit(f"error: --set wants key=value, got {item!r}")
        values[key] = yaml.safe_load(text)
    if args.iters is not None and "warmup_steps" not in values and not spec.HasField("warmup_steps"):
        # The default warmup (10 steps) would not fit a short run: a tenth of it instead.
        values["warmup_steps"] = min(10, args.iters // 10)
    try:
        return fill(spec, values)
    except (TypeError, ValueError) as exc:
        raise SystemExit(f"error: {exc}") from None


def _placement(args: argparse.Namespace):
    from peftlab.v1 import common_pb2

    return common_pb2.Placement(device=args.device or "", trainer_id=args.trainer or "")


def _status(value: int) -> str:
    from services.common.status_names import experiment_status_name

    return experiment_status_name(value)


def follow(client, experiment_id: str) -> str:
    """Print the experiment's events until it ends (the client re-attaches from the last event if the gateway
    or the comparator goes away); its final status. From the start, so a re-attach replays what it missed."""
    from services.cli.client import make_console as _console
    from services.common.status_names import trial_status_name

    console = _console()
    status = "RUNNING"
    started = time.monotonic()
    for event in client.watch_experiment(experiment_id):
        kind = event.WhichOneof("payload")
        clock = f"[dim]{time.monotonic() - started:6.0f}s[/]"
        if kind == "status":
            status = _status(event.status)
            console.print(f"{clock} experiment [bold]{status}[/]")
        elif kind == "run_submitted":
            console.print(f"{clock} run {event.run_submitted} submitted")
        elif kind == "run_finished":
            console.print(f"{clock} run {event.run_finished} ended")
        elif kind == "trial":
            trial = event.trial
            state = trial_status_name(trial.status)
            params = ", ".join(f"{k}={_value(v)}" for k, v in sorted(trial.params.items()))
            values = ", ".join(f"{k}={v:.4g}" for k, v in trial.values.items())
            console.print(f"{clock} trial {state.lower()}: {params}" + (f" -> {values}" if values else ""))
        elif kind == "log":
            console.print(f"{clock} [yellow]{event.log}[/]")
    return _status(client.experiment(experiment_id).status)


def _value(v) -> str:
    kind = v.WhichOneof("value")
    value = getattr(v, kind) if kind else ""
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def show_report(client, experiment_id: str, out: Path | None) -> None:
    """Print the report's tables; save its files (report.md, .json, .html, the plots) to `out` when given (the
    comparator writes them under its own experiments root too)."""
    from rich.markdown import Markdown

    from services.cli.client import make_console as _console

    report = client.report(experiment_id)
    console = _console()
    console.print(Markdown(report.markdown))
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "report.md").write_text(report.markdown)
        (out / "report.json").write_text(report.json)
        if report.html:
            (out / "report.html").write_text(report.html)
        for plot in report.plots:
            (out / f"{plot.name}.png").write_bytes(plot.png)
        console.print(f"report saved to {out}")
    console.print(f"report files on the comparator's machine: {report.directory}")


def cmd_compare(client, args: argparse.Namespace) -> int:
    from peftlab.v1 import common_pb2, comparator_pb2

    from services.cli.client import make_console as _console

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    torch_methods = [m.strip() for m in (args.torch or "").split(",") if m.strip()]
    arms = [comparator_pb2.ComparisonArm(name=m, overrides=common_pb2.RunSpec(method=m)) for m in methods]
    arms += [
        comparator_pb2.ComparisonArm(
            name=f"{m}-torch", overrides=common_pb2.RunSpec(method=m), backend="torch"
        )
        for m in torch_methods
    ]
    seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else []
    request = comparator_pb2.StartComparisonRequest(
        name=args.name or f"compare {','.join(methods + [f'{m}-torch' for m in torch_methods])}",
        base=_base_spec(args),
        arms=arms,
        seeds=seeds,
        placement=_placement(args),
        time_budget_seconds=args.time_budget or 0.0,
    )
    experiment = client.call("StartComparison", request).experiment
    _console().print(f"comparison [bold]{experiment.id}[/]: {experiment.total_runs} runs")
    _console().print(f"[dim]{REATTACH.format(id=experiment.id)}[/]")
    return _finish(client, experiment.id, args)


def _space(client, args: argparse.Namespace):
    """The study's search space: the --space file, or the optimizer's default space (through the gateway)."""
    from google.protobuf import json_format
    from peftlab.v1 import optimizer_pb2

    if args.space:
        import yaml

        try:
            values = yaml.safe_load(Path(args.space).read_text())
        except OSError as exc:
            raise SystemExit(f"error: cannot read {args.space}: {exc.strerror}") from None
        return json_format.ParseDict(values, optimizer_pb2.SearchSpace())
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    request = optimizer_pb2.GetDefaultSpaceRequest(methods=methods, total_steps=args.iters or 0)
    return client.call("GetDefaultSpace", request).space


def cmd_study(client, args: argparse.Namespace) -> int:
    from peftlab.v1 import comparator_pb2, optimizer_pb2

    from services.cli.client import make_console as _console

    objectives = []
    for text in args.objective or ["best_valid_loss"]:
        name, _, direction = text.partition(":")
        maximize = direction.lower() in ("max", "maximize")
        objectives.append(
            optimizer_pb2.StudyObjective(
                name=name,
                direction=optimizer_pb2.StudyObjective.MAXIMIZE
                if maximize
                else optimizer_pb2.StudyObjective.MINIMIZE,
            )
        )
    request = comparator_pb2.StartStudyRequest(
        name=args.name or f"study {args.methods}",
        base=_base_spec(args),
        space=_space(client, args),
        n_trials=args.trials,
        parallelism=args.parallelism,
        objectives=objectives,
        pruning=comparator_pb2.Pruning(
            enabled=bool(args.prune), rule=args.prune or "", min_steps=args.prune_after or 0
        ),
        seed=args.seed,
        placement=_placement(args),
        time_budget_seconds=args.time_budget or 0.0,
    )
    experiment = client.call("StartStudy", request).experiment
    space = json.dumps([p.name for p in request.space.parameters])
    _console().print(f"study [bold]{experiment.id}[/]: {args.trials} trials over {space}")
    _console().print(f"[dim]{REATTACH.format(id=experiment.id)}[/]")
    return _finish(client, experiment.id, args)


def _finish(client, experiment_id: str, args: argparse.Namespace) -> int:
    from services.cli.client import make_console as _console

    if args.no_wait:
        return 0
    tic = time.monotonic()
    status = follow(client, experiment_id)
    _console().print(f"{status} after {time.monotonic() - tic:.0f} s")
    show_report(client, experiment_id, Path(args.out) if args.out else None)
    return 0 if status == "SUCCEEDED" else 1


def cmd_experiment_list(client, args: argparse.Namespace) -> int:
    from peftlab.v1 import comparator_pb2
    from rich.table import Table

    from services.cli.client import make_console as _console

    table = Table("id", "kind", "name", "status", "runs", "created")
    for e in client.experiments(args.limit):
        kind = "study" if e.kind == comparator_pb2.EXPERIMENT_KIND_STUDY else "comparison"
        table.add_row(
            e.id, kind, e.name, _status(e.status), f"{e.finished_runs}/{e.total_runs}", _created(e.created_at)
        )
    _console().print(table)
    return 0


def _created(ts) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts.seconds)) if ts.seconds else ""


def cmd_experiment_watch(client, args: argparse.Namespace) -> int:
    """Re-attach to a comparison or study (running or not): its events from the start, then its report."""
    return _finish(client, args.experiment_id, args)


def cmd_experiment_report(client, args: argparse.Namespace) -> int:
    show_report(client, args.experiment_id, Path(args.out) if args.out else None)
    return 0


def cmd_experiment_cancel(client, args: argparse.Namespace) -> int:
    from services.cli.client import make_console as _console

    experiment = client.cancel_experiment(args.experiment_id)
    _console().print(f"{experiment.id}: {_status(experiment.status)}")
    return 0


def add_commands(commands) -> None:
    """Register `compare`, `study` and `experiment` on the `peftlab` parser's subcommands."""

    def common(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--config", type=Path, help="YAML file of base RunSpec fields")
        parser.add_argument("--model", help="model dir under the models root (default: the default model)")
        parser.add_argument("--data", help="dataset dir under the data root (default: the default dataset)")
        parser.add_argument("--iters", type=int, help="optimizer steps per run")
        parser.add_argument("--eval-every", type=int, help="validate every N steps")
        parser.add_argument("--test-samples", type=int, help="test samples scored for exact match")
        parser.add_argument("--report-to", help="trackers for every run: tensorboard,mlflow,wandb")
        parser.add_argument(
            "--set", action="append", metavar="KEY=VALUE", help="any RunSpec field (repeatable)"
        )
        parser.add_argument("--time-budget", type=float, help="wall-time budget per run, seconds")
        parser.add_argument(
            "--device", choices=["cpu", "gpu", "apple", "cuda"], help="preferred trainer device"
        )
        parser.add_argument("--trainer", help="preferred trainer id")
        parser.add_argument("--name", help="experiment label")
        parser.add_argument("--out", help="also save the report (md, html, json, png) in this dir")
        parser.add_argument("--no-wait", action="store_true", help="start it and return")

    compare = commands.add_parser("compare", help="compare methods side by side over seeds, with a report")
    compare.add_argument(
        "--methods", default=DEFAULT_METHODS, help=f"comma-separated (default {DEFAULT_METHODS})"
    )
    compare.add_argument("--seeds", help="comma-separated seeds (default 0)")
    compare.add_argument(
        "--torch", help="methods to also run with the PyTorch + PEFT backend, e.g. lora,full"
    )
    common(compare)
    compare.set_defaults(handler=cmd_compare)

    study = commands.add_parser("study", help="a hyperparameter study driven by the optimizer, with a report")
    study.add_argument("--trials", type=int, default=12, help="trials in all (default 12)")
    study.add_argument("--parallelism", type=int, default=2, help="trials at once (default 2)")
    study.add_argument("--methods", default="lora,dora", help="methods searched over (default lora,dora)")
    study.add_argument(
        "--space", help="YAML SearchSpace instead of the optimizer's default (GetDefaultSpace)"
    )
    study.add_argument(
        "--objective",
        action="append",
        help="NAME[:min|max], repeatable for a Pareto study (default best_valid_loss:min)",
    )
    study.add_argument("--prune", choices=["median", "halving"], help="stop unpromising trials early")
    study.add_argument("--prune-after", type=int, help="never prune before this step")
    study.add_argument("--seed", type=int, default=0, help="the optimizer's seed")
    common(study)
    study.set_defaults(handler=cmd_study)

    experiment = commands.add_parser(
        "experiment", help="comparisons and studies already started: list, re-attach, report, cancel"
    ).add_subparsers(dest="experiment_command", required=True)
    listing = experiment.add_parser("list", help="experiments, newest first")
    listing.add_argument("--limit", type=int, default=20)
    listing.set_defaults(handler=cmd_experiment_list)
    for name, handler, text in (
        ("watch", cmd_experiment_watch, "follow one until it ends (from its first event), then its report"),
        ("report", cmd_experiment_report, "its report now (partial while it runs)"),
    ):
        sub = experiment.add_parser(name, help=text)
        sub.add_argument("experiment_id")
        sub.add_argument("--out", help="also save the report (md, html, json, png) in this dir")
        sub.set_defaults(handler=handler, no_wait=False)
    cancel = experiment.add_parser("cancel", help="cancel one (its running runs are cancelled)")
    cancel.add_argument("experiment_id")
    cancel.set_defaults(handler=cmd_experiment_cancel)
