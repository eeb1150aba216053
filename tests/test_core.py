"""The numerical core against first principles: finite differences, scipy, hand cases.

Theorem 1 and the Sec. VI-C counterexample are tested in tests/test_theory.py."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from scipy.optimize import minimize

from ray_robust.core import wrm
from ray_robust.core.aggregators import AggregationError, mean, n_to_screen, nbs
from ray_robust.core.attacks import aggressive, intelligent
from ray_robust.core.models import LogisticRegression
from ray_robust.core.shift import error_rate, worst_case_margins, worst_case_shift

MODEL = LogisticRegression()


def _problem(rng, k=3, n=7, d=5, scale=1.0):
    X = rng.normal(size=(k, n, d))
    y = rng.integers(0, 2, size=(k, n)).astype(float)
    theta = rng.normal(scale=scale, size=d + 1)
    return theta, X, y


def test_loss_is_stable_for_huge_margins():
    theta = np.array([1e4, 0.0])
    X = np.array([[[1e3], [-1e3]]])
    y = np.array([[0.0, 1.0]])
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        loss = MODEL.loss(theta, X, y)
        g = MODEL.grad_x(theta, X, y)
    assert np.allclose(loss, 1e7)
    assert np.isfinite(g).all()


def test_gradients_match_finite_differences():
    rng = np.random.default_rng(0)
    theta, X, y = _problem(rng)
    weights = np.full(y.shape, 1.0 / y.shape[1])
    h = 1e-6
    # ∇θ of the per-shard weighted mean loss
    g = MODEL.mean_grad_theta(theta, X, y, weights)
    for j in range(theta.size):
        e = np.zeros_like(theta)
        e[j] = h
        diff = MODEL.loss(theta + e, X, y) - MODEL.loss(theta - e, X, y)
        fd = (diff * weights).sum(-1) / (2 * h)
        np.testing.assert_allclose(g[:, j], fd, rtol=1e-6, atol=1e-8)
    # ∇x per sample
    gx = MODEL.grad_x(theta, X, y)
    for j in range(X.shape[-1]):
        E = np.zeros_like(X)
        E[..., j] = h
        fd = (MODEL.loss(theta, X + E, y) - MODEL.loss(theta, X - E, y)) / (2 * h)
        np.testing.assert_allclose(gx[..., j], fd, rtol=1e-6, atol=1e-8)


def test_fast_path_equals_reference_wrm():
    rng = np.random.default_rng(1)
    theta, X, y = _problem(rng)
    weights = np.full(y.shape, 1.0 / y.shape[1])
    kw = dict(wrm=True, lam=3.0, eta_z=0.05, t_z=10)
    fast = wrm.local_gradients(MODEL, theta, X, y, weights, fast=True, **kw)
    ref = wrm.local_gradients(MODEL, theta, X, y, weights, fast=False, **kw)
    np.testing.assert_allclose(fast, ref, rtol=1e-12, atol=1e-13)
    # z_T on the line x + c·w is exactly the reference iterate
    c = wrm.wrm_line_coefficients(MODEL, theta, MODEL.margins(theta, X), y, 3.0, 0.05, 10)
    Z = wrm.wrm_ascent(MODEL, theta, X, y, 3.0, 0.05, 10)
    np.testing.assert_allclose(X + c[..., None] * theta[:-1], Z, atol=1e-13)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), lam=st.floats(0.5, 10.0))
def test_wrm_converges_to_the_scipy_maximizer(seed, lam):
    rng = np.random.default_rng(seed)
    theta, X, y = _problem(rng, k=1, n=3, d=4)
    l_zz = MODEL.lipschitz_xx(theta)
    assume(2 * lam - l_zz > 0.5)  # strongly concave enough for a certificate
    eta_z = wrm.optimal_step(lam, l_zz)
    Z = wrm.wrm_ascent(MODEL, theta, X, y, lam, eta_z, 400)
    for i in range(X.shape[1]):
        x, yi = X[0, i], y[0, i]

        def neg_g(z, x=x, yi=yi):
            return -(MODEL.loss(theta, z[None], np.array([yi]))[0] - lam * np.sum((z - x) ** 2))

        def neg_grad(z, x=x, yi=yi):
            gx = MODEL.grad_x(theta, z[None], np.array([yi]))[0]
            return -(gx - 2 * lam * (z - x))

        res = minimize(neg_g, x, jac=neg_grad, method="BFGS", options={"gtol": 1e-12})
        np.testing.assert_allclose(Z[0, i], res.x, atol=1e-6)
    residual = wrm.ascent_residual(MODEL, theta, Z, X, y, lam)
    assert residual.max() < 1e-8


def test_sec_vi_d_helpers():
    lam, l_zz = 3.0, 1.0
    lam_g, l_g = wrm.concavity_constants(lam, l_zz)
    assert (lam_g, l_g) == (5.0, 7.0)
    rho = wrm.contraction(lam, l_zz)
    assert rho == pytest.approx((l_g - lam_g) / (l_g + lam_g))
    assert wrm.optimal_step(lam, l_zz) == pytest.approx(1 / (2 * lam))
    t = wrm.steps_for_epsilon(1.0, 1e-6, rho)
    assert rho**t <= 1e-6 < rho ** (t - 1)
    with pytest.raises(ValueError, match="contraction"):
        wrm.steps_for_epsilon(1.0, 1e-3, 1.2)


# ---- aggregators --------------------------------------------------------------------------


def test_nbs_drops_exactly_the_largest_norms():
    g = np.array([[1.0, 0], [0, 3.0], [2.0, 0], [0, -5.0], [0.5, 0]])
    out = nbs(g, beta=0.4)  # ⌊0.4·5⌉ = 2 dropped: the norms 5 and 3
    np.testing.assert_array_equal(out.kept, [True, False, True, False, True])
    np.testing.assert_allclose(out.vector, [3.5 / 3, 0])
    assert out.n_screened == 2


@pytest.mark.parametrize(("beta", "m", "k"), [(0.15, 20, 3), (0.025, 20, 1), (0.0, 9, 0),
                                              (1 / 3, 9, 3), (0.45, 20, 9), (0.2, 4, 1)])
def test_screen_count_rounding(beta, m, k):
    assert n_to_screen(beta, m) == k


def test_nonfinite_rows_never_leak():
    g = np.array([[1.0, 1.0], [np.nan, 0.0], [np.inf, 1.0], [2.0, 2.0], [1e308, 1e308]])
    for out in (mean(g), nbs(g, 0.2), nbs(g, 0.0)):
        assert np.isfinite(out.vector).all()
    # NBS counts non-finite rows as infinitely large: with β·m = 1 it still never uses them
    assert not nbs(g, 0.2).kept[[1, 2]].any()
    with pytest.raises(AggregationError):
        mean(np.full((3, 2), np.nan))


def test_paper_attacks():
    rng = np.random.default_rng(4)
    honest = rng.normal(size=(17, 6))
    g = honest.mean(axis=0)
    np.testing.assert_allclose(aggressive(honest, 3, rng, 10.0), np.tile(-10 * g, (3, 1)))
    intel = intelligent(honest, 3, np.random.default_rng(5), 0.8)
    np.testing.assert_allclose(np.linalg.norm(intel, axis=1), 0.8 * np.linalg.norm(g))
    again = intelligent(honest, 3, np.random.default_rng(5), 0.8)
    np.testing.assert_array_equal(intel, again)  # its own seeded stream
    assert not np.allclose(intel[0], intel[1])  # one direction per byzantine worker


# ---- worst-case test shift ----------------------------------------------------------------


@pytest.mark.parametrize("norm", ["l1", "l2", "linf"])
def test_closed_form_shift_matches_brute_force(norm):
    rng = np.random.default_rng(6)
    d, eps = 4, 0.3
    theta = rng.normal(size=d + 1)
    X = rng.normal(size=(5, d))
    y = rng.integers(0, 2, size=5).astype(float)
    Z = worst_case_shift(MODEL, theta, X, y, norm, eps)
    closed = MODEL.loss(theta, Z, y)
    p = {"l1": 1, "l2": 2, "linf": np.inf}[norm]
    np.testing.assert_allclose(np.linalg.norm(Z - X, ord=p, axis=1), eps)
    np.testing.assert_allclose(MODEL.margins(theta, Z), worst_case_margins(MODEL, theta, X, y,
                                                                           norm, eps))
    for i in range(5):
        if norm == "l1":  # a convex loss is maximized at a vertex ±ε·e_j of the L1 ball
            cands = [X[i] + s * eps * e for e in np.eye(d) for s in (-1, 1)]
        elif norm == "linf":  # ... or at a vertex ε·sign vector of the L∞ ball
            cands = [X[i] + eps * np.array(s) for s in itertools.product((-1, 1), repeat=d)]
        else:  # a constrained optimizer (SLSQP) from several starts on the L2 sphere
            cands = []
            for _ in range(5):
                u = rng.normal(size=d)
                res = minimize(
                    lambda z, i=i: -MODEL.loss(theta, z[None], y[i : i + 1])[0],
                    X[i] + eps * u / np.linalg.norm(u), method="SLSQP",
                    constraints=[{"type": "ineq",
                                  "fun": lambda z, i=i: eps**2 - np.sum((z - X[i]) ** 2)}],
                    options={"ftol": 1e-14, "maxiter": 500},
                )
                # SLSQP may end just outside the ball (by its tolerance, ~1e-9), where the loss
                # can exceed the true maximum: score its point pulled back onto the ball
                step = res.x - X[i]
                cands.append(X[i] + step * min(1.0, eps / np.linalg.norm(step)))
        best = MODEL.loss(theta, np.asarray(cands), np.full(len(cands), y[i])).max()
        # every candidate is feasible: the true maximum is at least each one (to rounding)
        assert closed[i] >= best - 1e-12
        assert closed[i] <= best + 1e-7


def test_error_rate_under_shift_is_monotone():
    rng = np.random.default_rng(7)
    theta = rng.normal(size=6)
    X = rng.normal(size=(400, 5))
    y = (X @ theta[:-1] + rng.normal(size=400) > 0).astype(float)
    errs = [error_rate(MODEL, theta, X, y, "l2", e) for e in (0, 0.1, 0.3, 1.0)]
    assert errs == sorted(errs) and errs[-1] > errs[0]
    assert error_rate(MODEL, theta, X, y) == errs[0]
