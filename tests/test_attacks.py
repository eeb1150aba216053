"""Each attack's defining property, the label-flip data attack, both engines agreeing (issue 6)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import norm

from ray_robust.algorithm import Server, byzantine_mask, honest_gradients, poison_shards, run
from ray_robust.api import load_problem, train
from ray_robust.config import Config
from ray_robust.core.attacks import (
    ATTACKS,
    DATA_ATTACKS,
    USES_OWN,
    alie,
    alie_z,
    crash,
    gaussian,
    inf,
    ipm,
    label_flip,
    mimic,
    nan,
    sign_flip,
)
from ray_robust.core.models import get_model

H, K, P = 17, 3, 8


@pytest.fixture
def honest():
    rng = np.random.default_rng(0)
    return rng.normal(size=(H, P)) * rng.uniform(0.1, 2.0, size=P) + rng.normal(size=P)


def rng():
    return np.random.default_rng(42)


# ---- registry-wide --------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_every_attack_has_the_shape_and_is_seeded(name, honest):
    fn, default = ATTACKS[name]
    own = {"own": honest[:K] * 0.5} if name in USES_OWN else {}
    a = fn(honest, K, rng(), default, **own)
    b = fn(honest, K, rng(), default, **own)
    assert a.shape == (K, P) and a.dtype == np.float64
    np.testing.assert_array_equal(a, b)  # the same RNG stream gives the same messages
    assert not np.shares_memory(a, honest)


# ---- defining properties --------------------------------------------------------------------


def test_alie_lies_within_mean_pm_z_std(honest):
    mu, sd = honest.mean(axis=0), honest.std(axis=0)
    for z in (0.5, 1.0, 2.0):
        out = alie(honest, K, rng(), z)
        np.testing.assert_allclose(out, np.tile(mu - z * sd, (K, 1)), rtol=1e-12)
        assert np.all(np.abs(out - mu) <= z * sd + 1e-12)


def test_alie_default_z_is_the_papers_formula(honest):
    # Baruch et al. 2019: n = 20, f = 3 → s = ⌊20/2 + 1⌋ − 3 = 8, z = Φ⁻¹(12/20)
    assert alie_z(20, 3) == pytest.approx(norm.ppf(0.6))
    assert alie_z(50, 12) == pytest.approx(norm.ppf((50 - 14) / 50))
    out = alie(honest, K, rng(), None)
    z = alie_z(H + K, K)
    np.testing.assert_allclose(out[0], honest.mean(axis=0) - z * honest.std(axis=0))


def test_ipm_is_minus_eps_times_the_honest_mean(honest):
    for eps in (0.1, 0.5, 10.0):
        np.testing.assert_allclose(ipm(honest, K, rng(), eps),
                                   np.tile(-eps * honest.mean(axis=0), (K, 1)), rtol=1e-15)


def test_sign_flip_negates_own_message(honest):
    own = honest[:K] + 1.0
    np.testing.assert_array_equal(sign_flip(honest, K, rng(), 2.0, own=own), -2.0 * own)
    np.testing.assert_allclose(sign_flip(honest, K, rng(), 1.0)[0], -honest.mean(axis=0))


def test_gaussian_is_centred_noise_of_the_given_std(honest):
    out = gaussian(honest, 2000, rng(), 3.0)
    assert abs(out.mean()) < 0.05 and out.std() == pytest.approx(3.0, rel=0.02)
    np.testing.assert_array_equal(gaussian(honest * 0, 2000, rng(), 3.0), out)  # ignores g


def test_mimic_copies_one_honest_worker(honest):
    out = mimic(honest, K, rng(), 1.0)
    np.testing.assert_allclose(out, np.tile(honest[0], (K, 1)), rtol=1e-14)
    g = honest.mean(axis=0)
    np.testing.assert_allclose(mimic(honest, K, rng(), 3.0)[0], g + 3 * (honest[0] - g))


@pytest.mark.parametrize(("fn", "check"), [(nan, np.isnan), (inf, np.isposinf),
                                           (crash, np.isnan)])
def test_faults_fire_with_probability_scale(fn, check, honest):
    own = honest[:K]
    assert check(fn(honest, K, rng(), 1.0, own=own)).all()
    np.testing.assert_array_equal(fn(honest, K, rng(), 0.0, own=own), own)
    many = fn(np.zeros((2, P)), 4000, rng(), 0.3, own=np.zeros((4000, P)))
    rate = check(many).all(axis=1).mean()
    assert rate == pytest.approx(0.3, abs=0.03)


def test_label_flip_sends_its_own_poisoned_gradient(honest):
    own = honest[:K] * 7
    np.testing.assert_array_equal(label_flip(honest, K, rng(), 1.0, own=own), own)
    assert DATA_ATTACKS == {"label_flip"}


@pytest.mark.parametrize("attack", ["nan", "inf", "crash"])
def test_server_rejects_faulty_messages(attack, problem):
    cfg = Config(aggregator="mean", wrm=False, alpha=0.15, attack=attack, rounds=5, seed=0)
    hist = train(cfg, problem=problem)
    assert (hist.metrics["n_rejected"] == cfg.n_byzantine).all()
    assert np.isfinite(hist.theta).all()
    # the mean over the 17 remaining honest workers is exactly the no-attack run on them
    clean = train(cfg.replace(attack="none", alpha=0.0), problem=problem)
    assert hist.final["test_error"] == pytest.approx(clean.final["test_error"], abs=0.02)


# ---- label flip: a data attack in honest_gradients -----------------------------------------


@pytest.fixture(scope="module")
def problem(data_dir):
    return load_problem(Config(n_workers=20, seed=0))


def test_label_flip_poisons_exactly_the_byzantine_shards(problem):
    cfg = Config(alpha=0.15, attack="label_flip", seed=0)
    model = get_model("logistic")
    shards = problem.shards
    poisoned = poison_shards(cfg, model, shards)
    byz = byzantine_mask(cfg)
    real = shards.weights > 0
    np.testing.assert_array_equal(poisoned.y[~byz], shards.y[~byz])
    np.testing.assert_array_equal(poisoned.y[byz][real[byz]], 1 - shards.y[byz][real[byz]])
    np.testing.assert_array_equal(poisoned.X, shards.X)
    # the problem's own arrays are untouched (shared by other runs)
    assert not np.shares_memory(poisoned.y, shards.y)


def test_label_flip_fraction_and_grouping_independence(problem):
    cfg = Config(alpha=0.15, attack="label_flip", attack_scale=0.5, seed=0)
    model = get_model("logistic")
    shards = problem.shards
    whole = poison_shards(cfg, model, shards)
    byz = np.flatnonzero(byzantine_mask(cfg))
    real = shards.weights[byz] > 0
    frac = (whole.y[byz] != shards.y[byz])[real].mean()
    assert frac == pytest.approx(0.5, abs=0.08)
    # a Ray actor holds some workers' shards: it must flip the very same labels
    groups = [np.arange(0, 7), np.arange(7, 20)]
    parts = [poison_shards(cfg, model, shards.subset(g)).y for g in groups]
    np.testing.assert_array_equal(np.concatenate(parts), whole.y)
    theta = np.random.default_rng(1).normal(size=58) * 0.1
    g_whole, _ = honest_gradients(cfg, model, theta, shards, 0)
    g_parts = np.concatenate([honest_gradients(cfg, model, theta, shards.subset(g), 0)[0]
                              for g in groups])
    np.testing.assert_array_equal(g_parts, g_whole)


def test_label_flip_hurts_the_mean_more_than_none(problem):
    base = dict(aggregator="mean", wrm=False, rounds=60, eval_every=60, seed=0)
    clean = train(Config(**base), problem=problem).final["test_error"]
    flipped = train(Config(**base, alpha=0.45, attack="label_flip"),
                    problem=problem).final["test_error"]
    assert flipped > clean + 0.02


def test_own_message_attacks_use_the_byzantine_gradients(problem):
    """sign_flip through the server sends −(each byzantine worker's own gradient)."""
    cfg = Config(aggregator="mean", wrm=False, alpha=0.15, attack="sign_flip", rounds=1, seed=0)
    server = Server(cfg, problem)
    state = server.initial_state()
    grads, _ = honest_gradients(cfg, server.model, state.theta, problem.shards, 0)
    expected = grads.copy()
    expected[server.byzantine] *= -1
    theta0 = state.theta.copy()
    server.step(state, grads)
    np.testing.assert_allclose(state.theta, theta0 - cfg.eta * expected.mean(axis=0),
                               rtol=1e-13)


# ---- both engines ---------------------------------------------------------------------------


def test_ray_engine_matches_local_for_new_rules_and_attacks(problem, ray_session):
    """Stateful centered clipping, the label-flip data attack, own-message sign flip, crash:
    the Ray engine gives the in-process θ bit for bit."""
    from ray_robust.engines.ray_engine import RayTrainer

    configs = [
        Config(aggregator="centered_clipping", alpha=0.15, attack="label_flip", rounds=8,
               seed=0),
        Config(aggregator="bulyan", alpha=0.15, attack="sign_flip", rounds=8, seed=0),
        Config(aggregator="krum", wrm=False, alpha=0.15, attack="crash", rounds=8, seed=0),
    ]
    with RayTrainer(problem, actors=2) as trainer:
        for cfg in configs:
            remote = trainer(cfg)
            server = Server(cfg, problem)
            local = run(server, lambda th, t, c=cfg, s=server: honest_gradients(
                c, s.model, th, problem.shards, t))
            np.testing.assert_array_equal(remote.theta, local.theta)
