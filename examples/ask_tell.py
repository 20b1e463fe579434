"""An ask/tell client for peftlab's optimizer, for a training script on any machine.

It needs nothing of peftlab but the generated stubs (`peftlab.v1.optimizer_pb2[_grpc]`, from protos/) and
grpcio. The optimizer is stateless: the client keeps the study's history and sends all of it with every ask,
so a restarted script (or a second optimizer replica) carries on where it was.

    space = {"learning_rate": ("float", 1e-5, 1e-2, True), "rank": ("int", 2, 32, True), "method": ["lora", "dora"]}
    study = AskTell("optimizer-host:50053", space, seed=0)
    for _ in range(10):
        trial_id, params = study.ask()            # e.g. {"learning_rate": 0.0012, "rank": 8, "method": "lora"}
        study.tell(trial_id, valid_loss=train(**params))   # or study.tell(trial_id, failed=True)
    print(study.best())
"""

from __future__ import annotations

from typing import Any

import grpc
from peftlab.v1 import optimizer_pb2, optimizer_pb2_grpc


def _value(v: Any) -> optimizer_pb2.ParameterValue:
    if isinstance(v, bool):
        return optimizer_pb2.ParameterValue(bool_value=v)
    if isinstance(v, int):
        return optimizer_pb2.ParameterValue(int_value=v)
    if isinstance(v, float):
        return optimizer_pb2.ParameterValue(float_value=v)
    return optimizer_pb2.ParameterValue(string_value=str(v))


def _python(v: optimizer_pb2.ParameterValue) -> Any:
    return getattr(v, v.WhichOneof("value"))


def search_space(space: dict[str, Any]) -> optimizer_pb2.SearchSpace:
    """{"name": ("float"|"int", low, high, log) or [choice, ...]} as the proto SearchSpace."""
    parameters = []
    for name, domain in space.items():
        if isinstance(domain, list):
            choices = optimizer_pb2.Choices(values=[_value(c) for c in domain])
            parameters.append(optimizer_pb2.Parameter(name=name, categorical=choices))
        elif domain[0] == "float":
            _, low, high, log = domain
            rng = optimizer_pb2.FloatRange(low=low, high=high, log=log)
            parameters.append(optimizer_pb2.Parameter(name=name, float_range=rng))
        else:
            _, low, high, log = domain
            rng = optimizer_pb2.IntRange(low=low, high=high, log=log)
            parameters.append(optimizer_pb2.Parameter(name=name, int_range=rng))
    return optimizer_pb2.SearchSpace(parameters=parameters)


class AskTell:
    """One study: `ask()` a configuration, train it, `tell()` its result; the history lives here."""

    def __init__(self, address: str, space: dict[str, Any], objective: str = "valid_loss", seed: int = 0,
                 token: str = "", timeout: float = 30.0):  # fmt: skip
        self.stub = optimizer_pb2_grpc.OptimizerStub(grpc.insecure_channel(address))
        self.space = search_space(space)
        self.objective = objective
        self.seed = seed
        self.metadata = (("x-peftlab-service-token", token),) if token else ()
        self.timeout = timeout
        self.trials: list[optimizer_pb2.Trial] = []

    def ask(self) -> tuple[str, dict[str, Any]]:
        """The next configuration to train and its trial id (it stays RUNNING until told)."""
        request = optimizer_pb2.SuggestRequest(
            space=self.space,
            trials=self.trials,
            n=1,
            seed=self.seed,
            objectives=[optimizer_pb2.StudyObjective(name=self.objective)],
        )
        (suggestion,) = self.stub.Suggest(request, timeout=self.timeout, metadata=self.metadata).suggestions
        trial = optimizer_pb2.Trial(
            trial_id=f"t{len(self.trials)}",
            params=suggestion.params,
            status=optimizer_pb2.TRIAL_STATUS_RUNNING,
        )
        self.trials.append(trial)
        return trial.trial_id, {k: _python(v) for k, v in suggestion.params.items()}

    def tell(self, trial_id: str, failed: bool = False, **values: float) -> None:
        """Record a trial's outcome: its objective value (and any other metrics), or failed=True."""
        trial = next(t for t in self.trials if t.trial_id == trial_id)
        trial.status = optimizer_pb2.TRIAL_STATUS_FAILED if failed else optimizer_pb2.TRIAL_STATUS_COMPLETE
        trial.values.update(values)

    def best(self) -> tuple[dict[str, Any], float] | None:
        done = [t for t in self.trials if t.status == optimizer_pb2.TRIAL_STATUS_COMPLETE]
        if not done:
            return None
        top = min(done, key=lambda t: t.values[self.objective])
        return {k: _python(v) for k, v in top.params.items()}, top.values[self.objective]
