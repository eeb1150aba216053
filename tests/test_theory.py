"""ray_robust.theory reproduces the paper's numbers (Theorems 1–3, Sec. VI-C, Sec. VI-D)."""

from __future__ import annotations

import doctest
import warnings
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ray_robust import Config, theory
from ray_robust.cli import main
from ray_robust.core import wrm
from ray_robust.core.aggregators import nbs
from ray_robust.core.attacks import counterexample
from ray_robust.core.models import LogisticRegression


def _cfg(**kw) -> Config:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Config(**kw)


def test_docstring_examples_run():
    assert doctest.testmod(theory, raise_on_error=True).failed == 0


def test_table1_setting_is_inside_the_guarantee():
    assert theory.c_alpha(0.15, 0.15) == pytest.approx(0.3 / 0.85)
    assert round(theory.c_alpha(0.15, 0.15), 3) == 0.353
    v = theory.verdict(_cfg(alpha=0.15, beta=0.15, attack="aggressive"))
    assert v.covered and v.alpha == v.beta == 0.15
    assert v.c_alpha == pytest.approx(0.3529, abs=1e-4)
    assert str(v) == "converges per Theorem 2 (C_α = 2α/(1 − β) = 0.353 < 1; 2α + β = 0.45 < 1)"


def test_breakpoint_is_one_third():
    assert theory.nbs_breakpoint() == Fraction(1, 3) == theory.NBS_BREAKPOINT
    # with β = α, the guarantee holds exactly for α < 1/3 (m = 30: αm = 0 … 14)
    m = 30
    for k in range(15):
        v = theory.verdict(_cfg(n_workers=m, alpha=k / m, beta=k / m, attack="counterexample"))
        assert v.covered == (k / m < 1 / 3), k
        if not v.covered:
            assert "outside the guarantee" in v.text and "NBS breakpoint 1/3" in v.text


@pytest.mark.parametrize(
    ("kw", "phrase"),
    [
        (dict(alpha=0.15, beta=0.1), "β = 0.1 < α = 0.15"),
        (dict(alpha=0.35, beta=0.35), "2α + β = 1.05 ≥ 1"),
        (dict(alpha=0.15, beta=0.15, aggregator="mean", wrm=True), "aggregator 'mean'"),
    ],
)
def test_outside_the_guarantee_says_why(kw, phrase):
    v = theory.verdict(_cfg(attack="aggressive", **kw))
    assert not v.covered
    assert v.text.startswith("outside the guarantee: ") and phrase in v.text


def test_no_byzantine_workers():
    v = theory.verdict(_cfg(alpha=0.0))
    assert v.covered and v.c_alpha == 0.0 and "no byzantine" in v.text


def test_theorem1_bound_by_hand():
    S = np.array([3.0, 4.0])  # ‖S‖ = 5
    honest = np.array([[3.0, 5.0], [2.0, 4.0], [3.0, 4.0]])  # max ‖g_i − S‖ = 1
    assert theory.theorem1_bound(S, honest, 0.2, 0.2) == pytest.approx(0.4 / 0.8 * 5 + 1)


@st.composite
def _theorem1_counts(draw) -> tuple[int, int, int]:
    """(m, byzantine count, screened count) inside Theorem 1: α < 1/2, β ≥ α, ≥ 1 input kept."""
    m = draw(st.integers(3, 30))
    n_byz = draw(st.integers(0, (m - 1) // 2))
    n_scr = draw(st.integers(n_byz, min(n_byz + 3, m - 1)))
    return m, n_byz, n_scr


@settings(max_examples=200, deadline=None)
@given(counts=_theorem1_counts(), seed=st.integers(0, 2**31 - 1),
       scale=st.floats(0.01, 100.0), adversarial=st.booleans())
def test_nbs_output_obeys_theorem1(counts, seed, scale, adversarial):
    """Theorem 1: ‖G − S‖ ≤ 2α/(1 − β)‖S‖ + max_{i∈M}‖g_i − S‖ for every S, whatever the
    byzantine inputs, whenever β ≥ α and α < 1/2."""
    m, n_byz, n_scr = counts
    rng = np.random.default_rng(seed)
    d = 4
    honest = (rng.normal(size=(m - n_byz, d)) + rng.normal(size=d)) * rng.uniform(0.1, 3)
    if adversarial:  # byzantine vectors just below the honest norm cutoff, all pointing one way
        r = np.sort(np.linalg.norm(honest, axis=1))[max(0, m - n_scr - n_byz - 1)]
        u = -honest.mean(axis=0)
        byz = np.tile(u / (np.linalg.norm(u) + 1e-12) * r, (n_byz, 1))
    else:
        byz = scale * rng.normal(size=(n_byz, d))
    G = nbs(np.vstack([byz, honest]), n_scr / m).vector
    alpha, beta = n_byz / m, n_scr / m
    for S in (honest.mean(axis=0), np.zeros(d), rng.normal(size=d), honest[0]):
        spread = np.linalg.norm(honest - S, axis=1).max()
        bound = theory.theorem1_bound(S, honest, alpha, beta)
        assert bound == pytest.approx(2 * alpha / (1 - beta) * np.linalg.norm(S) + spread,
                                      rel=1e-12)
        assert np.linalg.norm(G - S) <= bound + 1e-9


def test_counterexample_output():
    ce = theory.counterexample()
    # honest 6e₁, …, e₁; byzantine 4 × (−e₁): NBS keeps g₉, g₁₀ and the four −g₁₀
    np.testing.assert_allclose(ce.output, [-1 / 6, 0.0])
    np.testing.assert_allclose(ce.formula, ce.output)
    np.testing.assert_allclose(ce.honest_mean, [3.5, 0.0])
    assert ce.output @ ce.honest_mean < 0  # dominated by the attackers: the wrong direction
    rng = np.random.default_rng(0)
    honest = rng.normal(size=(6, 5)) * np.arange(1, 7)[:, None]
    ce = theory.counterexample(honest)
    np.testing.assert_allclose(ce.output, ce.formula, atol=1e-15)
    with pytest.raises(ValueError, match=r"'honest'.*\(6, p\)"):
        theory.counterexample(np.ones((5, 2)))


def test_counterexample_attack_makes_nbs_output_the_papers_formula():
    """The training attack of Sec. VI-C (4 byzantine + 6 honest, β = α = 0.4) sends −g₁₀, the
    smallest honest input, whatever the workers' order; NBS outputs (−4·g₁₀ + g₉ + g₁₀)/6."""
    rng = np.random.default_rng(3)
    honest = rng.normal(size=(6, 3)) * np.arange(6, 0, -1)[:, None]
    honest = honest[rng.permutation(6)]
    by_norm = honest[np.argsort(-np.linalg.norm(honest, axis=1))]  # g₅ … g₁₀
    g9, g10 = by_norm[4], by_norm[5]
    byz = counterexample(honest, 4, rng, 1.0)
    np.testing.assert_array_equal(byz, np.tile(-g10, (4, 1)))
    G = nbs(np.vstack([byz, honest]), beta=0.4).vector
    np.testing.assert_allclose(G, (-4 * g10 + g9 + g10) / 6)
    np.testing.assert_allclose(theory.counterexample(honest).output, G)


def test_ascent_plan_matches_sec_vi_d_and_the_iterates():
    lam, l_zz = 3.0, 1.5
    plan = theory.ascent_plan(lam, l_zz, epsilon=1e-6, d_z=1.0)
    assert (plan.lam_g, plan.l_g) == (4.5, 7.5)
    assert plan.eta_z == pytest.approx(1 / (2 * lam))  # 2/(L_g + λ_g)
    assert plan.rho == pytest.approx((7.5 - 4.5) / (7.5 + 4.5))  # = L_zz/(2λ) = 0.25
    assert plan.t_z == int(np.ceil(np.log(1e6) / np.log(4)))  # 10
    assert plan.rho == wrm.contraction(lam, l_zz)
    # the paper's η_z = 0.05 on Table I's λ = 3
    slow = theory.ascent_plan(lam, l_zz, epsilon=1e-6, d_z=1.0, eta_z=0.05)
    assert slow.rho == pytest.approx(1 - 0.05 * 4.5) and slow.t_z > plan.t_z
    assert theory.ascent_plan(1.0, 3.0, 1e-3, 1.0).t_z is None  # λ_g < 0: no step count
    # T_z steps reach ε on a real problem: ‖z_T − z*‖ ≤ ρ^T·D_z ≤ ε
    model = LogisticRegression()
    rng = np.random.default_rng(0)
    theta = rng.normal(size=6)
    X, y = rng.normal(size=(1, 8, 5)), rng.integers(0, 2, size=(1, 8)).astype(float)
    l_zz = model.lipschitz_xx(theta)
    eps = 1e-6
    z_star = wrm.wrm_ascent(model, theta, X, y, lam, wrm.optimal_step(lam, l_zz), 500)
    d_z = float(np.linalg.norm(z_star - X, axis=-1).max())
    plan = theory.ascent_plan(lam, l_zz, eps, d_z)
    Z = wrm.wrm_ascent(model, theta, X, y, lam, plan.eta_z, plan.t_z)
    assert np.linalg.norm(Z - z_star, axis=-1).max() <= eps


def test_train_prints_the_verdict_before_it_starts(data_dir, capsys):
    assert main(["train", "--rounds", "1", "--alpha", "0.15", "--attack", "aggressive",
                 "--epsilon-schedule", "two-stage:0.1,0.001,0.5"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[1] == ("theory: converges per Theorem 2 (C_α = 2α/(1 − β) = 0.353 < 1; "
                      "2α + β = 0.45 < 1); certified WRM ε = two-stage:0.1,0.001,0.5 "
                      "(cap t_z_max = 1000)")
    assert out[2].lstrip().startswith("round")  # printed before training
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["train", "--rounds", "1", "--alpha", "0.35", "--beta", "0.35",
                     "--attack", "counterexample"]) == 0
    out = capsys.readouterr().out
    assert "theory: outside the guarantee: 2α + β = 1.05 ≥ 1" in out
    assert "NBS breakpoint 1/3" in out


def test_cli_rejects_a_bad_schedule(capsys):
    assert main(["train", "--epsilon-schedule", "two-stage:oops"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ray-robust: error: The 'epsilon_schedule' parameter")


def test_ascent_plan_for_a_run_bounds_the_certified_step_count(data_dir):
    """The a-priori T_z of Sec. VI-D is an upper bound on what the certified ascent needs."""
    from ray_robust.api import load_problem

    cfg = _cfg(rounds=1)
    pb = load_problem(cfg)
    theta = np.random.default_rng(0).normal(size=pb.X_train.shape[1] + 1) * 0.3
    sh = pb.shards.subset([0])
    X, y = sh.X[0], sh.y[0]
    plan = theory.ascent_plan_for(cfg, theta, X, y, 1e-4)
    assert plan.eta_z == cfg.step_z == 0.05 and plan.rho < 1 and plan.t_z > 0
    _, info = wrm.local_gradients_certified(
        LogisticRegression(), theta, sh.X, sh.y, sh.weights, lam=cfg.lam, eta_z=cfg.step_z,
        epsilon=1e-4, t_z_max=10_000)
    assert 0 < info["wrm_steps_max"] <= plan.t_z
