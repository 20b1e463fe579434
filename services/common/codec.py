"""Encoding between the Redis records (plain dicts and dataclasses) and the peftlab.v1 protobuf messages.

Metric and hardware messages mirror the engine's dataclasses field by field, so they are filled by name:
a field the engine adds shows up in the proto once the proto gets it, with no code change here. A RunSpec
crosses as its given fields (`spec_to_proto` / `spec_from_proto`): the one proto<->RunSpec codec.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from google.protobuf.message import Message
from peftlab.v1 import common_pb2

from services.common.records import RunEvent, RunRecord, TrainerRecord
from services.common.spec import RunSpec
from services.common.status_names import run_status_value
from services.common.validation import parse_spec

# ---- generic fill by field name ------------------------------------------------------------------------


def fill(message: Message, values: Mapping[str, Any]) -> Message:
    """Set the fields of `message` that `values` has (by name); unknown keys and None are skipped."""
    fields = message.DESCRIPTOR.fields_by_name
    for key, value in values.items():
        fd = fields.get(key)
        if fd is None or value is None:
            continue
        if fd.message_type is not None and fd.message_type.GetOptions().map_entry:
            target = getattr(message, key)
            value_fd = fd.message_type.fields_by_name["value"]
            for k, v in value.items():
                if value_fd.message_type is None:
                    target[str(k)] = _scalar(value_fd, v)
            continue
        if fd.is_repeated:
            target = getattr(message, key)
            for item in value:
                if fd.message_type is not None:
                    fill(target.add(), item)
                else:
                    target.append(_scalar(fd, item))
            continue
        if fd.message_type is not None:
            if fd.message_type.full_name == "google.protobuf.Struct":
                getattr(message, key).update(_json_safe(value))
            elif isinstance(value, Mapping):
                fill(getattr(message, key), value)
            continue
        setattr(message, key, _scalar(fd, value))
    return message


def _scalar(fd: Any, value: Any) -> Any:
    kind = fd.cpp_type
    if kind in (fd.CPPTYPE_INT32, fd.CPPTYPE_INT64, fd.CPPTYPE_UINT32, fd.CPPTYPE_UINT64):
        return int(value) if not (isinstance(value, float) and not math.isfinite(value)) else 0
    if kind in (fd.CPPTYPE_DOUBLE, fd.CPPTYPE_FLOAT):
        return float(value)
    if kind == fd.CPPTYPE_BOOL:
        return bool(value)
    if kind == fd.CPPTYPE_ENUM:
        return int(value)
    return str(value)


def _json_safe(value: Any) -> Any:
    """Struct holds JSON: non-finite floats become strings ("inf", "nan")."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


# ---- specs ---------------------------------------------------------------------------------------------


def spec_fields(message: common_pb2.RunSpec) -> dict[str, Any]:
    """The fields a RunSpec message sets (unset optional fields mean "default" and are left out): an arm's
    or a trial's overrides, which are not a spec on their own."""
    out: dict[str, Any] = {}
    for fd in message.DESCRIPTOR.fields:
        if fd.is_repeated:
            values = list(getattr(message, fd.name))
            if values:
                out[fd.name] = values
        elif message.HasField(fd.name):
            out[fd.name] = getattr(message, fd.name)
    return out


def spec_from_proto(message: common_pb2.RunSpec, field: str = "spec") -> RunSpec:
    """The RunSpec a message carries, checked by its rules; an error names the field under `field`."""
    return parse_spec(spec_fields(message), field)


def spec_to_proto(spec: RunSpec | Mapping[str, Any]) -> common_pb2.RunSpec:
    """A RunSpec's given fields (or such fields as a record or an override keeps them) as a message."""
    return fill(common_pb2.RunSpec(), spec.given() if isinstance(spec, RunSpec) else spec)


# ---- runs and events -----------------------------------------------------------------------------------


def _timestamp(message: Message, name: str, ms: int) -> None:
    if ms:
        getattr(message, name).FromMilliseconds(int(ms))


def run_to_proto(record: RunRecord) -> common_pb2.Run:
    run = common_pb2.Run(
        id=record.id,
        name=record.name,
        status=run_status_value(record.status),
        trainer_id=record.trainer,
        run_dir=record.run_dir,
        experiment_id=record.experiment_id,
        attempt=record.attempt,
        owner=record.owner,
    )
    run.spec.CopyFrom(spec_to_proto(record.spec))
    for name in ("created_at", "updated_at", "started_at", "finished_at"):
        _timestamp(run, name, getattr(record, name))
    if record.error:
        fill(run.error, record.error)
    if record.metrics:
        fill(run.metrics, record.metrics)
    fill(run.progress, record.progress)
    run.progress.last_event_id = record.last_event_id
    run.labels.update(record.labels)
    fill(run.placement, record.placement)
    return run


def event_to_proto(event: RunEvent) -> common_pb2.RunEvent:
    out = common_pb2.RunEvent(id=event.id, run_id=event.run_id)
    out.time.FromMilliseconds(event.time_ms)
    data = event.data
    if event.kind == "status":
        change = out.status
        change.status = run_status_value(data.get("status", ""))
        change.previous = run_status_value(data.get("previous", ""))
        change.trainer_id = data.get("trainer_id", "")
        change.reason = data.get("reason", "")
        if data.get("error"):
            fill(change.error, data["error"])
    elif event.kind == "started":
        started = out.started
        fill(started, data)
        started.resume_step = int(data.get("resumed_from_step", data.get("resume_step", 0)) or 0)
        started.info.update(_json_safe(data))
    elif event.kind == "step":
        fill(out.step, data)
    elif event.kind == "eval":
        fill(out.eval, data)
    elif event.kind == "checkpoint":
        fill(out.checkpoint, data)
    elif event.kind == "log":
        fill(out.log, data)
    elif event.kind == "result":
        fill(out.result, data)
    elif event.kind == "progress":
        fill(out.progress, data)
    return out


def hardware_to_proto(values: Mapping[str, Any]) -> common_pb2.Hardware:
    return fill(common_pb2.Hardware(), values)


def trainer_to_proto(record: TrainerRecord) -> common_pb2.TrainerInfo:
    info = common_pb2.TrainerInfo(
        id=record.id,
        address=record.address,
        slots=record.slots,
        busy_slots=record.busy_slots,
        version=record.version,
        runs_root=record.runs_root,
        draining=record.draining,
    )
    info.run_ids.extend(record.run_ids)
    info.hardware.CopyFrom(hardware_to_proto(record.hardware))
    _timestamp(info, "started_at", record.started_at)
    _timestamp(info, "last_heartbeat", record.heartbeat_at)
    return info
