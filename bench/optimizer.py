"""Benchmark of the optimizer's Suggest against random search, Optuna (TPE, GP) and scikit-optimize.

For each objective and seed, every sampler gets `--evals` evaluations (the baselines start with 10 random
points, ours with its own seeded Sobol design); we report the median and interquartile range over seeds of
the simple regret (best value found minus the known minimum) after 10, 20 and 30 evaluations, and the time
one suggestion takes given 10, 50 and 200 past trials. Results go to bench/results/optimizer.json and a
Markdown table in bench/results/optimizer.md.

Samplers: `peftlab` (Suggest with its defaults: a Sobol design of min(10, max(4, params + 2)) points),
`peftlab-10` (a 10-point design, as many as the baselines' random starts), `peftlab-batch4` (batches of 4,
as four parallel trainers would ask), `random`, `optuna-tpe`, `optuna-gp` (Optuna 5.0's TPESampler and
GPSampler, 10 random starts), `skopt-gp` (scikit-optimize's gp_minimize, 10 random starts, its defaults).

Objectives:
- Branin (2 floats), minimum 0.397887.
- Hartmann6 (6 floats in [0, 1]), minimum -3.322368.
- `lora`: a synthetic validation-loss surface over a LoRA-style mixed space (see `lora_loss`), minimum 0.97.

Optuna and scikit-optimize are bench-only dependencies (`make bench-optimizer` installs them); Optuna's
GPSampler also needs torch (CPU build).

Run: `nice -n 15 env OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 .venv/bin/python -m bench.optimizer`
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from services.optimizer.space import Condition, Kind, Parameter, SearchSpace, SpaceEncoder
from services.optimizer.suggest import SuggestRequest, suggest
from services.optimizer.trials import Trial

RESULTS = Path(__file__).resolve().parent / "results"
CHECKPOINTS = (10, 20, 30)
TIMING_TRIALS = (10, 50, 200)
N_RANDOM_STARTS = 10  # the baselines' random initial points, as in the issue's anchors


# ---------------------------------------------------------------- objectives
def branin(p: dict) -> float:
    x1, x2 = p["x1"], p["x2"]
    b, c, t = 5.1 / (4 * math.pi**2), 5 / math.pi, 1 / (8 * math.pi)
    return (x2 - b * x1**2 + c * x1 - 6) ** 2 + 10 * (1 - t) * math.cos(x1) + 10


_H_A = np.array(
    [
        [10, 3, 17, 3.5, 1.7, 8],
        [0.05, 10, 17, 0.1, 8, 14],
        [3, 3.5, 1.7, 10, 17, 8],
        [17, 8, 0.05, 10, 0.1, 14],
    ]
)
_H_P = 1e-4 * np.array(
    [
        [1312, 1696, 5569, 124, 8283, 5886],
        [2329, 4135, 8307, 3736, 1004, 9991],
        [2348, 1451, 3522, 2883, 3047, 6650],
        [4047, 8828, 8732, 5743, 1091, 381],
    ]
)
_H_ALPHA = np.array([1.0, 1.2, 3.0, 3.2])


def hartmann6(p: dict) -> float:
    x = np.array([p[f"x{i}"] for i in range(6)])
    return -float(np.sum(_H_ALPHA * np.exp(-np.sum(_H_A * (x - _H_P) ** 2, axis=1))))


LORA_METHODS = ("lora", "dora", "qlora", "full")
_ADAPTERS = Condition("method", ("lora", "dora", "qlora"))
# Floors: what each method reaches at its best setting on a small dataset (DoRA a bit better than LoRA,
# QLoRA a bit worse from quantization, full fine-tuning overfits a small set).
_FLOOR = {"lora": 1.00, "dora": 0.97, "qlora": 1.04, "full": 1.06}


def lora_loss(p: dict) -> float:
    """A LoRA validation-loss surface with the structure real sweeps show (deterministic; minimum 0.97).

    - The learning rate that matters for an adapter is the effective one, lr * alpha / rank (the update is
      scaled by alpha / rank), so lr, alpha and rank form a ridge; full fine-tuning wants ~10x less.
    - The best lr grows like sqrt(batch size); larger batches mean fewer steps (a mild penalty).
    - Loss is quadratic in log10(lr) around the optimum (0.08 per decade squared) and jumps by up to 2.5
      (divergence) once lr exceeds the optimum by 0.6 decades, or by up to 1.2 decades with 10% warmup.
    - Rank: too small underfits, too large overfits a small dataset: U-shaped in log2(rank), best at 24.
    - Dropout best at 0.05, warmup best at 6% of steps.
    """
    method = p["method"]
    bs = p["batch_size"]
    warm = p["warmup_ratio"]
    loss = _FLOOR[method] + 0.015 * math.log2(bs / 8) ** 2 + 0.2 * (warm - 0.06) ** 2
    if method == "full":
        lr_opt, lr_eff = 2e-5 * math.sqrt(bs / 8), p["learning_rate"]
    else:
        rank, alpha = p["rank"], p["alpha"]
        lr_opt = 2e-4 * math.sqrt(bs / 8) * (1.3 if method == "dora" else 1.0)
        lr_eff = p["learning_rate"] * (alpha / rank) / 2.0  # relative to the common alpha = 2 * rank
        loss += 0.012 * (math.log2(rank) - math.log2(24)) ** 2 + 0.5 * (p["dropout"] - 0.05) ** 2
    excess = math.log10(lr_eff) - math.log10(lr_opt)
    loss += 0.08 * excess**2
    threshold = 0.6 + 6.0 * min(warm, 0.1)
    loss += 2.5 * min(1.0, max(0.0, (excess - threshold) / 0.3)) ** 2
    return loss


@dataclass(frozen=True)
class Objective:
    name: str
    space: SearchSpace
    fn: Callable[[dict], float]
    minimum: float


OBJECTIVES = {
    "branin": Objective(
        "branin",
        SearchSpace((Parameter.real("x1", -5.0, 10.0), Parameter.real("x2", 0.0, 15.0))),
        branin,
        0.397887357729738,
    ),
    "hartmann6": Objective(
        "hartmann6",
        SearchSpace(tuple(Parameter.real(f"x{i}", 0.0, 1.0) for i in range(6))),
        hartmann6,
        -3.32236801141551,
    ),
    "lora": Objective(
        "lora",
        SearchSpace(
            (
                Parameter.categorical("method", LORA_METHODS),
                Parameter.real("learning_rate", 1e-6, 1e-2, log=True),
                Parameter.integer("rank", 1, 256, log=True, condition=_ADAPTERS),
                Parameter.real("alpha", 1.0, 256.0, log=True, condition=_ADAPTERS),
                Parameter.real("dropout", 0.0, 0.3, condition=_ADAPTERS),
                Parameter.integer("batch_size", 1, 64, log=True),
                Parameter.real("warmup_ratio", 0.0, 0.3),
            )
        ),
        lora_loss,
        0.97,
    ),
}


# ---------------------------------------------------------------- samplers
def run_peftlab(obj: Objective, seed: int, evals: int, n_startup: int = 0, batch: int = 1) -> list[float]:
    trials: list[Trial] = []
    values = []
    while len(values) < evals:
        n = min(batch, evals - len(values))
        for s in suggest(SuggestRequest(obj.space, trials, n=n, seed=seed, n_startup=n_startup)).suggestions:
            y = obj.fn(s.params)
            values.append(y)
            trials.append(Trial(s.params, values={"valid_loss": y}))
    return values


def _optuna_params(trial, space: SearchSpace) -> dict:
    """Define-by-run: conditional parameters are only asked for when their condition holds."""
    params: dict = {}
    enc = SpaceEncoder(space)
    for i in enc.order:
        p = space.parameters[i]
        if not enc.is_active(params, p.name):
            continue
        if p.kind is Kind.CATEGORICAL:
            params[p.name] = trial.suggest_categorical(p.name, list(p.choices))
        elif p.kind is Kind.INT:
            params[p.name] = trial.suggest_int(p.name, int(p.low), int(p.high), log=p.log)
        else:
            params[p.name] = trial.suggest_float(p.name, p.low, p.high, log=p.log)
    return params


def _optuna_sampler(name: str, seed: int):
    import optuna

    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=N_RANDOM_STARTS)
    return optuna.samplers.GPSampler(seed=seed, n_startup_trials=N_RANDOM_STARTS)


def run_optuna(name: str, obj: Objective, seed: int, evals: int) -> list[float]:
    import optuna

    study = optuna.create_study(sampler=_optuna_sampler(name, seed))
    study.optimize(lambda t: obj.fn(_optuna_params(t, obj.space)), n_trials=evals)
    return [t.value for t in study.trials]


def _skopt_dimensions(space: SearchSpace) -> list:
    from skopt.space import Categorical, Integer, Real

    dims = []
    for p in space.parameters:
        prior = "log-uniform" if p.log else "uniform"
        if p.kind is Kind.CATEGORICAL:
            dims.append(Categorical(list(p.choices), name=p.name))
        elif p.kind is Kind.INT:
            dims.append(Integer(int(p.low), int(p.high), prior=prior, name=p.name))
        else:
            dims.append(Real(p.low, p.high, prior=prior, name=p.name))
    return dims


def _skopt_point(space: SearchSpace, x: list) -> dict:
    # skopt has no conditional parameters: it sets all of them and the objective ignores the inactive ones.
    return {p.name: (v.item() if hasattr(v, "item") else v) for p, v in zip(space.parameters, x, strict=True)}


def run_skopt(obj: Objective, seed: int, evals: int) -> list[float]:
    from skopt import gp_minimize

    res = gp_minimize(
        lambda x: obj.fn(_skopt_point(obj.space, x)),
        _skopt_dimensions(obj.space),
        n_calls=evals,
        n_initial_points=N_RANDOM_STARTS,
        random_state=seed,
    )
    return [float(v) for v in res.func_vals]


SAMPLERS: dict[str, Callable[[Objective, int, int], list[float]]] = {
    "peftlab": run_peftlab,
    # The same with 10 design points, as many as the baselines' random starts (the default is fewer).
    "peftlab-10": lambda o, s, e: run_peftlab(o, s, e, n_startup=N_RANDOM_STARTS),
    # Four trainers in parallel: each call asks for a batch of 4 (a quarter of the rounds).
    "peftlab-batch4": lambda o, s, e: run_peftlab(o, s, e, batch=4),
    "random": lambda o, s, e: run_optuna("random", o, s, e),
    "optuna-tpe": lambda o, s, e: run_optuna("tpe", o, s, e),
    "optuna-gp": lambda o, s, e: run_optuna("gp", o, s, e),
    "skopt-gp": run_skopt,
}


# ---------------------------------------------------------------- suggestion time
def _random_history(obj: Objective, n: int, seed: int) -> list[tuple[dict, float]]:
    enc = SpaceEncoder(obj.space)
    X = enc.from_unit_cube(np.random.default_rng(seed).random((n, len(obj.space.parameters))))
    return [(enc.decode(x), obj.fn(enc.decode(x))) for x in X]


def _prepare(sampler: str, obj: Objective, history: list[tuple[dict, float]], r: int) -> Callable[[], object]:
    """Everything but the suggestion itself: a callable that produces one suggestion from the history."""
    if sampler.startswith("peftlab"):
        trials = [Trial(p, values={"valid_loss": y}) for p, y in history]
        return lambda: suggest(SuggestRequest(obj.space, trials, n=1, seed=r))
    if sampler == "skopt-gp":
        from skopt import Optimizer

        opt = Optimizer(
            _skopt_dimensions(obj.space),
            base_estimator="GP",
            n_initial_points=N_RANDOM_STARTS,
            random_state=r,
        )
        # skopt has no conditions: inactive parameters get any valid value (the objective ignores them).
        X = [
            [
                p.get(q.name, q.low if q.kind is not Kind.CATEGORICAL else q.choices[0])
                for q in obj.space.parameters
            ]
            for p, _ in history
        ]
        y = [v for _, v in history]
        return lambda: (opt.tell(X, y), opt.ask())  # tell fits the GP and optimizes the acquisition
    import optuna
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    dists = {}
    for q in obj.space.parameters:
        if q.kind is Kind.CATEGORICAL:
            dists[q.name] = CategoricalDistribution(list(q.choices))
        elif q.kind is Kind.INT:
            dists[q.name] = IntDistribution(int(q.low), int(q.high), log=q.log)
        else:
            dists[q.name] = FloatDistribution(q.low, q.high, log=q.log)
    study = optuna.create_study(sampler=_optuna_sampler(sampler.removeprefix("optuna-"), r))
    for p, y in history:
        study.add_trial(optuna.trial.create_trial(params=p, distributions={k: dists[k] for k in p}, value=y))
    return lambda: _optuna_params(study.ask(), obj.space)


def time_suggestion(sampler: str, obj: Objective, n_trials: int, repeats: int = 5) -> dict[str, float]:
    """Median wall and CPU seconds to produce one suggestion given `n_trials` completed random trials.

    CPU time (this process) is reported next to wall time because the machine may be shared: it is what the
    suggestion would take on an idle core.
    """
    history = _random_history(obj, n_trials, seed=1234)
    wall, cpu = [], []
    for r in range(repeats):
        run = _prepare(sampler, obj, history, r)
        w0, c0 = time.perf_counter(), time.process_time()
        run()
        wall.append(time.perf_counter() - w0)
        cpu.append(time.process_time() - c0)
    return {"wall_s": statistics.median(wall), "cpu_s": statistics.median(cpu)}


# ---------------------------------------------------------------- report
def _quantiles(values: list[float]) -> dict[str, float]:
    q25, q50, q75 = np.percentile(values, [25, 50, 75])
    return {"median": float(q50), "q25": float(q25), "q75": float(q75)}


def summarize(curves: dict[str, list[float]], minimum: float) -> dict[str, dict[str, float]]:
    out = {}
    for k in CHECKPOINTS:
        regrets = [min(v[:k]) - minimum for v in curves.values() if len(v) >= k]
        if regrets:
            out[str(k)] = _quantiles(regrets)
    return out


def markdown(results: dict) -> str:
    lines = [
        "# Optimizer benchmark",
        "",
        f"{results['seeds']} seeds, {results['evals']} evaluations; simple regret (best found - minimum), "
        "median [q25, q75]. Baselines start with 10 random points; peftlab with its own Sobol design "
        "(peftlab-10: 10 Sobol points; peftlab-batch4: asks for 4 at a time).",
        f"Machine: {results['machine']}. Command: `{results['command']}`.",
        "",
    ]
    for obj, by_sampler in results["regret"].items():
        lines += [f"## {obj}", "", "| sampler | @10 | @20 | @30 |", "|---|---|---|---|"]
        for sampler, summary in by_sampler.items():
            cells = [
                f"{s['median']:.3g} [{s['q25']:.3g}, {s['q75']:.3g}]" if (s := summary.get(str(k))) else "-"
                for k in CHECKPOINTS
            ]
            lines.append(f"| {sampler} | " + " | ".join(cells) + " |")
        lines.append("")
    if results.get("timing"):
        lines += [
            f"## Suggestion time: wall s (CPU s), median of 5, on the `{results['timing_objective']}` space",
            "",
            f"Load average during the timings: {results.get('timing_load_average', float('nan')):.1f} "
            f"on {_cpu_count()} cores (CPU time is what a suggestion costs on an idle core).",
            "",
            "| sampler | " + " | ".join(f"{n} trials" for n in TIMING_TRIALS) + " |",
            "|---|" + "---|" * len(TIMING_TRIALS),
        ]
        for sampler, by_n in results["timing"].items():
            cells = [f"{by_n[str(n)]['wall_s']:.3f} ({by_n[str(n)]['cpu_s']:.3f})" for n in TIMING_TRIALS]
            lines.append(f"| {sampler} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--samplers", default=",".join(SAMPLERS), help="comma-separated subset of samplers")
    parser.add_argument(
        "--objectives", default=",".join(OBJECTIVES), help="comma-separated subset of objectives"
    )
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--seed-offset", type=int, default=0)
    parser.add_argument("--evals", type=int, default=30)
    parser.add_argument("--timing-objective", default="lora", help="objective whose space the timings use")
    parser.add_argument("--no-timing", action="store_true")
    parser.add_argument(
        "--timing-only", action="store_true", help="redo only the timings, keeping OUT.json's regret results"
    )
    parser.add_argument("--out", type=Path, default=RESULTS / "optimizer", help="writes OUT.json and OUT.md")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    log = logging.getLogger("bench.optimizer")
    warnings.filterwarnings("ignore")
    try:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.ERROR)
    except ImportError:
        pass
    samplers = args.samplers.split(",")
    seeds = range(args.seed_offset, args.seed_offset + args.seeds)
    results: dict = {
        "seeds": args.seeds,
        "seed_offset": args.seed_offset,
        "evals": args.evals,
        "machine": f"{platform.system()} {platform.machine()}, {_cpu_count()} CPU cores, {platform.python_version()}",
        "command": " ".join(["python -m bench.optimizer", *sys.argv[1:]]),
        "regret": {},
        "curves": {},
        "wall_s": {},
    }
    if args.timing_only:
        results = json.loads(args.out.with_suffix(".json").read_text())
    for obj_name in [] if args.timing_only else args.objectives.split(","):
        obj = OBJECTIVES[obj_name]
        results["regret"][obj_name] = {}
        results["curves"][obj_name] = {}
        for sampler in samplers:
            t0 = time.perf_counter()
            curves = {str(s): SAMPLERS[sampler](obj, s, args.evals) for s in seeds}
            wall = time.perf_counter() - t0
            results["curves"][obj_name][sampler] = curves
            results["regret"][obj_name][sampler] = summarize(curves, obj.minimum)
            results["wall_s"][f"{obj_name}/{sampler}"] = wall
            r30 = results["regret"][obj_name][sampler].get(str(args.evals), {}).get("median", math.nan)
            log.info("%s %s: median regret @%d %.4g (%.0f s)", obj_name, sampler, args.evals, r30, wall)
    if not args.no_timing:
        obj = OBJECTIVES[args.timing_objective]
        results["timing_objective"] = args.timing_objective
        results["timing"] = {}
        # The machine may be shared: its load during the timings says how far wall time exceeds CPU time.
        results["timing_load_average"] = os.getloadavg()[0]
        # The peftlab variants run peftlab's code once past the design: time it once.
        for sampler in [s for s in samplers if s not in ("peftlab-10", "peftlab-batch4")]:
            results["timing"][sampler] = {str(n): time_suggestion(sampler, obj, n) for n in TIMING_TRIALS}
            log.info("timing %s: %s", sampler, results["timing"][sampler])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(results, indent=1) + "\n")
    args.out.with_suffix(".md").write_text(markdown(results))
    print(markdown(results))


def _cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


if __name__ == "__main__":
    main()
