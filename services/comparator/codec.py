"""Protos <-> the comparator core's dataclasses (requests, experiments, trials, events, reports)."""

from __future__ import annotations

import math
from typing import Any

from google.protobuf import json_format
from peftlab.v1 import comparator_pb2 as pb
from peftlab.v1 import optimizer_pb2

from services.common import messages
from services.common.codec import fill, spec_fields, spec_from_proto, spec_to_proto
from services.common.errors import InvalidArgument
from services.common.messages import placement_from_proto
from services.common.status_names import experiment_status_value

from .experiments import ExperimentView
from .pruning import PruningRule
from .reporting import ReportFiles
from .requests import Arm, ComparisonRequest, Objective, StudyRequest
from .state import ExperimentEvent, TrialRecord

KIND_TO_PROTO = {"comparison": pb.EXPERIMENT_KIND_COMPARISON, "study": pb.EXPERIMENT_KIND_STUDY}
_DIRECTION = {
    optimizer_pb2.StudyObjective.DIRECTION_UNSPECIFIED: "minimize",
    optimizer_pb2.StudyObjective.MINIMIZE: "minimize",
    optimizer_pb2.StudyObjective.MAXIMIZE: "maximize",
}


# ---- values, spaces, trials -----------------------------------------------------------------------------


def space_to_dict(space: optimizer_pb2.SearchSpace) -> dict[str, Any]:
    return json_format.MessageToDict(space, preserving_proto_field_name=True)


def space_from_dict(values: dict[str, Any]) -> optimizer_pb2.SearchSpace:
    return json_format.ParseDict(values, optimizer_pb2.SearchSpace())


def objective_to_proto(objective: Objective) -> optimizer_pb2.StudyObjective:
    direction = (
        optimizer_pb2.StudyObjective.MAXIMIZE
        if objective.direction == "maximize"
        else optimizer_pb2.StudyObjective.MINIMIZE
    )
    return optimizer_pb2.StudyObjective(name=objective.name, direction=direction)


def trial_to_proto(trial: TrialRecord) -> optimizer_pb2.Trial:
    values = {k: v for k, v in trial.values.items() if isinstance(v, int | float) and math.isfinite(v)}
    return messages.trial_to_proto(
        trial.run_id or f"trial-{trial.number}", trial.params, trial.status, values
    )


# ---- requests -------------------------------------------------------------------------------------------


def comparison_request_from_proto(message: pb.StartComparisonRequest) -> ComparisonRequest:
    return ComparisonRequest(
        name=message.name,
        base=spec_from_proto(message.base, "base"),
        arms=[Arm(a.name, spec_fields(a.overrides), a.backend or "mlx") for a in message.arms],
        seeds=[int(s) for s in message.seeds],
        placement=placement_from_proto(message.placement),
        time_budget_seconds=message.time_budget_seconds,
    )


def study_request_from_proto(message: pb.StartStudyRequest) -> StudyRequest:
    for i, objective in enumerate(message.objectives):
        if objective.direction not in _DIRECTION:
            raise InvalidArgument(f"unknown direction {objective.direction}", f"objectives[{i}].direction")
    return StudyRequest(
        name=message.name,
        base=spec_from_proto(message.base, "base"),
        space=space_to_dict(message.space),
        n_trials=message.n_trials,
        parallelism=message.parallelism,
        objectives=[Objective(o.name, _DIRECTION[o.direction]) for o in message.objectives],
        pruning=PruningRule(
            enabled=message.pruning.enabled,
            min_steps=message.pruning.min_steps,
            warmup_trials=message.pruning.warmup_trials,
            rule=message.pruning.rule or "median",
        ),
        seed=message.seed,
        placement=placement_from_proto(message.placement),
        time_budget_seconds=message.time_budget_seconds,
    )


def comparison_request_to_proto(request: dict[str, Any]) -> pb.StartComparisonRequest:
    req = ComparisonRequest.from_dict(request)
    out = pb.StartComparisonRequest(
        name=req.name,
        base=spec_to_proto(req.base),
        seeds=req.seeds,
        time_budget_seconds=req.time_budget_seconds,
    )
    for arm in req.arms:
        out.arms.add(name=arm.name, overrides=spec_to_proto(arm.overrides), backend=arm.backend)
    fill(out.placement, req.placement)
    return out


def study_request_to_proto(request: dict[str, Any]) -> pb.StartStudyRequest:
    req = StudyRequest.from_dict(request)
    out = pb.StartStudyRequest(
        name=req.name,
        base=spec_to_proto(req.base),
        space=space_from_dict(req.space),
        n_trials=req.n_trials,
        parallelism=req.parallelism,
        objectives=[objective_to_proto(o) for o in req.objectives],
        pruning=pb.Pruning(
            enabled=req.pruning.enabled,
            min_steps=req.pruning.min_steps,
            warmup_trials=req.pruning.warmup_trials,
            rule=req.pruning.rule,
        ),
        seed=req.seed,
        time_budget_seconds=req.time_budget_seconds,
    )
    fill(out.placement, req.placement)
    return out


# ---- experiments and events -----------------------------------------------------------------------------


def experiment_to_proto(view: ExperimentView) -> pb.Experiment:
    record = view.record
    out = pb.Experiment(
        id=record.id,
        kind=KIND_TO_PROTO.get(record.kind, 0),
        name=record.name,
        status=experiment_status_value(record.status),
        run_ids=view.run_ids,
        total_runs=record.total_runs,
        finished_runs=view.finished_runs,
    )
    for name in ("created_at", "updated_at", "finished_at"):
        ms = getattr(record, name)
        if ms:
            getattr(out, name).FromMilliseconds(ms)
    if record.kind == "comparison":
        out.comparison.CopyFrom(comparison_request_to_proto(record.request))
    else:
        out.study.CopyFrom(study_request_to_proto(record.request))
        out.trials.extend(trial_to_proto(t) for t in view.trials)
    if record.error:
        fill(out.error, record.error)
    return out


def event_to_proto(event: ExperimentEvent) -> pb.ExperimentEvent:
    out = pb.ExperimentEvent(id=event.id, experiment_id=event.experiment_id)
    out.time.FromMilliseconds(event.time_ms)
    data = event.data
    if event.kind == "status":
        out.status = experiment_status_value(data.get("status", ""))
    elif event.kind == "run_submitted":
        out.run_submitted = data.get("run_id", "")
    elif event.kind == "run_finished":
        out.run_finished = data.get("run_id", "")
    elif event.kind == "trial":
        out.trial.CopyFrom(trial_to_proto(TrialRecord(**data)))
    else:
        out.log = data.get("message", "")
    return out


def report_to_proto(files: ReportFiles) -> pb.Report:
    report = files.report
    out = pb.Report(
        experiment_id=report.experiment_id,
        complete=report.complete,
        markdown=files.markdown,
        notes=report.notes,
        directory=files.directory,
        json=files.json_text,
        html=files.html,
    )
    for row in report.rows:
        out.rows.add(
            label=row.label,
            run_ids=row.run_ids,
            mean={k: v for k, v in row.mean.items() if math.isfinite(v)},
            std={k: v for k, v in row.std.items() if math.isfinite(v)},
            ci95={k: v for k, v in row.ci95.items() if math.isfinite(v)},
            params=row.params,
            pareto=row.pareto,
            n=row.n,
            status=row.status,
            backend=row.backend,
        )
    for test in report.tests:
        out.tests.add(
            a=test.a,
            b=test.b,
            metric=test.metric,
            test=test.test,
            statistic=test.statistic if math.isfinite(test.statistic) else 0.0,
            p_value=test.p_value,
            effect_size=test.effect_size if math.isfinite(test.effect_size) else 0.0,
            p_adjusted=test.p_adjusted,
            significant=test.significant,
            n=test.n,
            mean_difference=test.mean_difference,
            a_only=test.a_only,
            b_only=test.b_only,
        )
    for sample in report.samples:
        out.samples.add(label=sample.label, run_id=sample.run_id, seed=sample.seed, exact=sample.exact)
    for failure in report.failures:
        out.failures.add(
            label=failure.label, run_id=failure.run_id, code=failure.code, message=failure.message
        )
    for figure in files.figures:
        out.plots.add(name=figure.name, title=figure.title, png=figure.png, data_json=figure.data_json)
    return out
