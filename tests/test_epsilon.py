"""Certified ε (Sec. VI-D): the certificate bounds the true distance, the adaptive ascent reaches
ε, the fixed-T_z path is untouched, results do not depend on shard packing, schedules, config."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from scipy.optimize import minimize

from ray_robust import Config, GuaranteeWarning
from ray_robust.algorithm import Server, honest_gradients, merge_worker_info, run
from ray_robust.api import load_problem, train
from ray_robust.core import wrm
from ray_robust.core.models import LogisticRegression
from ray_robust.core.schedule import Constant, TwoStage, parse_schedule
from ray_robust.reproduce import ENVIRONMENTS, PAPER_SETTING, schedule_study

MODEL = LogisticRegression()
E1 = {**PAPER_SETTING, **ENVIRONMENTS["E1"], "algorithm": "alg2"}


def _maximizer(theta, x, y, lam):
    """z* = argmax f(θ; z) − λ‖z − x‖² by scipy (BFGS to a tight gradient tolerance)."""

    def neg_g(z):
        return -(MODEL.loss(theta, z[None], np.array([y]))[0] - lam * np.sum((z - x) ** 2))

    def neg_grad(z):
        return -(MODEL.grad_x(theta, z[None], np.array([y]))[0] - 2 * lam * (z - x))

    return minimize(neg_g, x, jac=neg_grad, method="BFGS", options={"gtol": 1e-13}).x


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), lam=st.floats(0.05, 5.0), w_scale=st.floats(0.1, 4.0),
       z_scale=st.floats(0.0, 3.0))
def test_certificate_bounds_the_distance_to_the_scipy_maximizer(seed, lam, w_scale, z_scale):
    rng = np.random.default_rng(seed)
    d = 4
    theta = np.append(rng.normal(size=d) * w_scale / 2, rng.normal())
    l_zz = MODEL.lipschitz_xx(theta)
    assume(2 * lam - l_zz > 1e-2)  # λ_g > 0: a certificate exists
    X = rng.normal(size=(1, 3, d))
    y = rng.integers(0, 2, size=(1, 3)).astype(float)
    Z = X + z_scale * rng.normal(size=X.shape)  # any point, not only ascent iterates
    cert = wrm.ascent_residual(MODEL, theta, Z, X, y, lam) * wrm.certificate_scale(lam, l_zz)
    for i in range(3):
        z_star = _maximizer(theta, X[0, i], y[0, i], lam)
        assert np.linalg.norm(Z[0, i] - z_star) <= cert[0, i] * (1 + 1e-7) + 1e-7
    # the fast path's certificate is the same quantity at its own iterate z = x + c·w
    mask = np.ones(y.shape, dtype=bool)
    c, _, fast_cert = wrm.wrm_line_certified(MODEL, theta, MODEL.margins(theta, X), y, mask,
                                             lam, 0.01, 0.0, 7)
    Zc = X + c[..., None] * theta[:-1]
    ref = wrm.ascent_residual(MODEL, theta, Zc, X, y, lam) * wrm.certificate_scale(lam, l_zz)
    np.testing.assert_allclose(fast_cert, ref, rtol=1e-9, atol=1e-15)


@pytest.fixture(scope="module")
def problem(data_dir):
    return load_problem(Config.from_dict(E1))


def _theta(problem, scale: float, seed: int = 0) -> np.ndarray:
    d = problem.X_train.shape[1]
    return np.random.default_rng(seed).normal(size=d + 1) * scale


@pytest.mark.parametrize("eps", [0.3, 1e-3, 1e-7])
@pytest.mark.parametrize("fast", [True, False])
def test_adaptive_ascent_reaches_epsilon_on_every_sample(problem, eps, fast):
    sh = problem.shards.subset(range(4))
    theta = _theta(problem, 0.3)
    lam = 3.0
    l_zz = MODEL.lipschitz_xx(theta)
    assert 2 * lam - l_zz > 0
    grads, info = wrm.local_gradients_certified(
        MODEL, theta, sh.X, sh.y, sh.weights, lam=lam, eta_z=0.05, epsilon=eps, t_z_max=2000,
        fast=fast)
    assert info["wrm_capped"] == info["wrm_uncertified"] == 0
    assert 0 < info["wrm_certificate_max"] <= eps
    # recompute every sample's certificate independently from the returned z
    mask = sh.weights > 0
    if fast:
        s_x = MODEL.margins(theta, sh.X)
        c, steps, _ = wrm.wrm_line_certified(MODEL, theta, s_x, sh.y, mask, lam, 0.05, eps, 2000)
        Z = sh.X + c[..., None] * theta[:-1]
    else:
        Z, steps, _ = wrm.wrm_ascent_certified(MODEL, theta, sh.X, sh.y, mask, lam, 0.05, eps,
                                               2000)
    bound = wrm.ascent_residual(MODEL, theta, Z, sh.X, sh.y, lam) / (2 * lam - l_zz)
    assert bound[mask].max() <= eps * (1 + 1e-9)
    assert info["wrm_steps"] == steps.sum() and info["wrm_steps_max"] == steps.max()
    # and the true distance to the maximizer, for a few samples
    for k, i in [(0, 0), (1, 5), (3, 17)]:
        z_star = _maximizer(theta, sh.X[k, i], sh.y[k, i], lam)
        assert np.linalg.norm(Z[k, i] - z_star) <= eps + 1e-8
    # the gradients are those of the certified z
    np.testing.assert_allclose(grads, MODEL.mean_grad_theta(theta, Z, sh.y, sh.weights),
                               rtol=1e-9, atol=1e-12)


def test_certified_iterates_are_the_fixed_step_iterates_bit_for_bit(problem):
    """ε out of reach with cap T: exactly the fixed-T_z path (the Table I code path)."""
    sh, theta = problem.shards, _theta(problem, 0.3, seed=1)
    kw = dict(lam=3.0, eta_z=0.05)
    fixed = wrm.local_gradients(MODEL, theta, sh.X, sh.y, sh.weights, wrm=True, t_z=10, **kw)
    cert, info = wrm.local_gradients_certified(MODEL, theta, sh.X, sh.y, sh.weights,
                                               epsilon=1e-300, t_z_max=10, **kw)
    assert np.array_equal(fixed, cert)
    assert info["wrm_steps"] == 10 * sh.n_workers and info["wrm_capped"] == sh.n_workers
    # and with epsilon unset the engines' call is the fixed path itself
    g, info = honest_gradients(Config.from_dict(E1), MODEL, theta, sh, 0)
    assert np.array_equal(g, fixed) and info == {}


def test_optimal_step_is_the_default_step():
    """η_z = 2/(L_g + λ_g) = 2/(4λ) = 1/(2λ) in this convention, whatever L_zz is."""
    for lam in (0.5, 3.0, 10.0):
        cfg = Config(lam=lam, eta_z=None)
        for l_zz in (0.0, 0.7, 2 * lam - 1e-3):
            assert cfg.step_z == pytest.approx(wrm.optimal_step(lam, l_zz), rel=1e-15)


@pytest.mark.parametrize("groups", [[range(20)], [range(7), range(7, 20)],
                                    [[i] for i in range(20)], [range(0, 20, 2), range(1, 20, 2)]])
def test_results_do_not_depend_on_how_shards_are_packed(problem, groups):
    """The stopping rule is per shard (logical worker): any grouping gives the same bits."""
    cfg = Config.from_dict({**E1, "epsilon": 1e-4})
    theta = _theta(problem, 0.4, seed=2)
    ref, ref_info = honest_gradients(cfg, MODEL, theta, problem.shards, 5)
    assert ref_info["wrm_steps_max"] > 0
    parts = [honest_gradients(cfg, MODEL, theta, problem.shards.subset(list(g)), 5)
             for g in groups]
    order = np.concatenate([list(g) for g in groups])
    grads = np.empty_like(ref)
    grads[order] = np.concatenate([p[0] for p in parts])
    assert np.array_equal(grads, ref)
    info = merge_worker_info([p[1] for p in parts])
    for key in ref_info:
        if key == "wrm_certificate_sums":  # per-shard values, in the groups' order
            assert sorted(info[key]) == sorted(ref_info[key])
        else:
            assert info[key] == ref_info[key], key


def test_rounds_record_certificates_steps_and_the_schedule(problem):
    cfg = Config.from_dict({**E1, "rounds": 8, "eval_every": 2,
                            "epsilon_schedule": "two-stage:0.3,0.001,0.5"})
    hist = train(cfg, problem=problem)
    m = hist.metrics
    assert list(m["epsilon"]) == [0.3, 0.3, 0.001, 0.001]  # rounds 1, 3, 5, 7 (0-based)
    assert (m["wrm_certificate_max"] <= m["epsilon"]).all()
    assert (m["wrm_certificate_mean"] <= m["wrm_certificate_max"]).all()
    assert (m["wrm_capped"] == 0).all() and (m["wrm_uncertified"] == 0).all()
    # the running total counts every round, also those not evaluated
    per_round = []
    server = Server(cfg, problem)
    run(server, lambda th, t: _record(honest_gradients(cfg, server.model, th, problem.shards, t),
                                      per_round))
    assert m["wrm_steps_total"].iloc[-1] == sum(per_round)
    assert m["wrm_steps_total"].is_monotonic_increasing


def _record(out, sink):
    sink.append(out[1]["wrm_steps"])
    return out


def test_no_certificate_and_cap_warn_once(problem):
    # λ_g = 2λ − ‖w‖²/4 ≤ 0 from round 0: θ₀ scaled up, λ small
    cfg = Config.from_dict({**E1, "rounds": 3, "lam": 0.05, "epsilon": 0.1, "t_z_max": 3,
                            "eta_z": 0.05})
    server = Server(cfg, problem)
    state = server.initial_state()
    state.theta = _theta(problem, 1.0, seed=3)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        hist = run(server, lambda th, t: honest_gradients(cfg, server.model, th,
                                                          problem.shards, t), state=state)
    msgs = [str(w.message) for w in rec if issubclass(w.category, GuaranteeWarning)]
    assert len([s for s in msgs if "no certificate" in s]) == 1
    assert "λ_g = 2λ − L_zz" in msgs[0] and "t_z_max = 3" in msgs[0]
    assert (hist.metrics["wrm_uncertified"] == 20).all()
    assert np.isinf(hist.metrics["wrm_certificate_max"]).all()
    assert (hist.metrics["wrm_steps"] == 3 * 20).all()
    # a certificate exists but the cap is too small: the other warning, also once
    cfg = Config.from_dict({**E1, "rounds": 3, "epsilon": 1e-12, "t_z_max": 2})
    server = Server(cfg, problem)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        run(server, lambda th, t: honest_gradients(cfg, server.model, th, problem.shards, t))
    msgs = [str(w.message) for w in rec if issubclass(w.category, GuaranteeWarning)]
    assert len(msgs) == 1 and "hit t_z_max = 2" in msgs[0]


def test_ray_engine_follows_the_schedule_bit_for_bit(problem, ray_session):
    from ray_robust.engines.ray_engine import RayTrainer

    cfg = Config.from_dict({**E1, "rounds": 6, "epsilon_schedule": "two-stage:0.3,1e-4,0.5"})
    local = train(cfg, problem=problem)
    with RayTrainer(problem, actors=3) as trainer:
        remote = trainer(cfg)
    assert np.array_equal(local.theta, remote.theta)
    for key in ("wrm_steps", "wrm_steps_total", "wrm_certificate_max", "epsilon"):
        assert list(local.metrics[key]) == list(remote.metrics[key]), key


# ---- schedules and config ----------------------------------------------------------------
def test_schedule_spellings():
    two = TwoStage(0.1, 0.001, 0.5)
    assert parse_schedule("two-stage:0.1,0.001,0.5") == two
    assert parse_schedule({"kind": "two-stage", "large": 0.1, "small": 0.001}) == two
    assert parse_schedule({"large": 0.1, "small": 0.001, "switch": 0.5}) == two
    assert parse_schedule("constant:0.01") == parse_schedule(0.01) == Constant(0.01)
    assert [two(t, 10) for t in range(10)] == [0.1] * 5 + [0.001] * 5
    sched = parse_schedule(lambda t: 1.0 / (t + 1))
    assert sched(3, 100) == 0.25
    cfg = Config(epsilon_schedule="two-stage:0.1,0.001,0.5", rounds=10)
    assert [cfg.epsilon_at(t) for t in (0, 4, 5, 9)] == [0.1, 0.1, 0.001, 0.001]
    assert Config.from_dict(cfg.to_dict()) == cfg  # YAML/Tune round trip via the spec string
    assert cfg.to_dict()["epsilon_schedule"] == "two-stage:0.1,0.001,0.5"
    assert Config(epsilon=0.01).epsilon_at(7) == 0.01 and Config().epsilon_at(0) is None


@pytest.mark.parametrize(
    ("values", "match"),
    [
        ({"epsilon": 0.0}, "'epsilon'"),
        ({"epsilon": -1e-3}, "'epsilon'"),
        ({"epsilon": float("nan")}, "'epsilon'"),
        ({"epsilon": "small"}, "'epsilon'"),
        ({"t_z_max": 0}, "'t_z_max'"),
        ({"t_z_max": 2.5}, "'t_z_max'"),
        ({"epsilon": 0.1, "epsilon_schedule": "constant:0.1"}, "'epsilon_schedule'.*one of"),
        ({"epsilon_schedule": "three-stage:1,2"}, "'epsilon_schedule'.*two-stage:LARGE"),
        ({"epsilon_schedule": "two-stage:0.1"}, "'epsilon_schedule'.*2–3 numbers"),
        ({"epsilon_schedule": "two-stage:a,b"}, "'epsilon_schedule'.*not a number"),
        ({"epsilon_schedule": "two-stage:0.001,0.1,0.5"}, "'epsilon_schedule'.*'small'"),
        ({"epsilon_schedule": "two-stage:0.1,0.01,1.5"}, "'epsilon_schedule'.*'switch'"),
        ({"epsilon_schedule": "constant:-1"}, "'epsilon_schedule'.*'epsilon'"),
        ({"epsilon_schedule": {"large": 0.1}}, "'epsilon_schedule'"),
        ({"epsilon_schedule": {"kind": "two-stage", "large": 1, "small": 0.1, "x": 2}},
         "'epsilon_schedule'"),
        ({"epsilon_schedule": [0.1, 0.01]}, "'epsilon_schedule'"),
        ({"epsilon_schedule": True}, "'epsilon_schedule'"),
    ],
)
def test_bad_epsilon_values_raise_one_clear_error(values, match):
    with pytest.raises(ValueError, match=match) as exc:
        Config.from_dict(values)
    assert "\n" not in str(exc.value)


def test_a_callable_schedule_returning_nonsense_is_reported_at_its_round():
    cfg = Config(epsilon_schedule=lambda t: -1.0 if t == 2 else 0.1)
    assert cfg.epsilon_at(1) == 0.1
    with pytest.raises(ValueError, match="round 2"):
        cfg.epsilon_at(2)


def test_schedule_study_quick(data_dir):
    runs = schedule_study(range(1), quick=True)
    assert set(runs["schedule"]) == {"small", "large", "two-stage"}
    steps = runs.set_index("schedule")["ascent_steps"]
    assert steps["large"] < steps["two-stage"] < steps["small"]
    assert runs["error"].between(0, 1).all()


def test_schedule_study_yaml_quick(data_dir):
    from pathlib import Path

    from ray_robust.studies import load_study, run_grid_local

    path = Path(__file__).resolve().parents[1] / "tune_configs" / "epsilon_schedule.yaml"
    study = load_study(path, quick=True)
    assert "epsilon_schedule" in study.axes
    results = run_grid_local(study)
    assert len(results) == len(study.trial_configs())
    assert results["wrm_steps_total"].gt(0).all()


def test_a_resumed_run_keeps_the_step_total(problem):
    """RunState snapshots carry the running totals: resume = uninterrupted run."""
    import json

    from ray_robust.algorithm import RunState

    cfg = Config.from_dict({**E1, "rounds": 6, "epsilon_schedule": "two-stage:0.3,1e-4,0.5"})

    def compute(server):
        return lambda th, t: honest_gradients(cfg, server.model, th, problem.shards, t)

    server = Server(cfg, problem)
    whole = run(server, compute(server))
    server = Server(cfg, problem)
    state = server.initial_state()
    run(Server(cfg.replace(rounds=3), problem), compute(server), state=state)
    state = RunState.from_dict(json.loads(json.dumps(state.to_dict())))
    resumed = run(server, compute(server), state=state)
    assert np.array_equal(whole.theta, resumed.theta)
    assert resumed.final["wrm_steps_total"] == whole.final["wrm_steps_total"]
