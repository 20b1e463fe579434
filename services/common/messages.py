"""The one codec of the messages several services exchange: a study's ParameterValue and Trial (optimizer and
comparator), and a run's Placement (gateway and comparator)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from peftlab.v1 import common_pb2, optimizer_pb2

from services.common.errors import InvalidArgument
from services.common.status_names import trial_status_value

Value = bool | int | float | str


def value_from_proto(message: optimizer_pb2.ParameterValue, field: str) -> Value:
    """The value set in the oneof; an unset one is the caller's mistake, named by `field`."""
    kind = message.WhichOneof("value")
    if kind is None:
        raise InvalidArgument("a parameter value needs one of float/int/string/bool_value", field)
    return getattr(message, kind)


def value_to_proto(value: Value) -> optimizer_pb2.ParameterValue:
    if isinstance(value, bool):  # before int: bool is an int in Python
        return optimizer_pb2.ParameterValue(bool_value=value)
    if isinstance(value, int):
        return optimizer_pb2.ParameterValue(int_value=value)
    if isinstance(value, float):
        return optimizer_pb2.ParameterValue(float_value=value)
    return optimizer_pb2.ParameterValue(string_value=str(value))


def params_from_proto(params: Mapping[str, optimizer_pb2.ParameterValue], field: str) -> dict[str, Value]:
    return {name: value_from_proto(v, f"{field}[{name}]") for name, v in params.items()}


def trial_to_proto(
    trial_id: str, params: Mapping[str, Value], status: str, values: Mapping[str, float]
) -> optimizer_pb2.Trial:
    """`status` by name (COMPLETE, FAILED, PRUNED, RUNNING)."""
    return optimizer_pb2.Trial(
        trial_id=trial_id,
        params={k: value_to_proto(v) for k, v in params.items()},
        status=trial_status_value(status),
        values=dict(values),
    )


def placement_from_proto(message: common_pb2.Placement) -> dict[str, Any]:
    """The placement fields a request set (unset ones mean "anywhere")."""
    fields = {"device": message.device, "trainer_id": message.trainer_id, "strict": message.strict}
    return {k: v for k, v in fields.items() if v}
