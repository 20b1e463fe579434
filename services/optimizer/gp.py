"""The surrogate: scikit-learn's GaussianProcessRegressor with hyperpriors, and a posterior with input gradients.

Kernel: `c * Matern(nu=2.5, ARD) + noise` on [0, 1]^d inputs and standardized outputs. With 10-30 points,
maximum likelihood happily explains the data with tiny length scales (a needle at every point, no
generalization) or with everything as noise; both make expected improvement useless. So hyperparameters are
MAP estimates under weak priors that keep them sensible (the shapes Optuna's GPSampler uses; BoTorch's
dimension-scaled log-normal prior on length scales did worse here, median regret @30 on Hartmann6 0.45-0.64
against 0.20 with these, seeds 100-139, before the output shift of suggest.py):

- length scale l of each input: log p = -(0.1 l^2 + 0.1 / l^2), which peaks at l = 1 (the unit cube's width)
  and makes l < 0.1 or l > 10 cost about 10 nats each;
- signal variance c: Gamma(2, 1), mode 1 (outputs are standardized);
- noise variance: Gamma(1.1, 30), most mass below 0.1 and a floor of 1e-6, so deterministic objectives are
  interpolated almost exactly while noisy ones still get a noise term.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
from scipy.linalg import cho_solve, cholesky, solve_triangular
from scipy.linalg.lapack import dpotrf, dpotri
from scipy.optimize import minimize
from sklearn.exceptions import ConvergenceWarning
from sklearn.gaussian_process import GaussianProcessRegressor
from sklearn.gaussian_process.kernels import ConstantKernel, Matern, WhiteKernel

NOISE_FLOOR = 1e-6
FIT_SUBSET = 300
_LS_STARTS = (0.5, 2.0)
_SQRT5 = math.sqrt(5.0)


@dataclass(frozen=True)
class Hyperpriors:
    """Prior strengths (see the module docstring); the defaults are what the benchmark was tuned with."""

    length_scale_strength: float = 0.1
    signal_shape: float = 2.0
    signal_rate: float = 1.0
    noise_shape: float = 1.1
    noise_rate: float = 30.0


def _log_prior(theta: np.ndarray, priors: Hyperpriors) -> tuple[float, np.ndarray]:
    """Log prior and its gradient over sklearn's theta = log([c, l_1..l_d, noise])."""
    grad = np.zeros_like(theta)
    s = priors.length_scale_strength
    t = theta[1:-1]
    up, down = np.exp(2 * t), np.exp(-2 * t)
    lp = -s * float(np.sum(up + down))
    grad[1:-1] = -2 * s * (up - down)
    # Gamma(k, r) log densities written over log-parameters: (k - 1) * theta - r * exp(theta).
    for i, (k, r) in (
        (0, (priors.signal_shape, priors.signal_rate)),
        (-1, (priors.noise_shape, priors.noise_rate)),
    ):
        v = math.exp(theta[i])
        lp += (k - 1) * theta[i] - r * v
        grad[i] = (k - 1) - r * v
    return lp, grad


class _MAPRegressor(GaussianProcessRegressor):
    """GaussianProcessRegressor whose hyperparameter objective is log marginal likelihood + log prior."""

    def __init__(
        self,
        kernel=None,
        *,
        alpha=1e-10,
        optimizer="fmin_l_bfgs_b",
        n_restarts_optimizer=0,
        normalize_y=False,
        copy_X_train=True,
        n_targets=None,
        random_state=None,
        priors: Hyperpriors | None = None,
        fast_lml: bool = True,
    ):
        super().__init__(
            kernel,
            alpha=alpha,
            optimizer=optimizer,
            n_restarts_optimizer=n_restarts_optimizer,
            normalize_y=normalize_y,
            copy_X_train=copy_X_train,
            n_targets=n_targets,
            random_state=random_state,
        )
        self.priors = priors
        self.fast_lml = fast_lml

    def log_marginal_likelihood(self, theta=None, eval_gradient=False, clone_kernel=True):
        if theta is None:
            return super().log_marginal_likelihood(
                theta, eval_gradient=eval_gradient, clone_kernel=clone_kernel
            )
        if self.fast_lml:
            if getattr(self, "_work_of", None) is not self.X_train_:
                # Once per training set: fit calls this ~50 times.
                self._work = _LmlWork(self.X_train_)
                self._work_of = self.X_train_
            out = _fast_lml(
                np.asarray(theta, dtype=float), self._work, self.y_train_, self.alpha, eval_gradient
            )
        else:
            out = super().log_marginal_likelihood(
                theta, eval_gradient=eval_gradient, clone_kernel=clone_kernel
            )
        if self.priors is None:
            return out
        lp, dlp = _log_prior(np.asarray(theta), self.priors)
        if eval_gradient:
            return out[0] + lp, out[1] + dlp
        return out + lp


class _LmlWork:
    """What every likelihood evaluation of one training set shares: `S`, the (n*n x d) squared differences of
    the inputs, and the n x n buffers the evaluation fills in place. Reusing them matters as much as the
    arithmetic: each fresh n x n temporary (320 KB at n = 200) is new memory that the kernel maps in page by
    page, and on a VM that cost more than the products themselves (2.3 ms against 0.8 ms per evaluation)."""

    def __init__(self, X: np.ndarray):
        n, d = X.shape
        self.n = n
        self.S = ((X[:, None, :] - X[None, :, :]) ** 2).reshape(-1, d)
        self.r2, self.r, self.e, self.poly, self.K0, self.L = (np.empty((n, n)) for _ in range(6))
        self.outer = np.empty((n, n))


def _fast_lml(theta: np.ndarray, work: _LmlWork, y: np.ndarray, jitter: float, eval_gradient: bool):
    """sklearn's log marginal likelihood (and gradient) specialized to c * Matern52(ARD) + white noise.

    Same numbers as the generic path (tests compare them) at a fraction of the cost: the generic kernel
    builds an n x n x d gradient tensor per call, here each call is a few BLAS products and in-place
    elementwise passes over the buffers of `work`. This keeps a 200-trial suggestion near 50 ms.
    """
    n, S = work.n, work.S
    c, ls, noise = math.exp(theta[0]), np.exp(theta[1:-1]), math.exp(theta[-1])
    inv_ls2 = 1.0 / (ls * ls)
    r2 = np.dot(S, inv_ls2, out=work.r2.reshape(-1)).reshape(n, n)
    r = np.sqrt(r2, out=work.r)
    e = np.multiply(r, -_SQRT5, out=work.e)
    np.exp(e, out=e)
    # K0 = c (1 + sqrt5 r + 5/3 r^2) e; `poly` keeps (1 + sqrt5 r) for the gradient.
    poly = np.multiply(r, _SQRT5, out=work.poly)
    poly += 1.0
    K0 = np.multiply(r2, 5.0 / 3.0, out=work.K0)
    K0 += poly
    K0 *= e
    K0 *= c
    np.copyto(work.L, K0)
    work.L.flat[:: n + 1] += noise + jitter
    # K is symmetric, so the transpose of the C-ordered buffer is K in the Fortran order LAPACK works in:
    # factorized in place, no copy.
    L, info = dpotrf(work.L.T, lower=1, clean=1, overwrite_a=1)
    if info != 0:
        return (-np.inf, np.zeros_like(theta)) if eval_gradient else -np.inf
    y = np.asarray(y, dtype=float).reshape(-1)
    alpha = cho_solve((L, True), y, check_finite=False)
    lml = -0.5 * float(y @ alpha) - float(np.sum(np.log(np.diag(L)))) - 0.5 * n * math.log(2 * math.pi)
    if not eval_gradient:
        return lml
    # K^-1 from the Cholesky factor (LAPACK potri: a third of the flops of solving against the identity). It
    # fills the lower triangle only; the upper stays zero (L was cleaned). With W = alpha alpha^T - K^-1 the
    # gradient is 0.5 * sum(W * dK), and dK is symmetric, so sum(W * dK) = sum(Wl * dK) + diag(K^-1) . diag(dK)
    # with Wl = alpha alpha^T - 2 tril(K^-1): the off-diagonal half counted twice, the diagonal once more.
    Kinv, info = dpotri(L, lower=1, overwrite_c=1)
    if info != 0:
        return -np.inf, np.zeros_like(theta)
    Kinv_trace = float(np.trace(Kinv))
    Wl = np.multiply(Kinv, -2.0, out=Kinv)
    Wl += np.multiply.outer(alpha, alpha, out=work.outer)
    # Wl is Fortran-ordered; its transpose is a C-ordered view matching K0 and S's row order (i, j). Summed
    # against symmetric matrices it gives the same totals, without a copy.
    WlT = Wl.T
    grad = np.empty_like(theta)
    # dK/d log c = K0, whose diagonal is c.
    grad[0] = 0.5 * (float(np.vdot(WlT, K0)) + c * Kinv_trace)
    # dK / d log(l_d) = c * 5/3 * (1 + sqrt5 r) exp(-sqrt5 r) * (x_d - x'_d)^2 / l_d^2: zero on the diagonal
    # (there x = x'), so the diagonal correction vanishes.
    M = np.multiply(poly, e, out=poly)
    M *= WlT
    grad[1:-1] = (0.5 * c * 5.0 / 3.0) * (M.reshape(-1) @ S) * inv_ls2
    grad[-1] = 0.5 * (float(alpha @ alpha) - Kinv_trace) * noise
    return lml, grad


def _matern52(r: np.ndarray) -> np.ndarray:
    return (1.0 + _SQRT5 * r + 5.0 / 3.0 * r * r) * np.exp(-_SQRT5 * r)


@dataclass(frozen=True)
class Posterior:
    """A fitted GP in standardized units: predictions, their input gradients, and conditioning on fantasies."""

    X: np.ndarray
    y: np.ndarray  # standardized targets the GP was fitted to
    length_scales: np.ndarray
    signal_var: float
    noise_var: float
    L: np.ndarray  # Cholesky factor of K(X, X) + noise
    alpha: np.ndarray  # (K + noise)^-1 y

    def cross(self, Xq: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """k(Xq, X) and the scaled distances behind it."""
        A, B = Xq / self.length_scales, self.X / self.length_scales
        # |a - b|^2 by expansion: a matrix product instead of an m x n x d difference tensor.
        r2 = np.sum(A * A, axis=1)[:, None] + np.sum(B * B, axis=1)[None, :] - 2.0 * (A @ B.T)
        r = np.sqrt(np.maximum(r2, 0.0))
        return self.signal_var * _matern52(r), r

    def predict(self, Xq: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Posterior mean and variance of the latent function (noise excluded) at rows of Xq."""
        k, _ = self.cross(Xq)
        mu = k @ self.alpha
        v = solve_triangular(self.L, k.T, lower=True, check_finite=False)
        var = np.maximum(self.signal_var - np.sum(v * v, axis=0), 1e-12)
        return mu, var

    def predict_with_grad(self, Xq: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Mean, variance and their gradients with respect to each row of Xq (shapes m, m, m x d, m x d)."""
        k, r = self.cross(Xq)
        mu = k @ self.alpha
        w = cho_solve((self.L, True), k.T, check_finite=False).T  # (K + noise)^-1 k, one row per query
        var = np.maximum(self.signal_var - np.sum(k * w, axis=1), 1e-12)
        # d k(xq, x) / d xq = g * (xq - x) / l^2 with g = -5/3 c (1 + sqrt5 r) exp(-sqrt5 r); summed against
        # weights u over training points that is (xq * sum(g u) - (g u) @ X) / l^2, no 3-d tensor needed.
        g = self.signal_var * (-5.0 / 3.0) * (1.0 + _SQRT5 * r) * np.exp(-_SQRT5 * r)
        inv_ls2 = 1.0 / self.length_scales**2

        def through(u: np.ndarray) -> np.ndarray:
            gu = g * u
            return (Xq * gu.sum(axis=1)[:, None] - gu @ self.X) * inv_ls2

        return mu, var, through(self.alpha[None, :]), -2.0 * through(w)

    def condition_on(self, Xf: np.ndarray, yf: np.ndarray) -> Posterior:
        """The posterior after also observing yf at Xf, hyperparameters unchanged (for batch fantasies)."""
        X = np.vstack([self.X, Xf])
        y = np.concatenate([self.y, yf])
        return _posterior(X, y, self.length_scales, self.signal_var, self.noise_var)


def _posterior(X: np.ndarray, y: np.ndarray, ls: np.ndarray, c: float, noise: float) -> Posterior:
    diff = (X[:, None, :] - X[None, :, :]) / ls
    K = c * _matern52(np.sqrt(np.sum(diff * diff, axis=-1)))
    K[np.diag_indices_from(K)] += noise + 1e-10
    L = cholesky(K, lower=True, check_finite=False)
    alpha = cho_solve((L, True), y, check_finite=False)
    return Posterior(X, y, ls, c, noise, L, alpha)


def fit_gp(X: np.ndarray, y: np.ndarray, priors: Hyperpriors | None = None, maxiter: int = 200) -> Posterior:
    """Fits the GP's hyperparameters (MAP) to standardized targets y at features X in [0, 1]^d.

    Deterministic: L-BFGS-B from two fixed starts (length scales 0.5 and 2), no random restarts. Past
    FIT_SUBSET points the hyperparameters are fitted on a deterministic subset (the best third plus an even
    spread of the rest) and the posterior then conditions on every point: hyperparameters are well
    determined by a few hundred points, while the likelihood's cost grows as n^3 and its memory as n^2 d.
    """
    if X.shape[0] > FIT_SUBSET:
        order = np.argsort(y, kind="stable")
        keep = order[: FIT_SUBSET // 3]
        rest = order[FIT_SUBSET // 3 :]
        keep = np.concatenate([keep, rest[np.linspace(0, len(rest) - 1, FIT_SUBSET - len(keep)).astype(int)]])
        sub = fit_gp(X[keep], y[keep], priors, maxiter)
        return _posterior(X, np.asarray(y, dtype=float), sub.length_scales, sub.signal_var, sub.noise_var)
    priors = priors or Hyperpriors()
    d = X.shape[1]
    kernel = ConstantKernel(1.0, (1e-3, 1e3)) * Matern(
        length_scale=np.full(d, 0.5), length_scale_bounds=(1e-2, 1e2), nu=2.5
    ) + WhiteKernel(1e-3, (NOISE_FLOOR, 1.0))

    def optimizer(obj_func, initial_theta, bounds):
        best = None
        # A second start guards against a poor local optimum, which matters with few points; with many
        # the likelihood is well determined and the second fit would double the cost of a suggestion.
        for ls in _LS_STARTS if X.shape[0] <= 64 else _LS_STARTS[:1]:
            theta0 = initial_theta.copy()
            theta0[1:-1] = math.log(ls)
            res = minimize(
                obj_func, theta0, jac=True, method="L-BFGS-B", bounds=bounds, options={"maxiter": maxiter}
            )
            if best is None or res.fun < best.fun:
                best = res
        return best.x, best.fun

    with warnings.catch_warnings():
        # Deterministic objectives drive the noise to its floor on purpose; sklearn warns about that.
        warnings.simplefilter("ignore", ConvergenceWarning)
        gpr = _MAPRegressor(kernel, alpha=1e-10, optimizer=optimizer, priors=priors).fit(X, y)
    k = gpr.kernel_
    c = float(k.k1.k1.constant_value)
    ls = np.atleast_1d(np.asarray(k.k1.k2.length_scale, dtype=float))
    noise = float(k.k2.noise_level)
    return Posterior(X, np.asarray(y, dtype=float), ls, c, noise, gpr.L_, gpr.alpha_)
