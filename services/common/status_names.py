"""The status enums of peftlab.v1 <-> the names the services store and people read (QUEUED, RUNNING, ...).

The one conversion for runs, experiments and trials; everything else (Redis records, logs, the CLI, the UI)
speaks the names."""

from __future__ import annotations

from peftlab.v1 import common_pb2, comparator_pb2, optimizer_pb2


def _names(enum, prefix: str) -> dict[str, int]:
    return {k.removeprefix(prefix): v for k, v in enum.items() if v}


RUN_STATUSES = _names(common_pb2.RunStatus, "RUN_STATUS_")
EXPERIMENT_STATUSES = _names(comparator_pb2.ExperimentStatus, "EXPERIMENT_STATUS_")
TRIAL_STATUSES = _names(optimizer_pb2.TrialStatus, "TRIAL_STATUS_")
_RUN_NAMES = {v: k for k, v in RUN_STATUSES.items()}
_EXPERIMENT_NAMES = {v: k for k, v in EXPERIMENT_STATUSES.items()}
_TRIAL_NAMES = {v: k for k, v in TRIAL_STATUSES.items()}


def run_status_name(value: int) -> str:
    """QUEUED, RUNNING, ...; UNSPECIFIED for 0 or a value this version does not know."""
    return _RUN_NAMES.get(value, "UNSPECIFIED")


def run_status_value(name: str) -> int:
    return RUN_STATUSES.get(name, 0)


def experiment_status_name(value: int) -> str:
    return _EXPERIMENT_NAMES.get(value, "UNSPECIFIED")


def experiment_status_value(name: str) -> int:
    return EXPERIMENT_STATUSES.get(name, 0)


def trial_status_name(value: int) -> str:
    """A trial sent with no status counts as COMPLETE (the optimizer's rule for its history)."""
    return _TRIAL_NAMES.get(value, "COMPLETE")


def trial_status_value(name: str) -> int:
    return TRIAL_STATUSES.get(name, 0)
