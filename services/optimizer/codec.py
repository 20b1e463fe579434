"""Protos <-> the optimizer core's dataclasses. Decoding validates the shape of a message (a oneof left
unset, a matrix of the wrong size) and names the field; the core validates the meaning.

The comparator records studies with SearchSpace and Trial from optimizer.proto: it can use
`space_from_proto` / `trial_from_proto` and their inverses from here.
"""

from __future__ import annotations

import math

import numpy as np
from peftlab.v1 import optimizer_pb2 as pb

from services.common import messages
from services.common.errors import InvalidArgument
from services.common.memory import ModelShape
from services.common.messages import params_from_proto, value_from_proto, value_to_proto
from services.common.spec import DEFAULT_TARGET_MODULES
from services.common.status_names import TRIAL_STATUSES, trial_status_name

from .batch import GB, BatchSizeRecommendation, BatchSizeRequest
from .rank import AdapterUpdate, RankRecommendation, RankRequest
from .schedules import MethodSchedule
from .space import Condition, Kind, Parameter, SearchSpace
from .suggest import SuggestRequest, SuggestResult
from .trials import Direction, Objective, Trial, TrialStatus

DEFAULT_OBJECTIVE = Objective("valid_loss", Direction.MINIMIZE)


# ---------------------------------------------------------------- values, spaces, trials
def space_from_proto(msg: pb.SearchSpace, field: str = "space") -> SearchSpace:
    params = []
    for i, p in enumerate(msg.parameters):
        where = f"{field}.parameters[{p.name or i}]"
        condition = None
        if p.HasField("condition"):
            values = tuple(value_from_proto(v, f"{where}.condition.values") for v in p.condition.values)
            condition = Condition(p.condition.parent, values)
        domain = p.WhichOneof("domain")
        if domain == "float_range":
            r = p.float_range
            params.append(Parameter.real(p.name, r.low, r.high, log=r.log, condition=condition))
        elif domain == "int_range":
            r = p.int_range
            params.append(Parameter.integer(p.name, r.low, r.high, log=r.log, condition=condition))
        elif domain == "categorical":
            choices = tuple(value_from_proto(v, f"{where}.categorical") for v in p.categorical.values)
            params.append(Parameter.categorical(p.name, choices, condition=condition))
        else:
            raise InvalidArgument("set one of float_range, int_range, categorical", field=where)
    return SearchSpace(tuple(params))


def space_to_proto(space: SearchSpace) -> pb.SearchSpace:
    out = pb.SearchSpace()
    for p in space.parameters:
        msg = out.parameters.add(name=p.name)
        if p.kind is Kind.FLOAT:
            msg.float_range.CopyFrom(pb.FloatRange(low=p.low, high=p.high, log=p.log))
        elif p.kind is Kind.INT:
            msg.int_range.CopyFrom(pb.IntRange(low=int(p.low), high=int(p.high), log=p.log))
        else:
            msg.categorical.CopyFrom(pb.Choices(values=[value_to_proto(c) for c in p.choices]))
        if p.condition is not None:
            msg.condition.CopyFrom(
                pb.Condition(
                    parent=p.condition.parent, values=[value_to_proto(v) for v in p.condition.values]
                )
            )
    return out


def trial_from_proto(msg: pb.Trial, field: str) -> Trial:
    params = params_from_proto(msg.params, f"{field}.params")
    if msg.status != 0 and msg.status not in TRIAL_STATUSES.values():
        raise InvalidArgument(f"unknown trial status {msg.status}", f"{field}.status")
    status = TrialStatus[trial_status_name(msg.status)]
    return Trial(params, status, dict(msg.values), msg.trial_id)


def trial_to_proto(trial: Trial) -> pb.Trial:
    return messages.trial_to_proto(trial.trial_id, trial.params, trial.status.name, trial.values)


def objective_from_proto(msg: pb.StudyObjective) -> Objective:
    direction = Direction.MAXIMIZE if msg.direction == pb.StudyObjective.MAXIMIZE else Direction.MINIMIZE
    return Objective(msg.name, direction)


# ---------------------------------------------------------------- Suggest
def suggest_request_from_proto(msg: pb.SuggestRequest) -> SuggestRequest:
    trials = tuple(trial_from_proto(t, f"trials[{t.trial_id or i}]") for i, t in enumerate(msg.trials))
    objectives = tuple(objective_from_proto(o) for o in msg.objectives) or (DEFAULT_OBJECTIVE,)
    if msg.seed < 0:
        raise InvalidArgument(f"must be >= 0, got {msg.seed}", "seed")
    return SuggestRequest(
        space=space_from_proto(msg.space),
        trials=trials,
        n=msg.n or 1,
        seed=msg.seed,
        objectives=objectives,
        n_startup=msg.n_startup,
        weights=tuple(msg.weights),
    )


def suggest_response(result: SuggestResult) -> pb.SuggestResponse:
    out = pb.SuggestResponse(pareto_front=result.pareto_front, notes=result.notes)
    for s in result.suggestions:
        msg = out.suggestions.add(source=s.source, weights=s.weights)
        for k, v in s.params.items():
            msg.params[k].CopyFrom(value_to_proto(v))
        if s.source == "model":
            msg.predicted_mean = s.predicted_mean
            msg.predicted_std = s.predicted_std
            msg.log_expected_improvement = s.log_expected_improvement
    if result.model is not None:
        m = result.model
        out.model.CopyFrom(
            pb.ModelSummary(
                length_scales=m.length_scales,
                signal_variance=m.signal_variance,
                noise_variance=m.noise_variance,
                n_observations=m.n_observations,
            )
        )
    return out


# ---------------------------------------------------------------- RecommendRank
def rank_request_from_proto(msg: pb.RecommendRankRequest) -> RankRequest:
    layers = []
    for i, layer in enumerate(msg.layers):
        where = f"layers[{layer.name or i}]"
        scale = layer.scale or 1.0
        if layer.lora_a or layer.lora_b:
            d_in, d_out, r = layer.in_features, layer.out_features, layer.rank
            if min(d_in, d_out, r) <= 0:
                raise InvalidArgument(
                    "in_features, out_features and rank must be > 0 with lora_a/lora_b", field=where
                )
            if len(layer.lora_a) != d_in * r or len(layer.lora_b) != r * d_out:
                raise InvalidArgument(
                    f"lora_a needs in_features x rank = {d_in * r} floats (got {len(layer.lora_a)}), lora_b "
                    f"rank x out_features = {r * d_out} (got {len(layer.lora_b)})",
                    field=where,
                )
            a = np.asarray(layer.lora_a, dtype=np.float64).reshape(d_in, r)
            b = np.asarray(layer.lora_b, dtype=np.float64).reshape(r, d_out)
            layers.append(AdapterUpdate(layer.name, lora_a=a, lora_b=b, scale=scale))
        else:
            sv = np.asarray(layer.singular_values, dtype=float) * abs(scale)
            layers.append(
                AdapterUpdate(
                    layer.name,
                    singular_values=tuple(sv),
                    in_features=layer.in_features,
                    out_features=layer.out_features,
                    probe_rank=layer.rank,
                )
            )
    return RankRequest(
        layers=tuple(layers),
        energy_threshold=msg.energy_threshold or 0.9,
        layer_quantile=msg.layer_quantile if msg.HasField("layer_quantile") else 0.75,
        train_tokens=msg.train_tokens,
        max_params_per_token=msg.max_params_per_token or 32.0,
        min_rank=msg.min_rank or 1,
        max_rank=msg.max_rank,
    )


def rank_response(rec: RankRecommendation) -> pb.RecommendRankResponse:
    return pb.RecommendRankResponse(
        rank=rec.rank,
        spectrum_rank=rec.spectrum_rank,
        probe_rank=rec.probe_rank,
        saturated=rec.saturated,
        data_bound=rec.data_bound,
        params_per_rank=rec.params_per_rank,
        layers=[
            pb.LayerSpectrum(
                name=layer.name,
                probe_rank=layer.probe_rank,
                effective_rank=layer.effective_rank,
                energy_at_recommended=layer.energy_at_recommended,
                singular_values=layer.singular_values,
            )
            for layer in rec.layers
        ],
        explanation=rec.explanation,
    )


# ---------------------------------------------------------------- RecommendBatchSize
def batch_request_from_proto(msg: pb.RecommendBatchSizeRequest) -> BatchSizeRequest:
    s = msg.model_shape
    if not msg.HasField("model_shape"):
        raise InvalidArgument("give the model's shape (hidden_size, num_layers, ...)", field="model_shape")
    if not math.isfinite(msg.memory_budget_gb):
        raise InvalidArgument("must be a finite number of GB", field="memory_budget_gb")
    heads = s.num_heads
    shape = ModelShape(
        hidden_size=s.hidden_size,
        intermediate_size=s.intermediate_size,
        num_layers=s.num_layers,
        num_heads=heads,
        num_kv_heads=s.num_kv_heads or heads,
        head_dim=s.head_dim or (s.hidden_size // heads if heads > 0 else 0),
        vocab_size=s.vocab_size,
        tied_embeddings=s.tied_embeddings if s.HasField("tied_embeddings") else True,
    )
    return BatchSizeRequest(
        shape=shape,
        method=msg.method or "lora",
        seq_len=msg.seq_len,
        memory_budget_bytes=int(msg.memory_budget_gb * GB),
        grad_checkpoint=msg.grad_checkpoint,
        target_effective_batch=msg.target_effective_batch,
        rank=msg.rank or 8,
        num_layers=msg.num_layers or -1,
        target_modules=tuple(msg.target_modules) or DEFAULT_TARGET_MODULES,
        quant_bits=msg.quant_bits or 4,
        quant_group_size=msg.quant_group_size or 32,
        dtype_bytes=msg.dtype_bytes or 4,
        max_batch=msg.max_batch or 1024,
    )


def batch_response(rec: BatchSizeRecommendation) -> pb.RecommendBatchSizeResponse:
    e = rec.estimate
    return pb.RecommendBatchSizeResponse(
        batch_size=rec.batch_size,
        grad_accumulation=rec.grad_accumulation,
        largest_fitting_batch=rec.largest_fitting_batch,
        fits=rec.fits,
        predicted_peak_bytes=e.peak_bytes,
        frozen_weights_bytes=e.frozen_weights_bytes,
        trainable_bytes=e.trainable_bytes,
        activations_bytes=e.activations_bytes,
        logits_bytes=e.logits_bytes,
        overhead_bytes=e.overhead_bytes,
        explanation=rec.explanation,
    )


# ---------------------------------------------------------------- GetDefaultSpace
def default_space_response(space: SearchSpace, schedules: list[MethodSchedule]) -> pb.GetDefaultSpaceResponse:
    return pb.GetDefaultSpaceResponse(
        space=space_to_proto(space),
        schedules=[
            pb.MethodSchedule(
                method=s.method,
                learning_rate=s.learning_rate,
                learning_rate_low=s.learning_rate_low,
                learning_rate_high=s.learning_rate_high,
                warmup_steps=s.warmup_steps,
                schedule=s.schedule,
                min_lr_ratio=s.min_lr_ratio,
                alpha_per_rank=s.alpha_per_rank,
                reasoning=s.reasoning,
            )
            for s in schedules
        ],
    )
