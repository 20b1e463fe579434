"""`peftlab`: the command line. `peftlab train` runs the engine locally (services/cli/train.py); every other
command talks to the gateway (PEFTLAB_GATEWAY, default 127.0.0.1:50051; PEFTLAB_API_TOKEN when auth is on).

    peftlab run submit run.yaml [--watch]     peftlab run watch ID      peftlab run list [--status running]
    peftlab run get ID    peftlab run cancel ID    peftlab run resume ID    peftlab status
    peftlab compare --methods lora,dora,qlora,full      peftlab study --trials 12
    peftlab trainer join --redis redis://HOST:6379/0 [--listen 0.0.0.0:50052] [--advertise HOST:PORT] [--slots N]
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from services.client import Client

from services.cli.client import RECONNECT_SECONDS, load_spec, make_console

EXIT_ERROR = 2  # a call failed (bad input, unreachable gateway); 1 = the run itself failed or was cancelled
_console = make_console


def to_json(message) -> str:
    """A message as JSON with every field, zeros and empty values included: a script reading it finds each key."""
    from google.protobuf import json_format

    return json_format.MessageToJson(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )


def _status_name(value: int) -> str:
    from services.common.status_names import run_status_name

    return run_status_name(value)


def _age(ts) -> str:
    if not ts.seconds:
        return ""
    seconds = max(0, time.time() - ts.seconds)
    if seconds < 120:
        return f"{seconds:.0f}s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m ago"
    return f"{seconds / 3600:.1f}h ago"


def _num(value: float, fmt: str = ".4f") -> str:
    return format(value, fmt) if value and math.isfinite(value) else "-"


# ---- commands ---------------------------------------------------------------------------------------------


def report_to(value: str | None) -> list[str]:
    """--report-to tensorboard,mlflow as the spec's list ([] when the flag is absent)."""
    return [name.strip() for name in (value or "").split(",") if name.strip()]


def cmd_submit(client: Client, args: argparse.Namespace) -> int:
    labels = {}
    for item in args.label or []:
        key, _, value = item.partition("=")
        labels[key] = value
    spec = load_spec(args.spec)
    if args.report_to:
        spec.report_to[:] = report_to(args.report_to)
    run = client.submit(
        spec,
        name=args.name or args.spec.stem,
        labels=labels,
        device=args.device or "",
        trainer=args.trainer or "",
    )
    console = _console()
    if run.trainer_id:
        console.print(f"run [bold]{run.id}[/] {_status_name(run.status)} on trainer {run.trainer_id}")
    else:
        console.print(f"run [bold]{run.id}[/] {_status_name(run.status)}: {queue_text(client, run.id)}")
    if args.watch:
        return watch(client, run.id)
    return 0


def queue_text(client: Client, run_id: str) -> str:
    """Where a queued run stands: its place in the first-come queue and why it waits."""
    place, length = client.queue_position(run_id)
    if not place:
        return "waiting for a trainer"
    waiting = client.get(run_id).waiting  # e.g. a data-parallel run that no trainer has the slots for
    if waiting:
        return waiting
    try:
        trainers = client.status().trainers
    except Exception:  # the place is what matters; the slot count is a courtesy
        trainers = []
    slots = sum(t.slots for t in trainers)
    busy = sum(t.busy_slots for t in trainers)
    why = (
        "no trainer is registered (start one: `make run`, or `python -m services.trainer`)"
        if not trainers
        else f"all {slots} trainer slot{'s' * (slots != 1)} busy ({busy}/{slots})"
        if busy >= slots
        else "waiting for a trainer that matches its placement"
    )
    ahead = f"{place - 1} run{'s' * (place != 2)} ahead" if place > 1 else "next to start"
    return f"queued {_ordinal(place)} of {length} ({ahead}); {why}"


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def watch(client: Client, run_id: str, after: str = "") -> int:
    """Follow a run's events with a live progress bar (the client reconnects from the last event if the
    gateway goes away); returns 0 when the run SUCCEEDED, 1 when it FAILED or was CANCELLED."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    console = _console()
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]}  valid {task.fields[valid]}  {task.fields[tps]} tok/s"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
    )
    task = progress.add_task(run_id, total=None, loss="-", valid="-", tps="-")
    first = client.get(run_id)  # a run that waits for its own trainer (or a big enough one) says so at once
    if first.waiting:
        console.print(f"[yellow]{_status_name(first.status)}[/]: {first.waiting}")
    with progress:
        for event in client.watch(run_id, after, reconnect_s=RECONNECT_SECONDS):
            _show_event(progress, task, event)
    run = client.get(run_id)
    _print_outcome(console, run)
    return 0 if _status_name(run.status) == "SUCCEEDED" else 1


def _show_event(progress, task, event) -> str:
    kind = event.WhichOneof("payload")
    if kind == "step":
        step = event.step
        progress.update(
            task,
            total=step.total_steps,
            completed=step.step,
            loss=_num(step.train_loss, ".3f"),
            tps=f"{step.tokens_per_second:,.0f}",
        )
    elif kind == "eval":
        progress.update(task, valid=_num(event.eval.valid_loss, ".3f"))
    elif kind == "started":
        started = event.started
        progress.console.print(
            f"started: {started.trainable_parameters:,} trainable of {started.total_parameters:,} parameters, "
            f"{started.backend}"
            + (f", resuming at step {started.resume_step}" if started.resume_step else "")
        )
        if started.resume_step:
            progress.update(task, completed=started.resume_step)
    elif kind == "log":
        progress.console.print(f"[dim]{event.log.message}[/]")
    elif kind == "progress":
        p = event.progress
        label = p.phase.replace("_", " ")
        progress.update(task, description=f"{label} {p.done}/{p.total} {p.unit}")
    elif kind == "checkpoint":
        progress.console.print(f"[dim]checkpoint at step {event.checkpoint.step}[/]")
    elif kind == "status":
        status = _status_name(event.status.status)
        reason = f": {event.status.reason}" if event.status.reason else ""
        progress.console.print(f"[cyan]{status}[/]{reason}")
        return status
    return ""


def _print_outcome(console, run) -> None:
    status = _status_name(run.status)
    color = {"SUCCEEDED": "green", "FAILED": "red"}.get(status, "yellow")
    console.print(f"run {run.id}: [bold {color}]{status}[/]")
    if run.HasField("error") and run.error.message:
        field = f"{run.error.field}: " if run.error.field else ""
        console.print(f"  error ({run.error.code}): {field}{run.error.message}")
    if run.HasField("metrics") and run.metrics.steps:
        m = run.metrics
        console.print(
            f"  steps {m.steps}  train loss {_num(m.final_train_loss)}  valid loss {_num(m.final_valid_loss)}"
            f"  test loss {_num(m.test_loss)}  {m.tokens_per_second:,.0f} tok/s  {m.wall_seconds:.1f}s"
        )
        if m.HasField("task"):
            console.print(f"  {m.task.task}: exact match {m.task.exact_match:.1%} on {m.task.n} test samples")
        console.print(f"  run dir: {m.run_dir or run.run_dir}")


def cmd_watch(client: Client, args: argparse.Namespace) -> int:
    return watch(client, args.run_id, args.after or "")


def cmd_list(client: Client, args: argparse.Namespace) -> int:
    from rich.table import Column, Table

    from services.client import status_value

    try:
        statuses = [status_value(name) for name in args.status or []]
    except ValueError as exc:
        raise SystemExit(f"error: --status: {exc}") from None
    runs = client.runs(statuses, limit=args.limit)
    if args.output == "json":
        print("[" + ",\n".join(to_json(run) for run in runs) + "]")
        return 0
    wide = args.output == "wide"
    # Ids are what people copy into the next command: never wrapped or cut; other columns give way.
    id_width = max([len(r.id) for r in runs] + [2])
    names = ["name", "status", "trainer", "step", "loss", "valid", "created"]
    if wide:
        names += ["method", "model", "data", "exact match", "tok/s", "wall", "experiment"]
    table = Table(Column("id", no_wrap=True, min_width=id_width), *(Column(n, no_wrap=True) for n in names))
    for run in runs:
        p = run.progress
        cells = [
            run.id,
            run.name,
            _status_name(run.status),
            run.trainer_id,
            f"{p.step}/{p.total_steps}" if p.total_steps else "",
            _num(p.train_loss, ".3f"),
            _num(p.valid_loss, ".3f"),
            _age(run.created_at),
        ]
        if wide:
            m = run.metrics
            cells += [
                run.spec.method or "lora",
                run.spec.model or "(default)",
                run.spec.data or "(default)",
                f"{m.task.exact_match:.1%}" if m.task.HasField("exact_match") else "",
                f"{m.tokens_per_second:,.0f}" if m.tokens_per_second else "",
                f"{m.wall_seconds:.1f}s" if m.wall_seconds else "",
                run.experiment_id,
            ]
        table.add_row(*cells)
    _console().print(table)
    if len(runs) >= args.limit:
        _console().print(f"[dim](maybe more: --limit {args.limit * 2})[/]")
    return 0


def cmd_get(client: Client, args: argparse.Namespace) -> int:
    print(to_json(client.get(args.run_id)))
    return 0


def cmd_cancel(client: Client, args: argparse.Namespace) -> int:
    run = client.cancel(args.run_id, args.reason or "")
    _console().print(
        f"run {run.id}: {_status_name(run.status)} (a running run checkpoints, then becomes CANCELLED)"
    )
    return 0


def cmd_resume(client: Client, args: argparse.Namespace) -> int:
    run = client.resume(args.run_id)
    _console().print(
        f"run {run.id}: {_status_name(run.status)}" + (f" on {run.trainer_id}" if run.trainer_id else "")
    )
    return watch(client, run.id, run.progress.last_event_id) if args.watch else 0


def cmd_status(client: Client, args: argparse.Namespace) -> int:
    from rich.table import Table

    from services.client import UnavailableError

    console = _console()
    try:
        status = client.call("GetStatus", _status_request(), timeout=10)
    except UnavailableError as error:
        from services.cli.status import direct_status

        console.print(
            f"[red]the gateway at {client.address} does not answer[/] ({error.code.name}); "
            "what this machine can still reach:"
        )
        status = direct_status(client.address, error.code.name)
    services = Table("service", "address", "health", title=f"peftlab {status.version}")
    for s in status.services:
        services.add_row(s.name, s.address, "[green]ok[/]" if s.healthy else f"[red]down[/] {s.detail}")
    console.print(services)
    trainers = Table(
        "trainer", "address", "device", "memory (avail/total)", "slots", "runs", "heartbeat", title="trainers"
    )
    for t in status.trainers:
        hw = t.hardware
        memory = f"{hw.available_memory_bytes / 2**30:.1f}/{hw.total_memory_bytes / 2**30:.1f} GiB"
        slots = f"{t.busy_slots}/{t.slots}" + (" draining" if t.draining else "")
        trainers.add_row(
            t.id,
            t.address,
            f"{hw.device_kind}: {hw.device_name}",
            memory,
            slots,
            ", ".join(t.run_ids),
            _age(t.last_heartbeat),
        )
    console.print(trainers if status.trainers else "[yellow]no trainer registered[/]")
    counts = ", ".join(f"{_status_name(c.status).lower()} {c.count}" for c in status.runs) or "none"
    console.print(f"runs: {counts}")
    return 0 if all(s.healthy for s in status.services if s.name in ("gateway", "redis")) else 1


def _status_request():
    from peftlab.v1 import gateway_pb2

    return gateway_pb2.GetStatusRequest()


# ---- argument parsing ---------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="peftlab", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--gateway", help="gateway host:port (PEFTLAB_GATEWAY, default 127.0.0.1:50051)")
    parser.add_argument(
        "--token",
        help="bearer token (default PEFTLAB_API_TOKEN, or the file named by PEFTLAB_API_TOKEN_FILE)",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    # `peftlab train` is the lead's: the engine run locally, no services (services/cli/train.py).
    from services.cli import train

    train_parser = commands.add_parser("train", help="train locally with the engine (no services needed)")
    train.add_arguments(train_parser)
    train_parser.set_defaults(local=train.main)

    run = commands.add_parser("run", help="runs on the gateway").add_subparsers(
        dest="run_command", required=True
    )
    submit = run.add_parser("submit", help="submit a run from a YAML file of RunSpec fields")
    submit.add_argument(
        "spec", type=Path, help="YAML file, e.g. {model: tiny-llama, method: lora, iters: 50}"
    )
    submit.add_argument("--name", help="run label (default: the file's name)")
    submit.add_argument("--device", choices=["cpu", "gpu", "apple", "cuda"], help="preferred trainer device")
    submit.add_argument("--trainer", help="preferred trainer id")
    submit.add_argument("--label", action="append", metavar="KEY=VALUE", help="a label (repeatable)")
    submit.add_argument("--watch", action="store_true", help="follow the run after submitting it")
    submit.add_argument("--report-to", help="experiment trackers, comma-separated: tensorboard,mlflow,wandb")
    submit.set_defaults(handler=cmd_submit)
    watch_parser = run.add_parser("watch", help="follow a run's progress (resumable)")
    watch_parser.add_argument("run_id")
    watch_parser.add_argument("--after", help="start after this event id")
    watch_parser.set_defaults(handler=cmd_watch)
    listing = run.add_parser("list", help="runs, newest first")
    listing.add_argument("--status", action="append", help="only this status (repeatable), e.g. running")
    listing.add_argument("--limit", type=int, default=20)
    listing.add_argument(
        "--output",
        choices=["table", "wide", "json"],
        default="table",
        help="table (default), wide (with method, model, data, exact match, speed) or json (every field)",
    )
    listing.set_defaults(handler=cmd_list)
    get = run.add_parser("get", help="one run as JSON (every field, zeros included)")
    get.add_argument("run_id")
    get.set_defaults(handler=cmd_get)
    cancel = run.add_parser("cancel", help="cancel a run (it keeps its newest checkpoint)")
    cancel.add_argument("run_id")
    cancel.add_argument("--reason")
    cancel.set_defaults(handler=cmd_cancel)
    resume = run.add_parser("resume", help="resume a failed, cancelled or lost run from its checkpoint")
    resume.add_argument("run_id")
    resume.add_argument("--watch", action="store_true")
    resume.set_defaults(handler=cmd_resume)

    # `peftlab trainer join`: a trainer on this machine, joining the shared Redis (services/cli/join.py).
    from services.cli import join

    trainer = commands.add_parser("trainer", help="serve a trainer on this machine").add_subparsers(
        dest="trainer_command", required=True
    )
    join_parser = trainer.add_parser("join", help="join the Redis of a peftlab deployment and take runs")
    join.add_arguments(join_parser)
    join_parser.set_defaults(local=join.main)

    status = commands.add_parser("status", help="services, trainers and runs at a glance")
    status.set_defaults(handler=cmd_status)

    # `peftlab compare` and `peftlab study`: experiments through the comparator (services/cli/experiments.py).
    from services.cli import experiments

    experiments.add_commands(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "local", None):
        return args.local(args)
    from services.client import Client, GatewayError

    try:
        client = Client(args.gateway, token=args.token)
    except ValueError as exc:  # a token file or TLS setting that cannot be read
        raise SystemExit(f"error: {exc}") from None
    try:
        return args.handler(client, args)
    except GatewayError as error:
        hint = (
            " (is the gateway running? `make run` starts it; `peftlab status` shows what is up)"
            if error.code.name == "UNAVAILABLE"
            else ""
        )
        from rich.markup import escape

        _console(stderr=True).print(f"[red]error[/] {error.code.name}: {escape(error.details)}{hint}")
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`peftlab run get ID | head`): stop quietly, as `cat` would; Python would
        # otherwise print a second error flushing stdout at exit. Only the process's own stdout is pointed
        # at /dev/null: called in-process with a replaced sys.stdout (a test, a notebook), fd 1 is not ours.
        if sys.stdout is sys.__stdout__:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, what a shell reports for a writer that lost its pipe
    finally:
        client.close()


if __name__ == "__main__":
    sys.exit(main())
