"""The fan-out from a run's events to the trackers its spec's `report_to` names.

Each tracker sees events as the event stream carries them: `started` (the engine's start info, spec
included), `step`, `eval`, `log`, `checkpoint`, then `result` (the final metrics) and how the run ended. A
tracker that fails mid-run is logged and dropped: a tracker outage never fails a training run. A tracker
whose library is missing fails the run before it starts, with the install command.
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from services.common.errors import FailedPrecondition

log = logging.getLogger(__name__)

# tracker name -> (module in this package, the import it needs, the pyproject extra that installs it)
BACKENDS = {
    "tensorboard": ("tensorboard_events", "tensorboardX", "tensorboard"),
    "mlflow": ("mlflow_runs", "mlflow", "mlflow"),
    "wandb": ("wandb_runs", "wandb", "wandb"),
}


class TrackerError(FailedPrecondition):
    """A tracker named in report_to cannot be used here (its library is missing)."""

    def __init__(self, message: str):
        super().__init__(message, "spec.report_to")


@dataclass(frozen=True)
class RunContext:
    """What a tracker knows about the run beyond its events: where it lives and what it belongs to."""

    run_id: str
    run_dir: Path
    name: str = ""
    experiment_id: str = ""  # "" for a standalone run
    labels: dict[str, str] = field(default_factory=dict)
    # experiment id -> the tracker's parent-run id, claimed once across processes (see mlflow.py)
    claim_parent: Any = None


class Tracker(Protocol):
    def write(self, kind: str, data: dict[str, Any]) -> None: ...

    def close(self, status: str) -> None: ...


def _missing(name: str, module: str, extra: str) -> TrackerError:
    return TrackerError(
        f"report_to names '{name}' but the {module} package is not installed on this trainer; "
        f"install it with: pip install 'peftlab[{extra}]'"
    )


def _load(name: str, context: RunContext) -> Tracker:
    module_name, needs, extra = BACKENDS[name]
    try:
        importlib.import_module(needs)
    except ImportError:
        raise _missing(name, needs, extra) from None
    module = importlib.import_module(f"{__package__}.{module_name}")
    return module.open_tracker(context)


class Trackers:
    """The trackers of one run; `write` fans an event out, `close` ends each with the run's status."""

    def __init__(self, trackers: dict[str, Tracker]):
        self.trackers = trackers

    def write(self, kind: str, data: Any) -> None:
        if dataclasses.is_dataclass(data):
            data = dataclasses.asdict(data)
        for name, tracker in list(self.trackers.items()):
            try:
                tracker.write(kind, data)
            except Exception:
                log.exception("tracker failed; dropping it for this run", extra={"tracker": name})
                self.trackers.pop(name)

    def close(self, status: str) -> None:
        for name, tracker in self.trackers.items():
            try:
                tracker.close(status)
            except Exception:
                log.exception("tracker failed to close", extra={"tracker": name})
        self.trackers = {}


def open_trackers(names: list[str], context: RunContext) -> Trackers:
    """The trackers `names` asks for; raises TrackerError before any is opened when one is unavailable."""
    for name in names:
        _, needs, extra = BACKENDS[name]
        try:
            importlib.import_module(needs)
        except ImportError:
            raise _missing(name, needs, extra) from None
    return Trackers({name: _load(name, context) for name in dict.fromkeys(names)})
