"""The surrogate and the acquisition: the fast likelihood equals scikit-learn's, gradients match finite
differences, log-EI is stable far into the tail, and Pareto fronts are right on a hand-made set."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import norm
from sklearn.gaussian_process.kernels import ConstantKernel, Matern, WhiteKernel

from services.optimizer.acquisition import log_ei, log_ei_with_grad, log_h
from services.optimizer.gp import FIT_SUBSET, Hyperpriors, _MAPRegressor, fit_gp
from services.optimizer.pareto import hypervolume_2d, pareto_front


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    X = rng.random((25, 3))
    y = np.sin(X @ np.array([3.0, 1.0, 2.0]))
    return X, (y - y.mean()) / y.std()


def test_fast_likelihood_equals_sklearn(data):
    X, y = data
    kernel = ConstantKernel(1.0) * Matern(length_scale=np.full(3, 0.5), nu=2.5) + WhiteKernel(1e-3)
    theta = np.log([1.3, 0.3, 0.7, 2.0, 1e-3])
    out = []
    for fast in (True, False):
        gpr = _MAPRegressor(kernel, optimizer=None, priors=Hyperpriors(), fast_lml=fast).fit(X, y)
        out.append(gpr.log_marginal_likelihood(theta, eval_gradient=True))
    assert out[0][0] == pytest.approx(out[1][0], rel=1e-10)
    np.testing.assert_allclose(out[0][1], out[1][1], rtol=1e-8, atol=1e-10)


def test_posterior_interpolates_and_its_gradients_match(data):
    X, y = data
    post = fit_gp(X, y)
    mu, var = post.predict(X)
    np.testing.assert_allclose(mu, y, atol=0.05)
    assert np.all(var < 0.05)
    Xq = np.random.default_rng(1).random((5, 3))
    best = float(y.min())
    _, _, dmu, dvar = post.predict_with_grad(Xq)
    _, dlei = log_ei_with_grad(post, Xq, best)
    eps = 1e-6
    for j in range(3):
        e = np.zeros(3)
        e[j] = eps
        (mp, vp), (mm, vm) = post.predict(Xq + e), post.predict(Xq - e)
        np.testing.assert_allclose((mp - mm) / (2 * eps), dmu[:, j], rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose((vp - vm) / (2 * eps), dvar[:, j], rtol=1e-4, atol=1e-6)
        fd = (log_ei(post, Xq + e, best) - log_ei(post, Xq - e, best)) / (2 * eps)
        np.testing.assert_allclose(fd, dlei[:, j], rtol=1e-4, atol=1e-4)


def test_log_h_is_exact_in_the_middle_and_finite_in_the_tail():
    z = np.linspace(-5, 5, 41)
    naive = np.log(norm.pdf(z) + z * norm.cdf(z))
    np.testing.assert_allclose(log_h(z), naive, rtol=1e-9)
    tail = log_h(np.array([-40.0, -1e3, -1e9]))
    assert np.all(np.isfinite(tail)) and np.all(np.diff(tail) < 0)
    assert tail[0] == pytest.approx(-0.5 * 40**2 - 0.5 * math.log(2 * math.pi) - 2 * math.log(40), rel=1e-3)


def test_pareto_front_on_a_hand_made_set():
    Y = np.array(
        [
            [1.0, 5.0],  # front
            [2.0, 3.0],  # front
            [2.0, 4.0],  # dominated by [2, 3]
            [3.0, 3.0],  # dominated by [2, 3]
            [4.0, 1.0],  # front
            [4.0, 1.0],  # a duplicate of a front point stays on the front
            [5.0, 5.0],  # dominated by everything
        ]
    )
    assert pareto_front(Y) == [0, 1, 4, 5]
    assert pareto_front(np.zeros((0, 2))) == []
    assert pareto_front(np.array([[1.0, 2.0, 3.0], [1.0, 2.0, 2.0]])) == [1]
    # Area under the staircase (1,5) (2,3) (4,1) up to the reference (6, 6).
    assert hypervolume_2d(Y, np.array([6.0, 6.0])) == pytest.approx(5 * 1 + 4 * 2 + 2 * 2)


def test_many_points_fit_on_a_subset_but_condition_on_all():
    rng = np.random.default_rng(2)
    X = rng.random((FIT_SUBSET + 40, 2))
    y = np.sin(3 * X[:, 0]) + np.cos(2 * X[:, 1])
    y = (y - y.mean()) / y.std()
    post = fit_gp(X, y)
    assert post.X.shape[0] == X.shape[0]
    mu, _ = post.predict(X[-40:])  # points the hyperparameter fit may not have seen
    np.testing.assert_allclose(mu, y[-40:], atol=0.02)
