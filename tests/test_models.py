"""Softmax, least squares and the tanh MLP: gradients by finite differences, the L_zz bounds,
the worst-case test shift (closed forms against brute force, PGD against the closed form), and
training through the same engine as Spambase's logistic model (issue 6)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from model_cases import random_case
from scipy.optimize import brentq

from ray_robust.api import train
from ray_robust.config import Config
from ray_robust.core import wrm
from ray_robust.core.models import (
    MLP,
    LeastSquares,
    LogisticRegression,
    SoftmaxRegression,
    get_model,
)
from ray_robust.core.pgd import pgd_shift, project_ball
from ray_robust.core.shift import error_rate
from ray_robust.data import make_synthetic, prepare

MODELS = {
    "logistic": LogisticRegression(),
    "softmax": SoftmaxRegression(n_classes=3),
    "least_squares": LeastSquares(),
    "mlp": MLP(hidden=5),
}


def _case(name, rng, k=3, n=6, d=4):
    return random_case(MODELS[name], rng, k=k, n=n, d=d, uneven=True)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_gradients_match_finite_differences(name):
    model, theta, X, y, weights = _case(name, np.random.default_rng(0))
    h = 1e-6
    g = model.mean_grad_theta(theta, X, y, weights)
    assert g.shape == (X.shape[0], theta.size)
    fd = np.empty_like(g)
    for j in range(theta.size):
        e = np.zeros_like(theta)
        e[j] = h
        fd[:, j] = ((model.loss(theta + e, X, y) - model.loss(theta - e, X, y)) * weights).sum(
            -1) / (2 * h)
    np.testing.assert_allclose(g, fd, rtol=1e-5, atol=1e-7)
    gx = model.grad_x(theta, X, y)
    assert gx.shape == X.shape
    for j in range(X.shape[-1]):
        E = np.zeros_like(X)
        E[..., j] = h
        fd = (model.loss(theta, X + E, y) - model.loss(theta, X - E, y)) / (2 * h)
        np.testing.assert_allclose(gx[..., j], fd, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_lipschitz_xx_bounds_the_input_hessian(name):
    """‖∇²_x f(θ; x)‖₂ ≤ lipschitz_xx(θ) at random points (Hessian by differences of grad_x)."""
    model, theta, X, y, _ = _case(name, np.random.default_rng(1), k=1, n=40, d=4)
    X, y = X[0], y[0]
    h, d = 1e-5, X.shape[1]
    H = np.empty((X.shape[0], d, d))
    for j in range(d):
        E = np.zeros_like(X)
        E[:, j] = h
        H[:, :, j] = (model.grad_x(theta, X + E, y) - model.grad_x(theta, X - E, y)) / (2 * h)
    worst = np.linalg.norm(H, ord=2, axis=(1, 2)).max()
    bound = model.lipschitz_xx(theta)
    assert worst <= bound * (1 + 1e-6)
    if name == "least_squares":  # exact: ∇²_x f = wwᵀ
        assert worst == pytest.approx(bound, rel=1e-6)


def test_softmax_with_two_classes_is_logistic():
    rng = np.random.default_rng(2)
    X = rng.normal(size=(2, 5, 3))
    y = rng.integers(0, 2, size=(2, 5)).astype(float)
    w, b = rng.normal(size=3), 0.3
    sm = SoftmaxRegression(2)
    theta_sm = np.concatenate([np.stack([np.zeros(3), w], axis=1).ravel(), [0.0, b]])
    theta_lr = np.concatenate([w, [b]])
    lr = LogisticRegression()
    np.testing.assert_allclose(sm.loss(theta_sm, X, y), lr.loss(theta_lr, X, y), rtol=1e-12)
    np.testing.assert_array_equal(sm.predict(theta_sm, X), lr.predict(theta_lr, X))
    for norm in ("l1", "l2", "linf"):
        assert sm.error_under_shift(theta_sm, X, y, norm, 0.4) == error_rate(
            lr, theta_lr, X, y, norm, 0.4)


def test_softmax_shift_closed_form_matches_brute_force():
    """Misclassified under the L2 shift iff some point of the ε-circle is: check on a 2-D case
    by sampling the circle densely."""
    rng = np.random.default_rng(3)
    model = SoftmaxRegression(3)
    X = rng.normal(size=(300, 2))
    y = rng.integers(0, 3, size=300).astype(float)
    theta = rng.normal(size=model.n_params(2))
    eps = 0.3
    angles = np.linspace(0, 2 * np.pi, 2000, endpoint=False)
    circle = eps * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    Z = X[:, None, :] + circle[None]  # (300, 2000, 2)
    brute = (model.predict(theta, Z) != y[:, None]).any(axis=1).mean()
    assert model.error_under_shift(theta, X, y, "l2", eps) == pytest.approx(brute, abs=1 / 300)


def test_least_squares_shift_is_the_worst_mse():
    rng = np.random.default_rng(4)
    model = LeastSquares()
    X, y = rng.normal(size=(50, 3)), rng.normal(size=50)
    theta = rng.normal(size=4)
    assert model.error_under_shift(theta, X, y) == pytest.approx(
        np.mean((X @ theta[:3] + theta[3] - y) ** 2))
    for norm in ("l1", "l2", "linf"):
        closed = model.error_under_shift(theta, X, y, norm, 0.2)
        Z = pgd_shift(model, theta, X, y, norm, 0.2, steps=50)
        pgd = np.mean((Z @ theta[:3] + theta[3] - y) ** 2)
        assert pgd <= closed * (1 + 1e-9) and pgd == pytest.approx(closed, rel=1e-3)


@pytest.mark.parametrize("norm", ["l1", "l2", "linf"])
def test_pgd_reaches_the_logistic_closed_form(norm):
    """On a linear model PGD finds the closed-form worst case (same errors, per sample)."""
    rng = np.random.default_rng(5)
    model = LogisticRegression()
    X = rng.normal(size=(400, 6))
    y = (rng.random(400) < 0.5).astype(float)
    theta = rng.normal(size=7)
    Z = pgd_shift(model, theta, X, y, norm, 0.3, steps=30)
    pgd_err = np.mean(model.predict(theta, Z) != (y == 1))
    assert pgd_err == pytest.approx(error_rate(model, theta, X, y, norm, 0.3), abs=1e-12)


def _nearest_point_of_ball(v: np.ndarray, norm: str, eps: float) -> np.ndarray:
    """The Euclidean projection of ``v`` onto {‖u‖_p ≤ ε} from its KKT conditions (not the sort
    of project_ball): a clip onto the box for L∞, a rescale for L2, and for L1 a
    soft-threshold at the τ > 0 with Σ max(|v_i| − τ, 0) = ε (a 1-D root, brentq)."""
    if norm == "linf":
        return np.clip(v, -eps, eps)
    if norm == "l2":
        return v * min(1.0, eps / np.linalg.norm(v))
    a = np.abs(v)
    if a.sum() <= eps:
        return v
    tau = brentq(lambda t: np.maximum(a - t, 0.0).sum() - eps, 0.0, a.max(), xtol=1e-15)
    return np.sign(v) * np.maximum(a - tau, 0.0)


@pytest.mark.parametrize("norm", ["l1", "l2", "linf"])
def test_project_ball(norm):
    rng = np.random.default_rng(6)
    V = rng.normal(size=(20, 5)) * 2
    eps = 1.0
    P = project_ball(V, norm, eps)
    ord_, dual = {"l1": (1, np.inf), "l2": (2, 2), "linf": (np.inf, 1)}[norm]
    norms = np.linalg.norm(P, ord=ord_, axis=1)
    assert np.all(norms <= eps + 1e-12)
    outside = np.linalg.norm(V, ord=ord_, axis=1) > eps
    assert outside.sum() >= 15  # the case tests projections, not the identity
    np.testing.assert_allclose(norms[outside], eps, rtol=1e-12)  # onto the sphere
    expected = np.array([_nearest_point_of_ball(v, norm, eps) for v in V])
    np.testing.assert_allclose(P, expected, rtol=1e-12, atol=1e-12)
    # optimality, exact: p is the nearest point of the convex ball iff (v − p)ᵀ(u − p) ≤ 0 for
    # every u in it, i.e. max_u (v − p)ᵀu = ε‖v − p‖_dual ≤ (v − p)ᵀp
    R = V - P
    assert np.all(eps * np.linalg.norm(R, ord=dual, axis=1) <= np.sum(R * P, axis=1) + 1e-12)
    # random points of the ball (inside and on the sphere) are never nearer to v than p
    W = rng.normal(size=(20, 500, 5))
    radius = rng.uniform(0.5, 1.0, size=(20, 500, 1))
    radius[:, :100] = 1.0  # these on the sphere
    U = W * (eps * radius / np.linalg.norm(W, ord=ord_, axis=-1, keepdims=True))
    nearest = np.linalg.norm(R, axis=1)
    assert np.all(np.linalg.norm(U - V[:, None], axis=-1) >= nearest[:, None] - 1e-12)
    inside = V / 100
    np.testing.assert_array_equal(project_ball(inside, norm, eps), inside)


def test_mlp_shift_uses_pgd_and_is_at_least_clean():
    rng = np.random.default_rng(7)
    model = MLP(hidden=8)
    X = rng.normal(size=(200, 3))
    y = (rng.random(200) < 0.5).astype(float)
    theta = model.init(3, rng)
    clean = model.error_under_shift(theta, X, y)
    assert clean == np.mean(model.predict(theta, X) != (y == 1))
    e1, e2 = (model.error_under_shift(theta, X, y, "l2", e) for e in (0.2, 0.6))
    assert clean <= e1 <= e2


def test_get_model_options_and_errors():
    assert get_model("mlp", hidden=7, n_classes=4).hidden == 7
    assert get_model("softmax", hidden=7, n_classes=4).n_classes == 4
    assert isinstance(get_model("logistic", hidden=3), LogisticRegression)
    with pytest.raises(ValueError, match="'model' parameter"):
        get_model("svm")
    with pytest.raises(ValueError, match="'hidden' parameter"):
        MLP(hidden=0)
    with pytest.raises(ValueError, match="'n_classes' parameter"):
        SoftmaxRegression(n_classes=1)


def test_label_flips_per_model():
    y = np.array([0.0, 1.0, 2.0])
    np.testing.assert_array_equal(SoftmaxRegression(3).flip_labels(y), [2.0, 1.0, 0.0])
    np.testing.assert_array_equal(LeastSquares().flip_labels(y), -y)
    np.testing.assert_array_equal(MLP().flip_labels(y[:2]), [1.0, 0.0])


# ---- training through the engine -------------------------------------------------------------


def test_mlp_uses_the_generic_wrm_ascent():
    """linear = False: honest workers run the explicit ascent wrm_ascent (no line fast path)."""
    model, theta, X, y, weights = _case("mlp", np.random.default_rng(8))
    assert model.linear is False
    g = wrm.local_gradients(model, theta, X, y, weights, wrm=True, lam=3.0, eta_z=0.05, t_z=5)
    Z = wrm.wrm_ascent(model, theta, X, y, 3.0, 0.05, 5)
    np.testing.assert_array_equal(g, model.mean_grad_theta(theta, Z, y, weights))


def _synthetic_problem(task, n=1200, d=5, workers=6, **kw):
    X, y = make_synthetic(n, d, task=task, seed=0, **kw)
    return prepare(X, y, n_workers=workers, standardize="none", seed=0)


def test_mlp_learns_a_nonconvex_task_a_linear_model_cannot():
    pb = _synthetic_problem("circles", noise=0.0)
    base = dict(aggregator="mean", wrm=False, n_workers=6, rounds=300, eta=1.0, eval_every=300)
    mlp = train(Config(model="mlp", hidden=12, **base), problem=pb).final
    lin = train(Config(model="logistic", **base), problem=pb).final
    assert mlp["test_error"] < 0.08 and lin["test_error"] > 0.3


def test_softmax_and_least_squares_train_under_attack():
    pb = _synthetic_problem("softmax", n_classes=3, noise=0.1)
    cfg = Config(model="softmax", n_classes=3, aggregator="median", wrm=True, alpha=0.15,
                 attack="alie", n_workers=6, rounds=150, eval_every=150, shift_norm="l2",
                 shift_eps=0.1)
    fin = train(cfg, problem=pb).final
    assert fin["test_error"] < 0.15 <= 2 / 3  # chance is 2/3
    assert fin["test_error_shifted"] >= fin["test_error"]
    with pytest.raises(ValueError, match="n_classes"):
        train(cfg.replace(n_classes=2), problem=pb)
    pb = _synthetic_problem("regression", noise=0.1)
    cfg = Config(model="least_squares", aggregator="trimmed_mean", wrm=True, lam=3.0, t_z=5,
                 alpha=0.15, attack="sign_flip", n_workers=6, rounds=100, eval_every=100,
                 eta=0.5, shift_norm="l2", shift_eps=0.3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fin = train(cfg, problem=pb).final
    # test_error is the MSE for least squares: the noise floor is 0.01; the shift adds
    # (0.3‖w‖)² ≈ 0.09 for the unit-norm w*
    assert fin["test_error"] < 0.03
    assert 0.05 < fin["test_error_shifted"] < 0.2


def test_wrm_makes_the_mlp_robust_to_a_fragile_feature():
    """The expected case: feature 2 separates the classes perfectly but only by 0.1 (fragile),
    feature 1 is robust but noisy (x₁ = ±1 + N(0, 1)). ERM fits the fragile feature, so an L2
    shift of 0.3 flips every prediction; WRM's adversary erases it during training, so the
    MLP leans on feature 1 and its shifted error is close to the robust optimum
    Φ(−(1 − 0.3)) ≈ 0.24, at the price of a clean error ≈ Φ(−1) ≈ 0.16."""
    rng = np.random.default_rng(0)
    n = 1000
    y = (rng.random(n) < 0.5).astype(float)
    s = 2 * y - 1
    X = np.stack([s + rng.normal(size=n), 0.1 * s + 0.02 * rng.normal(size=n)], axis=1)
    pb = prepare(X, y, n_workers=6, standardize="none", seed=0)
    base = dict(model="mlp", hidden=8, aggregator="mean", n_workers=6, rounds=200, eta=1.0,
                shift_norm="l2", shift_eps=0.3, eval_every=200, lam=1.0, eta_z=None, t_z=10)
    erm = train(Config(wrm=False, **base), problem=pb).final
    dro = train(Config(wrm=True, **base), problem=pb).final
    assert erm["test_error"] < 0.02 and erm["test_error_shifted"] > 0.9
    assert dro["test_error_shifted"] < 0.35
    assert 0.08 < dro["test_error"] < 0.25
