"""Suggest: the next configurations to train, from a search space and the full trial history (stateless).

The first `n_startup` suggestions of a study follow a scrambled Sobol design (seeded, indexed by the
number of trials already sent, so successive calls with the same seed walk one space-filling sequence).
After that, a GP (gp.py) is fitted to the history and log-EI (acquisition.py) picks each point.

- Failed trials (and pruned ones that carry no value) are not dropped: they enter the GP at the worst
  observed value, so the model predicts "bad" around them and EI moves away, while their neighbourhood is
  not ruled out entirely (a diverged learning rate says little about one 3x smaller).
- Batches (`n > 1`) and running trials: a Kriging believer that never lies optimistically. Each chosen
  (or running) point is added to the GP with value max(posterior mean, best observed), hyperparameters
  kept, so EI there collapses and the next pick goes elsewhere, while the incumbent is never lowered by
  a made-up value. On its own a believer can put two picks a hair apart beside the incumbent, so a pick
  must also differ from every pending point by more than 1% of some parameter's range (finished trials
  may still be refined closely). Measured with batches of 4 (30 evaluations, seeds 100-139): this
  beat a constant liar at the history's mean on Hartmann6 (median regret 0.22 vs 0.29) and on the LoRA
  surface (0.015 vs 0.023), and tied on Branin.
- Several objectives: ParEGO (Knowles, 2006). Each objective is normalized to [0, 1] over the history and
  combined by an augmented Chebyshev scalarization max_i(w_i f_i) + 0.05 * sum_i(w_i f_i); every
  suggestion draws its own weights from the simplex (seeded), so a batch spreads along the front and
  successive calls cover it. Chosen over expected hypervolume improvement because it reuses the
  single-objective GP and acquisition unchanged, costs one GP per suggestion instead of one per objective
  plus Monte Carlo integration, and its Chebyshev form reaches non-convex parts of the front. Fixed
  `weights` turn it into a plain weighted scalarization with the same Chebyshev form.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy.stats import qmc
from sklearn.preprocessing import PowerTransformer

from services.common.errors import InvalidArgument

from .acquisition import maximize_log_ei
from .gp import Hyperpriors, Posterior, fit_gp
from .pareto import pareto_front
from .space import SearchSpace, SpaceEncoder, Value
from .trials import Direction, Objective, Trial, TrialStatus

MAX_BATCH = 64
CHEBYSHEV_RHO = 0.05


def default_n_startup(n_params: int) -> int:
    """Space-filling points before the GP takes over: enough to fit length scales, few enough to leave budget."""
    return min(10, max(4, n_params + 2))


@dataclass(frozen=True)
class SuggestRequest:
    space: SearchSpace
    trials: Sequence[Trial] = ()
    n: int = 1
    seed: int = 0
    objectives: Sequence[Objective] = (Objective("valid_loss"),)
    n_startup: int = 0  # 0 = default_n_startup(number of parameters)
    weights: Sequence[float] = ()  # fixed scalarization weights for several objectives; empty = ParEGO draws


@dataclass(frozen=True)
class Suggestion:
    params: dict[str, Value]
    source: str  # "design" (space-filling start) or "model" (GP + log-EI)
    predicted_mean: float = math.nan  # of the (scalarized) objective, in its own units; NaN for design points
    predicted_std: float = math.nan
    log_expected_improvement: float = math.nan  # in standardized units; NaN for design points
    weights: tuple[float, ...] = ()  # the scalarization weights this suggestion was chosen under


@dataclass(frozen=True)
class ModelSummary:
    """The fitted GP's hyperparameters, to explain a suggestion (length scales in [0, 1]-feature units)."""

    length_scales: dict[str, float]
    signal_variance: float
    noise_variance: float
    n_observations: int


@dataclass(frozen=True)
class SuggestResult:
    suggestions: list[Suggestion]
    pareto_front: list[int]  # indices into the request's trials (complete ones), best trade-offs
    model: ModelSummary | None = None
    notes: list[str] = field(default_factory=list)


@dataclass
class _History:
    X_obs: np.ndarray  # features of trials with values
    T_obs: np.ndarray  # their objective values, oriented so that lower is better (n x k)
    X_failed: np.ndarray
    X_running: np.ndarray
    complete: list[int]  # indices of COMPLETE trials, rows of T_obs[:len(complete)]


def _check_request(req: SuggestRequest, enc: SpaceEncoder) -> _History:
    if not 1 <= req.n <= MAX_BATCH:
        raise InvalidArgument(f"must be in [1, {MAX_BATCH}], got {req.n}", field="n")
    if req.n_startup < 0:
        raise InvalidArgument(f"must be >= 0, got {req.n_startup}", field="n_startup")
    if not req.objectives:
        raise InvalidArgument("give at least one objective", field="objectives")
    names = [o.name for o in req.objectives]
    for i, name in enumerate(names):
        if not name:
            raise InvalidArgument("an objective needs a name", field=f"objectives[{i}].name")
    if len(set(names)) != len(names):
        raise InvalidArgument(f"duplicate objective names in {names}", field="objectives")
    if req.weights:
        if len(req.weights) != len(names):
            raise InvalidArgument(
                f"expected {len(names)} weights (one per objective), got {len(req.weights)}", field="weights"
            )
        if any(not math.isfinite(w) or w < 0 for w in req.weights) or sum(req.weights) <= 0:
            raise InvalidArgument("weights must be finite, >= 0, and not all zero", field="weights")
    sign = np.array([1.0 if o.direction is Direction.MINIMIZE else -1.0 for o in req.objectives])
    obs_x, obs_t, failed, running = [], [], [], []
    complete_idx: list[int] = []
    pruned_x, pruned_t = [], []
    for i, t in enumerate(req.trials):
        where = f"trials[{t.trial_id or i}]"
        x = enc.encode(enc.check_config(t.params, where))
        if t.status is TrialStatus.RUNNING:
            running.append(x)
            continue
        if t.status is TrialStatus.FAILED:
            failed.append(x)
            continue
        has = [o.name in t.values for o in req.objectives]
        if t.status is TrialStatus.PRUNED and not all(has):
            failed.append(x)
            continue
        if not all(has):
            missing = names[has.index(False)]
            raise InvalidArgument(
                f"a {t.status.value} trial needs a value for {missing!r}", field=f"{where}.values[{missing}]"
            )
        vals = []
        for o in req.objectives:
            v = t.values[o.name]
            if not isinstance(v, int | float) or not math.isfinite(v):
                raise InvalidArgument(
                    f"objective value {v!r} is not a finite number (report a diverged run as FAILED instead)",
                    field=f"{where}.values[{o.name}]",
                )
            vals.append(float(v))
        if t.status is TrialStatus.COMPLETE:
            obs_x.append(x)
            obs_t.append(np.array(vals) * sign)
            complete_idx.append(i)
        else:
            pruned_x.append(x)
            pruned_t.append(np.array(vals) * sign)
    k, d = len(names), enc.dim
    return _History(
        _rows(obs_x + pruned_x, d),
        _rows(obs_t + pruned_t, k),
        _rows(failed, d),
        _rows(running, d),
        complete_idx,
    )


def _rows(vectors: list, width: int) -> np.ndarray:
    """Stack vectors into a (len, width) matrix; width may be 0 (a space whose every parameter is fixed)."""
    return np.array(vectors, dtype=float).reshape(len(vectors), width)


def _design(enc: SpaceEncoder, req: SuggestRequest, avoid: np.ndarray) -> list[Suggestion]:
    """The next points of the seeded Sobol sequence, skipping any that coincide with a known trial."""
    start = len(req.trials)
    m = max(1, math.ceil(math.log2(start + req.n + 64)))
    sobol = qmc.Sobol(d=len(enc.slots), scramble=True, seed=np.random.default_rng(req.seed))
    X = enc.from_unit_cube(sobol.random_base2(m))
    out: list[Suggestion] = []
    taken = avoid
    for x in X[start:]:
        if len(out) == req.n:
            break
        if taken.shape[0] and float(np.min(np.max(np.abs(taken - x), axis=1))) <= 1e-9:
            continue
        out.append(Suggestion(params=enc.decode(x), source="design"))
        taken = np.vstack([taken, x])
    return out


def _scalarize(T: np.ndarray, w: np.ndarray) -> np.ndarray:
    lo, hi = T.min(axis=0), T.max(axis=0)
    F = (T - lo) / np.where(hi > lo, hi - lo, 1.0)
    return np.max(F * w, axis=1) + CHEBYSHEV_RHO * F @ w


def suggest(req: SuggestRequest, priors: Hyperpriors | None = None) -> SuggestResult:
    """Proposes `req.n` distinct configurations. Same request and seed => same answer."""
    enc = SpaceEncoder(req.space)
    hist = _check_request(req, enc)
    k = len(req.objectives)
    front = [hist.complete[i] for i in pareto_front(hist.T_obs[: len(hist.complete)])]
    avoid = np.vstack([hist.X_obs, hist.X_failed, hist.X_running])
    n_startup = req.n_startup or default_n_startup(len(req.space.parameters))
    notes: list[str] = []
    if enc.dim == 0:
        # Every parameter has a single value: there is exactly one configuration, proposed until it is tried.
        if avoid.shape[0]:
            return SuggestResult([], front, None, ["the space has one point, and it has been tried"])
        return SuggestResult(
            [Suggestion(enc.decode(np.zeros(0)), "design")], front, None, ["the space has one point"]
        )
    if hist.X_obs.shape[0] < n_startup:
        out = _design(enc, req, avoid)
        if len(out) < req.n:
            notes.append(f"only {len(out)} untried configurations found in this discrete space")
        return SuggestResult(out, front, None, notes)

    rng = np.random.default_rng([req.seed, len(req.trials)])
    suggestions: list[Suggestion] = []
    pending = hist.X_running
    summary: ModelSummary | None = None
    post: Posterior | None = None
    fixed_w = np.array(req.weights, dtype=float) / sum(req.weights) if req.weights else None
    for _ in range(req.n):
        w = np.ones(1) if k == 1 else (fixed_w if fixed_w is not None else rng.dirichlet(np.ones(k)))
        if post is None or (k > 1 and fixed_w is None):
            t = hist.T_obs[:, 0] if k == 1 else _scalarize(hist.T_obs, w)
            post, targets, best = _fit(hist, t, priors)
            if summary is None:
                summary = _summary(enc, post)
            if pending.shape[0]:
                post = _believe(post, pending, best)
        prop = maximize_log_ei(
            post,
            enc,
            best,
            rng,
            avoid=avoid,
            incumbents=post.X[np.argsort(post.y, kind="stable")[:5]],
            pending=pending,
        )
        if prop is None:
            notes.append(f"only {len(suggestions)} untried configurations left in this discrete space")
            break
        mu, var = post.predict(prop.x[None, :])
        sign = 1.0 if k > 1 or _minimize(req) else -1.0
        suggestions.append(
            Suggestion(
                params=enc.decode(prop.x),
                source="model",
                predicted_mean=float(targets.to_objective(mu)[0]) * sign,
                predicted_std=float(
                    np.ptp(targets.to_objective(mu[0] + np.array([-1.0, 1.0]) * math.sqrt(var[0]))) / 2
                ),
                log_expected_improvement=prop.log_ei,
                weights=tuple(float(v) for v in w) if k > 1 else (),
            )
        )
        pending = np.vstack([pending, prop.x[None, :]])
        post = _believe(post, prop.x[None, :], best)
    return SuggestResult(suggestions, front, summary, notes)


def _minimize(req: SuggestRequest) -> bool:
    return req.objectives[0].direction is Direction.MINIMIZE


class _Targets:
    """Maps objective values (lower is better) to the GP's units and back.

    Standardize, then Yeo-Johnson (fitted by maximum likelihood, as in HEBO; Cowen-Rivers et al., 2022),
    then shift so that the worst observation sits at 0, the GP's prior mean. Losses are skewed (a few
    diverged or tiny-rank runs far above the rest); the power transform spreads out the good end, where
    the decisions are made. The shift makes the model assume that an unexplored region is as bad as the
    worst trial until data say otherwise: EI then stops chasing the corners of the cube, where a zero-mean
    GP's variance is largest (on Hartmann6 this alone took median regret at 30 from ~0.2 to ~0.05).
    """

    def __init__(self, t: np.ndarray):
        self.mean = float(np.mean(t))
        std = float(np.std(t))
        self.std = std if std > 0 else 1.0
        z = (t - self.mean) / self.std
        self.power = PowerTransformer(method="yeo-johnson").fit(z[:, None]) if np.ptp(z) > 0 else None
        w = self.power.transform(z[:, None])[:, 0] if self.power is not None else z
        self.shift = float(np.max(w))
        self.y = w - self.shift
        # The power transform's inverse is undefined past the ends of its image (NaN), and predictions can
        # fall there; invert by monotone interpolation over a wide grid instead, clamping at its ends.
        lo, hi = float(np.min(z)), float(np.max(z))
        self._grid = np.linspace(lo - 3 * (hi - lo) - 1, hi + 3 * (hi - lo) + 1, 2049)
        self._grid_w = (
            self.power.transform(self._grid[:, None])[:, 0] if self.power is not None else self._grid
        )

    def to_objective(self, y: np.ndarray) -> np.ndarray:
        z = np.interp(np.asarray(y, dtype=float) + self.shift, self._grid_w, self._grid)
        return z * self.std + self.mean


def _fit(hist: _History, t: np.ndarray, priors: Hyperpriors | None) -> tuple[Posterior, _Targets, float]:
    """Fits the GP to targets t (lower is better) plus failed trials imputed at the worst target."""
    worst = float(np.max(t))
    targets = _Targets(np.concatenate([t, np.full(hist.X_failed.shape[0], worst)]))
    post = fit_gp(np.vstack([hist.X_obs, hist.X_failed]), targets.y, priors)
    best = float(np.min(targets.y[: t.shape[0]]))
    return post, targets, best


def _believe(post: Posterior, Xp: np.ndarray, best: float) -> Posterior:
    mu, _ = post.predict(Xp)
    return post.condition_on(Xp, np.maximum(mu, best))


def _summary(enc: SpaceEncoder, post: Posterior) -> ModelSummary:
    scales: dict[str, float] = {}
    for s in enc.slots:
        if s.width:
            # A categorical's one-hot features each get a scale; report the shortest (its most decisive choice).
            scales[s.param.name] = float(np.min(post.length_scales[s.start : s.start + s.width]))
    return ModelSummary(scales, post.signal_var, post.noise_var, post.X.shape[0])
