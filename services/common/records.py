"""The records peftlab keeps in Redis: a run's hash, one event of its stream, a trainer's registry entry."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any


def now_ms() -> int:
    return int(time.time() * 1000)


# Marks the extra slot members of a data-parallel run in a trainer's slot set (`{run id}#2`, ...).
SLOT_MARK = "#"
PROGRESS_FIELDS = ("step", "total_steps", "train_loss", "valid_loss", "tokens_per_second", "elapsed_seconds")


@dataclass
class RunRecord:
    """A run as stored in its hash. Times are Unix milliseconds (0 = not yet)."""

    id: str
    status: str = "QUEUED"
    spec: dict[str, Any] = field(default_factory=dict)  # the fields the submitter set; the rest default
    name: str = ""
    trainer: str = ""
    previous_trainer: str = ""
    created_at: int = 0
    updated_at: int = 0
    started_at: int = 0
    finished_at: int = 0
    error: dict[str, str] | None = None  # {code, field, message}
    metrics: dict[str, Any] | None = None
    progress: dict[str, float] = field(default_factory=dict)
    last_event_id: str = ""
    run_dir: str = ""
    runs_root_id: str = ""  # the id of the runs root that holds run_dir (services/common/runs_root.py)
    experiment_id: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    attempt: int = 0
    placement: dict[str, Any] = field(default_factory=dict)
    auto_resumes: int = 0  # times the gateway resumed it after its trainer was lost
    # Predicted peak bytes on one trainer by memory kind ("cpu", "gpu"), all data-parallel workers together,
    # set at submit (preflight.predict_peaks); {} = unknown (older records, trainer-submitted runs).
    predicted_peak_bytes: dict[str, int] = field(default_factory=dict)
    # The user who submitted it (identity.py; "anonymous" without auth), who alone may cancel or resume it.
    # "" for a run recorded before runs had owners: no one owns it, so anyone may.
    owner: str = ""
    seq: int = 0

    _JSON = ("spec", "error", "metrics", "labels", "placement", "predicted_peak_bytes")

    def creation_fields(self) -> dict[str, str]:
        """The hash fields a new run starts with (status, seq and timestamps are the script's)."""
        out = {
            "id": self.id,
            "name": self.name,
            "spec": json.dumps(self.spec, sort_keys=True),
            "experiment_id": self.experiment_id,
            "labels": json.dumps(self.labels, sort_keys=True),
            "placement": json.dumps(self.placement, sort_keys=True),
            "attempt": str(self.attempt),
            "run_dir": self.run_dir,
            "owner": self.owner,
        }
        if self.predicted_peak_bytes:
            out["predicted_peak_bytes"] = json.dumps(self.predicted_peak_bytes, sort_keys=True)
        return out

    @classmethod
    def from_hash(cls, values: dict[str, str]) -> RunRecord:
        def num(name: str, kind: type = int) -> Any:
            text = values.get(name, "")
            return kind(text) if text else kind(0)

        def load(name: str) -> Any:
            text = values.get(name, "")
            return json.loads(text) if text else None

        return cls(
            id=values["id"],
            status=values.get("status", "QUEUED"),
            spec=load("spec") or {},
            name=values.get("name", ""),
            trainer=values.get("trainer", ""),
            previous_trainer=values.get("previous_trainer", ""),
            created_at=num("created_at"),
            updated_at=num("updated_at"),
            started_at=num("started_at"),
            finished_at=num("finished_at"),
            error=load("error"),
            metrics=load("metrics"),
            progress={k: float(values[k]) for k in PROGRESS_FIELDS if values.get(k)},
            last_event_id=values.get("last_event_id", ""),
            run_dir=values.get("run_dir", ""),
            runs_root_id=values.get("runs_root_id", ""),
            experiment_id=values.get("experiment_id", ""),
            labels=load("labels") or {},
            attempt=num("attempt"),
            placement=load("placement") or {},
            auto_resumes=num("auto_resumes"),
            predicted_peak_bytes={k: int(v) for k, v in (load("predicted_peak_bytes") or {}).items()},
            owner=values.get("owner", ""),
            seq=num("seq"),
        )


@dataclass(frozen=True)
class RunEvent:
    id: str  # stream id "<ms>-<seq>"
    run_id: str
    kind: str
    data: dict[str, Any]

    @property
    def time_ms(self) -> int:
        return int(self.id.split("-", 1)[0])


@dataclass
class TrainerRecord:
    """A trainer's registry entry. `run_ids` (its busy slots) comes from trainer:{id}:runs."""

    id: str
    address: str
    slots: int = 1
    hardware: dict[str, Any] = field(default_factory=dict)
    version: str = ""
    runs_root: str = ""
    runs_root_id: str = ""  # same id = same storage, whatever the path (services/common/runs_root.py)
    started_at: int = 0
    heartbeat_at: int = 0
    draining: bool = False  # shutting down: alive (its runs are checkpointing) but takes no new runs
    run_ids: list[str] = field(default_factory=list)
    # Slots held beyond one per run: a data-parallel run holds spec.workers (its `id#k` slot members).
    extra_slots: int = 0

    @property
    def busy_slots(self) -> int:
        return len(self.run_ids) + self.extra_slots

    @property
    def free_slots(self) -> int:
        return 0 if self.draining else max(0, self.slots - self.busy_slots)

    def to_hash(self) -> dict[str, str]:
        return {
            "id": self.id,
            "address": self.address,
            "slots": str(self.slots),
            "hardware": json.dumps(self.hardware, sort_keys=True),
            "version": self.version,
            "runs_root": self.runs_root,
            "runs_root_id": self.runs_root_id,
            "started_at": str(self.started_at),
            "heartbeat_at": str(self.heartbeat_at),
            "draining": "1" if self.draining else "0",
        }

    @classmethod
    def from_hash(cls, values: dict[str, str], run_ids: Iterable[str] = ()) -> TrainerRecord:
        return cls(
            id=values["id"],
            address=values.get("address", ""),
            slots=int(values.get("slots") or 0),
            hardware=json.loads(values.get("hardware") or "{}"),
            version=values.get("version", ""),
            runs_root=values.get("runs_root", ""),
            runs_root_id=values.get("runs_root_id", ""),
            started_at=int(values.get("started_at") or 0),
            heartbeat_at=int(values.get("heartbeat_at") or 0),
            draining=values.get("draining") == "1",
            run_ids=sorted(m for m in run_ids if SLOT_MARK not in m),
            extra_slots=sum(1 for m in run_ids if SLOT_MARK in m),
        )
