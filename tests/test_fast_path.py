"""The exact WRM fast path for every linear model (issue 8, P5): logistic and least squares
(z = x + c·w) and softmax (z = x + Wc, c ∈ R^K) against the explicit ascent, step by step and
after full training runs (fixed T_z and certified ε); the certified path's iterates are the fixed
path's bit for bit; nothing depends on chunking, threads or how shards are grouped."""

from __future__ import annotations

import functools
import warnings

import numpy as np
import pytest
from model_cases import random_case

from ray_robust import algorithm
from ray_robust.api import train
from ray_robust.config import Config
from ray_robust.core import wrm
from ray_robust.core.models import MLP, LeastSquares, LogisticRegression, SoftmaxRegression
from ray_robust.data import make_synthetic, prepare

LINEAR = {
    "logistic": LogisticRegression(),
    "least_squares": LeastSquares(),
    "softmax": SoftmaxRegression(n_classes=3),
}
LAM, ETA_Z = 3.0, 0.05


def _case(name, rng, k=4, n=9, d=5, scale=0.4):
    return random_case(LINEAR[name], rng, k=k, n=n, d=d, theta_scale=scale)


def _z(model, theta, X, c):
    """z = x + c·w (binary) or x + Wc (softmax)."""
    W = model.split(theta)[0]
    return X + (c @ W.T if c.ndim == X.ndim else c[..., None] * W)


def _certificate(model, theta, Z, X, y):
    return wrm.ascent_residual(model, theta, Z, X, y, LAM) * wrm.certificate_scale(
        LAM, model.lipschitz_xx(theta))


@pytest.mark.parametrize("name", LINEAR)
def test_every_iterate_is_the_explicit_ascent_iterate(name):
    model, theta, X, y, weights = _case(name, np.random.default_rng(3))
    assert model.linear is True
    s_x = model.scores(theta, X)
    for t in range(8):
        c = wrm.wrm_line_coefficients(model, theta, s_x, y, LAM, ETA_Z, t)
        Z = wrm.wrm_ascent(model, theta, X, y, LAM, ETA_Z, t)
        np.testing.assert_allclose(_z(model, theta, X, c), Z, rtol=0, atol=1e-13)
        if t:
            assert np.abs(Z - X).max() > 1e-3  # the ascent moved: the comparison means something
    fast = wrm.local_gradients(model, theta, X, y, weights, wrm=True, lam=LAM, eta_z=ETA_Z, t_z=7)
    ref = wrm.local_gradients(model, theta, X, y, weights, wrm=True, lam=LAM, eta_z=ETA_Z, t_z=7,
                              fast=False)
    np.testing.assert_allclose(fast, ref, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("name", LINEAR)
def test_fast_certificate_is_the_explicit_residual_bound(name):
    """‖∇g(z)‖/λ_g computed on the subspace (|r|·‖w‖, √(rᵀWᵀWr)) equals the explicit one."""
    model, theta, X, y, weights = _case(name, np.random.default_rng(4))
    mask = weights > 0
    for t_max in (0, 1, 6):
        c, steps, cert = wrm.wrm_line_certified(model, theta, model.scores(theta, X), y, mask,
                                                LAM, ETA_Z, 0.0, t_max)
        assert (steps == t_max).all()
        ref = _certificate(model, theta, _z(model, theta, X, c), X, y)
        np.testing.assert_allclose(cert, ref, rtol=1e-9, atol=1e-14)
        assert cert.min() > 0


@pytest.mark.parametrize("name", LINEAR)
def test_certified_path_takes_the_fixed_path_steps_bit_for_bit(name):
    """Shards stop at different steps; each returned c is the fixed path's c at that step."""
    model, theta, X, y, weights = _case(name, np.random.default_rng(5), k=12, n=40, scale=0.6)
    easy = slice(0, None, 3)  # shards the model already fits: small residuals, fewer steps
    if name == "least_squares":
        y[easy] = model.margins(theta, X[easy]) + 1e-3 * y[easy]
    else:
        X[easy] *= 4.0
        y[easy] = model.predict(theta, X[easy])
    weights[::4, -5:] = 0.0  # padding never holds a shard back
    s_x = model.scores(theta, X)
    c, steps, cert = wrm.wrm_line_certified(model, theta, s_x, y, weights > 0, LAM, ETA_Z, 1e-4,
                                            60)
    assert len(np.unique(steps)) > 1 and steps.max() < 60
    for t in np.unique(steps):
        fixed = wrm.wrm_line_coefficients(model, theta, s_x, y, LAM, ETA_Z, int(t))
        assert np.array_equal(fixed[steps == t], c[steps == t])
    assert np.where(weights > 0, cert, 0.0).max(axis=-1).max() <= 1e-4
    # the generic certified ascent stops at the same steps with the same z
    Z, ref_steps, _ = wrm.wrm_ascent_certified(model, theta, X, y, weights > 0, LAM, ETA_Z, 1e-4,
                                               60)
    np.testing.assert_array_equal(steps, ref_steps)
    np.testing.assert_allclose(_z(model, theta, X, c), Z, rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", LINEAR)
def test_no_dependence_on_chunks_threads_or_grouping(name, monkeypatch):
    model, theta, X, y, weights = _case(name, np.random.default_rng(6), k=10, n=50)
    mask = weights > 0
    s_x = model.scores(theta, X)

    def both():
        return (wrm.wrm_line_coefficients(model, theta, s_x, y, LAM, ETA_Z, 10),
                *wrm.wrm_line_certified(model, theta, s_x, y, mask, LAM, ETA_Z, 1e-3, 40))

    monkeypatch.setenv("RAY_ROBUST_WRM_THREADS", "1")
    ref = both()
    for chunk, threads in [(64, "1"), (64, "3"), (150, "2"), (7, "2")]:
        monkeypatch.setattr(wrm, "LINE_CHUNK", chunk)  # 150: chunks of whole shards for softmax
        monkeypatch.setenv("RAY_ROBUST_WRM_THREADS", threads)
        for a, b in zip(both(), ref, strict=True):
            assert np.array_equal(a, b)
    sub = [7, 2, 3]
    part = wrm.wrm_line_certified(model, theta, s_x[sub], y[sub], mask[sub], LAM, ETA_Z, 1e-3, 40)
    for a, b in zip(part, ref[1:], strict=True):
        assert np.array_equal(a, b[sub])


def test_both_logistic_kernels_and_w_zero(monkeypatch):
    """The margin-move form (6 passes a step) and the plain form (any ‖w‖, also w = 0) give the
    same iterates, certificates and stopping steps."""
    model, theta, X, y, weights = _case("logistic", np.random.default_rng(7), k=6, n=30)
    mask = weights > 0
    assert wrm._line_kernel(model, theta, LAM, ETA_Z).__class__.__name__ == "_LogisticMarginLine"

    def run():
        s_x = model.scores(theta, X)
        return (*wrm._line_fixed(model, theta, s_x, y, LAM, ETA_Z, 9),
                *wrm._line_certified(model, theta, s_x, y, mask, LAM, ETA_Z, 1e-3, 40))

    margin = run()
    monkeypatch.setattr(wrm, "MARGIN_FORM_MIN_GRAM", np.inf)
    assert wrm._line_kernel(model, theta, LAM, ETA_Z).__class__.__name__ == "_LogisticLine"
    plain = run()
    for a, b in zip(margin, plain, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-15)
    np.testing.assert_array_equal(margin[3], plain[3])  # the same stopping steps
    theta[:-1] = 0.0  # w = 0: z = x whatever c is; the certificate is 0 at once
    monkeypatch.setattr(wrm, "MARGIN_FORM_MIN_GRAM", 1e-100)
    c = wrm.wrm_line_coefficients(model, theta, model.scores(theta, X), y, LAM, ETA_Z, 5)
    assert np.isfinite(c).all() and np.abs(c).max() > 0
    _, steps, cert = wrm.wrm_line_certified(model, theta, model.scores(theta, X), y, mask, LAM,
                                            ETA_Z, 1e-9, 40)
    assert (steps == 0).all() and (cert == 0).all()
    fast = wrm.local_gradients(model, theta, X, y, weights, wrm=True, lam=LAM, eta_z=ETA_Z, t_z=5)
    np.testing.assert_allclose(fast, model.mean_grad_theta(theta, X, y, weights), rtol=1e-14)


def test_streamed_margins_do_not_depend_on_grouping(monkeypatch):
    """Large shards' margins (einsum) equal X·w + b and are the same bits in any stack."""
    import ray_robust.core.models as models

    monkeypatch.setattr(models, "STREAM_MIN_SHARD", 64)
    model, theta, X, _, _ = _case("logistic", np.random.default_rng(8), k=5, n=40, d=6)
    s = model.margins(theta, X)
    np.testing.assert_allclose(s, X @ theta[:-1] + theta[-1], rtol=1e-13, atol=1e-13)
    parts = [model.margins(theta, X[[3, 0]]), model.margins(theta, X[1:2])]
    assert np.array_equal(parts[0], s[[3, 0]]) and np.array_equal(parts[1], s[1:2])


def test_thread_count_setting(monkeypatch):
    monkeypatch.setenv("RAY_ROBUST_WRM_THREADS", "3")
    assert wrm.line_threads() == 3
    monkeypatch.delenv("RAY_ROBUST_WRM_THREADS")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # what Ray sets in our zero-CPU actors
    assert wrm.line_threads() == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "2,1")  # OpenMP's nested form: the first level
    assert wrm.line_threads() == 2
    for bad in ("two", "0"):
        monkeypatch.setenv("RAY_ROBUST_WRM_THREADS", bad)
        with pytest.raises(ValueError, match="RAY_ROBUST_WRM_THREADS"):
            wrm.line_threads()


def test_a_model_without_a_line_kernel_is_refused():
    model = MLP(hidden=3)
    assert model.linear is False
    with pytest.raises(ValueError, match="no WRM line kernel"):
        wrm.wrm_line_coefficients(model, model.init(2, np.random.default_rng(0)),
                                  np.zeros((1, 2)), np.zeros((1, 2)), LAM, ETA_Z, 3)


# ---- full training runs: fast and generic paths agree ------------------------------------------

TASKS = {"logistic": ("logistic", {}), "least_squares": ("regression", {}),
         "softmax": ("softmax", {"n_classes": 3})}


def _problem(name):
    task, opts = TASKS[name]
    X, y = make_synthetic(600, 4, task=task, seed=1, noise=0.3, **opts)
    return prepare(X, y, n_workers=6, standardize="none", seed=0)


def _run(cfg, problem, fast, monkeypatch):
    """Train with the fast flag forced; count which ascent actually ran."""
    calls = {"line": 0, "explicit": 0}

    def counted(fn, key):
        @functools.wraps(fn)
        def inner(*args, **kwargs):
            calls[key] += 1
            return fn(*args, **kwargs)
        return inner

    with monkeypatch.context() as mp:
        for fn in ("local_gradients", "local_gradients_certified"):
            mp.setattr(algorithm, fn, functools.partial(getattr(wrm, fn), fast=fast))
        mp.setattr(wrm, "_line_fixed", counted(wrm._line_fixed, "line"))
        mp.setattr(wrm, "_line_certified", counted(wrm._line_certified, "line"))
        mp.setattr(wrm, "wrm_ascent", counted(wrm.wrm_ascent, "explicit"))
        mp.setattr(wrm, "wrm_ascent_certified", counted(wrm.wrm_ascent_certified, "explicit"))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            hist = train(cfg, problem=problem)
    return hist, calls


@pytest.mark.parametrize("certified", [False, True], ids=["fixed-T_z", "certified-eps"])
@pytest.mark.parametrize("name", LINEAR)
def test_fast_and_generic_paths_train_to_the_same_theta(name, certified, monkeypatch):
    rounds = 40
    extra = {"epsilon": 1e-3, "t_z_max": 60} if certified else {"t_z": 10}
    cfg = Config.from_dict({
        "model": name, **({"n_classes": 3} if name == "softmax" else {}),
        "algorithm": "alg2", "n_workers": 6, "alpha": 0.17, "attack": "alie", "beta": 0.34,
        "rounds": rounds, "eval_every": rounds, "lam": LAM, "eta_z": ETA_Z, "eta": 0.5,
        "seed": 3, **extra,
    })
    problem = _problem(name)
    fast, fast_calls = _run(cfg, problem, True, monkeypatch)
    slow, slow_calls = _run(cfg, problem, False, monkeypatch)
    assert fast_calls == {"line": rounds, "explicit": 0}
    assert slow_calls == {"line": 0, "explicit": rounds}
    np.testing.assert_allclose(fast.theta, slow.theta, rtol=0, atol=1e-10)
    assert np.abs(fast.theta).max() > 0.1  # it trained
    if certified:
        np.testing.assert_array_equal(fast.metrics["wrm_steps"], slow.metrics["wrm_steps"])
        assert fast.metrics["wrm_steps"].iloc[-1] > 0
