"""Acquisition: log expected improvement and its maximization over a mixed space.

Plain EI underflows to exactly zero far from the incumbent once the model is confident, which leaves the
optimizer flat gradients and ties; log-EI (Ament et al., 2023, "Unexpected improvements to expected
improvement") stays finite and smooth there. It is maximized the way Optuna's GPSampler and BoTorch do it:
score many cheap candidates (a scrambled Sobol design over the whole space plus perturbations of the best
trials), then polish the top few with L-BFGS-B on the float features (batched: the sum of independent
acquisitions has a block-diagonal Hessian, so one L-BFGS run over all starts is as good as several) and an
exhaustive coordinate search over each int and categorical parameter, alternating until nothing moves.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize
from scipy.special import erfcx, log_ndtr, ndtr
from scipy.stats import qmc

from .gp import Posterior
from .space import Kind, SpaceEncoder

_LOG_2PI_HALF = 0.5 * math.log(2 * math.pi)
_LOG_PI_2_HALF = 0.5 * math.log(math.pi / 2)
_INV_SQRT_EPS = 1.0 / math.sqrt(np.finfo(float).eps)


def _log1mexp(x: np.ndarray) -> np.ndarray:
    """log(1 - exp(x)) for x < 0, accurate at both ends."""
    return np.where(x > -math.log(2), np.log(-np.expm1(np.minimum(x, -1e-300))), np.log1p(-np.exp(x)))


def log_h(z: np.ndarray) -> np.ndarray:
    """log(phi(z) + z * Phi(z)), the log of EI for unit variance, stable for very negative z."""
    z = np.asarray(z, dtype=float)
    out = np.empty_like(z)
    mid = z > -1
    zm = z[mid]
    out[mid] = np.log(np.exp(-0.5 * zm * zm - _LOG_2PI_HALF) + zm * ndtr(zm))
    tail = (~mid) & (z > -_INV_SQRT_EPS)
    zt = z[tail]
    out[tail] = (
        -0.5 * zt * zt
        - _LOG_2PI_HALF
        + _log1mexp(np.log(erfcx(-zt / math.sqrt(2)) * np.abs(zt)) + _LOG_PI_2_HALF)
    )
    far = ~(mid | tail)
    zf = z[far]
    out[far] = -0.5 * zf * zf - _LOG_2PI_HALF - 2 * np.log(np.abs(zf))
    return out


def log_ei(post: Posterior, Xq: np.ndarray, best: float) -> np.ndarray:
    """log EI for minimization, in the GP's standardized units."""
    mu, var = post.predict(Xq)
    sigma = np.sqrt(var)
    return np.log(sigma) + log_h((best - mu) / sigma)


def log_ei_with_grad(post: Posterior, Xq: np.ndarray, best: float) -> tuple[np.ndarray, np.ndarray]:
    mu, var, dmu, dvar = post.predict_with_grad(Xq)
    sigma = np.sqrt(var)
    z = (best - mu) / sigma
    lh = log_h(z)
    dsigma = dvar / (2 * sigma[:, None])
    dlh_dz = np.exp(log_ndtr(z) - lh)  # h'(z) = Phi(z), so d log h / dz = Phi(z) / h(z)
    dz = -dmu / sigma[:, None] - z[:, None] * dsigma / sigma[:, None]
    return np.log(sigma) + lh, dsigma / sigma[:, None] + dlh_dz[:, None] * dz


@dataclass(frozen=True)
class Proposal:
    x: np.ndarray
    log_ei: float


def _is_near(X: np.ndarray, x: np.ndarray, tol: float) -> bool:
    return X.shape[0] > 0 and float(np.min(np.max(np.abs(X - x), axis=1))) <= tol


def maximize_log_ei(
    post: Posterior,
    encoder: SpaceEncoder,
    best: float,
    rng: np.random.Generator,
    avoid: np.ndarray,
    incumbents: np.ndarray,
    pending: np.ndarray | None = None,
    pending_tol: float = 0.01,
    n_raw: int = 1024,
    n_local: int = 64,
    n_starts: int = 8,
    rounds: int = 3,
) -> Proposal | None:
    """The valid configuration with the highest log EI that is not within 1e-6 of a row of `avoid` (the
    trials) nor within `pending_tol` of a row of `pending` (running trials and this batch's earlier picks).

    Distances are L-infinity in feature units: `pending_tol` = 0.01 means "every parameter within 1% of its
    range", a configuration no trainer should run twice at once, while a finished trial may still be refined
    closely. `incumbents` (the best few trials' features) seed local candidates. Returns None only when
    every candidate coincides with a trial (a tiny, exhausted discrete space).
    """
    pending = np.zeros((0, avoid.shape[1])) if pending is None else pending

    def excluded(x: np.ndarray, tol: float) -> bool:
        return _is_near(avoid, x, 1e-6) or _is_near(pending, x, tol)

    n_params = len(encoder.slots)
    sobol = qmc.Sobol(d=n_params, scramble=True, seed=rng)
    raw = [encoder.from_unit_cube(sobol.random_base2(max(1, math.ceil(math.log2(n_raw)))))]
    cont = np.array(
        [s.start for s in encoder.slots if s.width and s.param.kind is not Kind.CATEGORICAL], dtype=int
    )
    for x0 in incumbents:
        for scale in (0.02, 0.1):
            local = np.repeat(x0[None, :], n_local // 2, axis=0)
            if cont.size:
                local[:, cont] += rng.normal(0.0, scale, size=(local.shape[0], cont.size))
            for s in encoder.slots:
                if s.width and s.param.kind is Kind.CATEGORICAL:
                    flip = rng.random(local.shape[0]) < 0.15
                    pick = rng.integers(0, s.width, size=int(flip.sum()))
                    block = np.zeros((int(flip.sum()), s.width))
                    block[np.arange(block.shape[0]), pick] = 1.0
                    local[flip, s.start : s.start + s.width] = block
            raw.append(encoder.snap(local))
    cand = np.unique(np.vstack(raw), axis=0)
    scores = log_ei(post, cand, best)
    order = np.argsort(-scores, kind="stable")
    starts = []
    for i in order:
        if len(starts) >= n_starts:
            break
        if excluded(cand[i], pending_tol) or any(np.array_equal(cand[i], s) for s in starts):
            continue
        starts.append(cand[i])
    if starts:
        X, vals = _polish(post, encoder, best, np.array(starts), rounds)
        pool_X, pool_v = np.vstack([X, cand[order]]), np.concatenate([vals, scores[order]])
    else:
        pool_X, pool_v = cand[order], scores[order]
    ranked = np.argsort(-pool_v, kind="stable")
    # A small discrete space may have nothing 1% away from the pending points: then any untried point will do.
    for tol in (pending_tol, 1e-6):
        for i in ranked:
            if not excluded(pool_X[i], tol):
                return Proposal(pool_X[i], float(pool_v[i]))
    return None


def _polish(
    post: Posterior, encoder: SpaceEncoder, best: float, X: np.ndarray, rounds: int
) -> tuple[np.ndarray, np.ndarray]:
    float_dims = np.array(encoder.float_dims, dtype=int)
    discrete = encoder.discrete_slots
    options = [encoder.slot_options(s) for s in discrete]
    vals = log_ei(post, X, best)
    for _ in range(rounds):
        before = X.copy()
        if float_dims.size:
            X = _lbfgs_floats(post, encoder, best, X, float_dims)
        for s, opts in zip(discrete, options, strict=True):
            # Try every option of this parameter at every start point at once.
            trial = np.repeat(X, len(opts), axis=0)
            trial[:, s.start : s.start + s.width] = np.tile(opts, (X.shape[0], 1))
            trial = encoder.snap(trial)
            v = log_ei(post, trial, best).reshape(X.shape[0], len(opts))
            X = trial.reshape(X.shape[0], len(opts), -1)[np.arange(X.shape[0]), np.argmax(v, axis=1)]
        X = encoder.snap(X)
        vals = log_ei(post, X, best)
        if np.allclose(X, before, atol=1e-9) or not discrete:
            break
    return X, vals


def _lbfgs_floats(
    post: Posterior, encoder: SpaceEncoder, best: float, X: np.ndarray, float_dims: np.ndarray
) -> np.ndarray:
    X = X.copy()
    S, F = X.shape[0], float_dims.size
    # A float whose condition is off sits at its imputed 0.5: pin it there.
    inactive = _inactive_floats(encoder, X, float_dims)
    lo = np.where(inactive, 0.5, 0.0).ravel()
    hi = np.where(inactive, 0.5, 1.0).ravel()

    def objective(z: np.ndarray) -> tuple[float, np.ndarray]:
        Xq = X.copy()
        Xq[:, float_dims] = z.reshape(S, F)
        v, g = log_ei_with_grad(post, Xq, best)
        return -float(np.sum(v)), -g[:, float_dims].ravel()

    res = minimize(
        objective,
        X[:, float_dims].ravel(),
        jac=True,
        method="L-BFGS-B",
        bounds=list(zip(lo, hi, strict=True)),
        options={"maxiter": 100},
    )
    X[:, float_dims] = np.clip(res.x.reshape(S, F), 0.0, 1.0)
    return X


def _inactive_floats(encoder: SpaceEncoder, X: np.ndarray, float_dims: np.ndarray) -> np.ndarray:
    """Which float features are off by their condition, per row (moving them would change nothing real)."""
    probe = X.copy()
    probe[:, float_dims] = 0.25
    return encoder.snap(probe)[:, float_dims] == 0.5
