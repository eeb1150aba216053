"""The field's aggregators against hand-computed cases and direct slow references (issue 6).

Each rule is pinned by a case worked out by hand, then compared on random inputs with a
reference written here as literally as its paper states it (Python loops, no Gram trick).
Invariances: permutation of the inputs; translation equivariance where the definition implies
it (every rule but NBS, whose norm screen depends on the origin). Non-finite rows never reach
the output; they count toward f.
"""

from __future__ import annotations

import inspect
import math
import warnings

import numpy as np
import pandas as pd
import pytest
from scipy.optimize import minimize

from ray_robust.api import load_problem, train
from ray_robust.config import Config
from ray_robust.core import aggregators
from ray_robust.core.aggregators import (
    AGGREGATORS,
    PRECONDITIONS,
    Aggregation,
    AggregationError,
    bulyan,
    centered_clipping,
    check_precondition,
    geometric_median,
    krum,
    mean,
    median,
    multi_krum,
    nbs,
    pairwise_sq_distances,
    trimmed_mean,
)
from ray_robust.core.rules import INITIAL_STATE

#: parameters used for every rule in the generic tests (f = 2 of n = 13 satisfies Bulyan)
PARAMS = {"beta": 0.2, "f": 2, "clip_tau": 0.5, "clip_iters": 3}
N, P = 13, 6


def call(name: str, grads: np.ndarray, **over) -> Aggregation:
    fn, fields = AGGREGATORS[name]
    kwargs = {k: over.get(k, PARAMS[k]) for k in fields}
    if "state" in over and "state" in inspect.signature(fn).parameters:
        kwargs["state"] = over["state"]  # a stateful rule's previous state; the others ignore it
    return fn(grads, **kwargs)


# ---- slow references ------------------------------------------------------------------------


def ref_median(X):
    return np.array([sorted(col)[len(col) // 2] if len(col) % 2 else
                     (sorted(col)[len(col) // 2 - 1] + sorted(col)[len(col) // 2]) / 2
                     for col in X.T])


def ref_trimmed(X, f):
    return np.array([np.mean(sorted(col)[f:len(col) - f]) for col in X.T])


def ref_krum_scores(X, f):
    n = len(X)
    scores = []
    for i in range(n):
        d = sorted(float(np.sum((X[i] - X[j]) ** 2)) for j in range(n) if j != i)
        scores.append(sum(d[: n - f - 2]))
    return np.array(scores)


def _by_score(scores, X):
    """Ranks by score, ties by the row's values (a mutual-nearest pair ties when n−f−2 = 1)."""
    return sorted(range(len(X)), key=lambda i: (scores[i], tuple(X[i])))


def ref_multi_krum(X, f, q):
    return X[_by_score(ref_krum_scores(X, f), X)[:q]].mean(axis=0)


def ref_bulyan(X, f):
    n = len(X)
    remaining = list(range(n))
    selected = []
    for _ in range(n - 2 * f):
        sub = X[remaining]
        scores = ref_krum_scores(sub, f) if len(sub) - f - 2 > 0 else np.zeros(len(sub))
        j = _by_score(scores, sub)[0]
        selected.append(remaining.pop(j))
    S = X[selected]
    beta = n - 4 * f
    out = []
    for col in S.T:
        med = np.median(col)
        closest = sorted(col, key=lambda v: abs(v - med))[:beta]
        out.append(np.mean(closest))
    return np.array(out)


def ref_centered_clipping(X, tau, iters, v):
    v = np.array(v, dtype=float)
    for _ in range(iters):
        step = np.zeros_like(v)
        for x in X:
            d = x - v
            nd = np.linalg.norm(d)
            step += d * min(1.0, tau / nd) if nd > 0 else 0.0
        v = v + step / len(X)
    return v


def ref_geometric_median(X):
    obj = lambda z: np.linalg.norm(X - z, axis=1).sum()  # noqa: E731
    res = minimize(obj, X.mean(axis=0), method="Nelder-Mead",
                   options={"xatol": 1e-10, "fatol": 1e-12, "maxiter": 20000, "maxfev": 40000})
    return res.x, obj


# ---- hand-computed cases --------------------------------------------------------------------


def test_median_hand_cases():
    G = np.array([[1.0, 5.0], [2.0, -1.0], [10.0, 0.0]])
    a = median(G)
    np.testing.assert_array_equal(a.vector, [2.0, 0.0])
    np.testing.assert_array_equal(a.kept, [False, True, True])  # row 0 is never a middle value
    a = median(np.array([[1.0], [2.0], [3.0], [10.0]]))
    assert a.vector[0] == 2.5 and a.kept.tolist() == [False, True, True, False]


def test_trimmed_mean_hand_case():
    G = np.array([[1.0], [2.0], [3.0], [100.0]])
    a = trimmed_mean(G, f=1)
    assert a.vector[0] == 2.5 and a.kept.tolist() == [False, True, True, False]
    np.testing.assert_array_equal(trimmed_mean(G, f=0).vector, G.mean(axis=0))


def test_krum_hand_case():
    # 1-D points 0, 0.1, 0.2, 10 with f = 0: neighbours n − f − 2 = 2.
    # scores: 0 → 0.01 + 0.04 = 0.05; 0.1 → 0.01 + 0.01 = 0.02; 0.2 → 0.05; 10 → 96.04 + 98.01
    G = np.array([[0.0], [0.1], [0.2], [10.0]])
    a = krum(G, f=0)
    assert a.vector[0] == 0.1 and a.kept.tolist() == [False, True, False, False]
    # Multi-Krum keeps n − f = 4 − 0 ... with f = 0 that is everything: the mean
    np.testing.assert_allclose(multi_krum(G, f=0).vector, G.mean(axis=0))
    np.testing.assert_allclose(multi_krum(G, f=0, n_selected=3).vector, [0.1])


def test_geometric_median_hand_cases():
    # collinear: the 1-D median; a square's corners: its centre; an equilateral triangle: centroid
    np.testing.assert_allclose(geometric_median(np.array([[0.0], [1.0], [10.0]])).vector, [1.0],
                               atol=1e-6)
    sq = np.array([[0.0, 0.0], [2.0, 0.0], [0.0, 2.0], [2.0, 2.0]])
    np.testing.assert_allclose(geometric_median(sq).vector, [1.0, 1.0], atol=1e-8)
    tri = np.array([[0.0, 0.0], [1.0, 0.0], [0.5, math.sqrt(3) / 2]])
    np.testing.assert_allclose(geometric_median(tri).vector, tri.mean(axis=0), atol=1e-6)


def test_centered_clipping_hand_case():
    G = np.array([[3.0, 0.0], [0.0, 0.5]])
    a = centered_clipping(G, clip_tau=1.0, clip_iters=1)  # from v = 0: clip to [1,0], [0,.5]
    np.testing.assert_allclose(a.vector, [0.5, 0.25])
    np.testing.assert_array_equal(a.state, a.vector)
    # the state is the centre the next round starts from
    b = centered_clipping(G, clip_tau=1.0, clip_iters=1, state=np.array([3.0, 0.0]))
    # from v = (3, 0): differences (0, 0) and (−3, 0.5), the latter clipped to norm 1
    d = np.array([-3.0, 0.5])
    np.testing.assert_allclose(b.vector, [3.0, 0.0] + d / np.linalg.norm(d) / 2)


def test_bulyan_hand_case():
    # n = 7, f = 1: Krum selects θ = 5 (the cluster, the outlier 100 last), then per coordinate
    # the β = 3 values closest to the median of the selected 5.
    G = np.array([[0.0], [1.0], [2.0], [3.0], [4.0], [5.0], [100.0]])
    a = bulyan(G, f=1)
    np.testing.assert_allclose(a.vector, ref_bulyan(G, 1))
    assert not a.kept[6]
    assert 0.9 < a.vector[0] < 4.1


# ---- random inputs against the slow references ---------------------------------------------


@pytest.mark.parametrize("seed", range(4))
def test_rules_match_slow_references(seed):
    rng = np.random.default_rng(seed)
    n, p, f = 11, 4, 2
    X = rng.normal(size=(n, p)) * rng.uniform(0.5, 3.0, size=p)
    X[0] += 8.0  # an outlier
    np.testing.assert_allclose(median(X).vector, ref_median(X), rtol=1e-12)
    np.testing.assert_allclose(median(X[:-1]).vector, ref_median(X[:-1]), rtol=1e-12)
    np.testing.assert_allclose(trimmed_mean(X, f).vector, ref_trimmed(X, f), rtol=1e-12)
    np.testing.assert_allclose(krum(X, f).vector, ref_multi_krum(X, f, 1), rtol=1e-12)
    np.testing.assert_allclose(multi_krum(X, f).vector, ref_multi_krum(X, f, n - f), rtol=1e-12)
    np.testing.assert_allclose(bulyan(X, f).vector, ref_bulyan(X, f), rtol=1e-12)
    v0 = rng.normal(size=p)
    np.testing.assert_allclose(
        centered_clipping(X, clip_tau=0.7, clip_iters=3, state=v0).vector,
        ref_centered_clipping(X, 0.7, 3, v0), rtol=1e-12,
    )
    z = geometric_median(X, tol=1e-12, max_iter=2000).vector
    z_ref, obj = ref_geometric_median(X)
    assert obj(z) <= obj(z_ref) + 1e-7  # Weiszfeld reaches the optimum Nelder–Mead finds
    np.testing.assert_allclose(z, z_ref, atol=1e-4)


def test_gram_trick_distances_match_direct():
    X = np.random.default_rng(5).normal(size=(9, 7))
    D = np.array([[np.sum((a - b) ** 2) for b in X] for a in X])
    np.testing.assert_allclose(pairwise_sq_distances(X), D, atol=1e-12)
    assert np.all(np.diag(pairwise_sq_distances(X)) == 0)


# ---- invariances ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(AGGREGATORS))
def test_permutation_invariance(name):
    rng = np.random.default_rng(1)
    G = rng.normal(size=(N, P))
    G[2] *= 20
    perm = rng.permutation(N)
    a, b = call(name, G), call(name, G[perm])
    np.testing.assert_allclose(b.vector, a.vector, rtol=1e-10, atol=1e-12)
    np.testing.assert_array_equal(b.kept, a.kept[perm])


@pytest.mark.parametrize("name", sorted(set(AGGREGATORS) - {"nbs"}))
def test_translation_equivariance(name):
    """G(g_1 + c, …, g_n + c) = G(g_1, …, g_n) + c (centered clipping: with its centre + c)."""
    rng = np.random.default_rng(2)
    G = rng.normal(size=(N, P))
    c = rng.normal(size=P) * 5
    state = rng.normal(size=P)
    a, b = call(name, G, state=state), call(name, G + c, state=state + c)
    tol = 1e-6 if name == "geometric_median" else 1e-9  # an iterative solver, tol = 1e-7
    np.testing.assert_allclose(b.vector, a.vector + c, rtol=tol, atol=tol)


def test_nbs_is_not_translation_equivariant():
    """NBS screens by distance to the origin, so a shift changes which rows it drops."""
    G = np.array([[0.0], [1.0], [2.0], [3.0], [10.0]])
    assert nbs(G, 0.2).vector[0] == 1.5
    assert nbs(G - 10.0, 0.2).vector[0] == -6.0  # drops −10, not the outlier 0: ≠ 1.5 − 10


# ---- preconditions --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "n", "f", "text"),
    [("krum", 6, 2, "n > 2f \\+ 2"), ("multi_krum", 4, 1, "n > 2f \\+ 2"),
     ("bulyan", 10, 2, "n ≥ 4f \\+ 3"), ("trimmed_mean", 4, 2, "2f < n")],
)
def test_preconditions_raise(name, n, f, text):
    G = np.zeros((n, 3))
    with pytest.raises(ValueError, match=rf"'f' parameter of .* must satisfy {text}"):
        AGGREGATORS[name][0](G, f=f)
    # the boundary case just inside the condition runs
    ok_n = next(k for k in range(n, 10 * n) if PRECONDITIONS[name][1](k, f))
    AGGREGATORS[name][0](np.random.default_rng(0).normal(size=(ok_n, 3)), f=f)


@pytest.mark.parametrize(
    ("values", "match"),
    [({"aggregator": "krum", "n_workers": 8, "alpha": 0.375}, "n > 2f \\+ 2"),
     ({"aggregator": "bulyan", "alpha": 0.25}, "n ≥ 4f \\+ 3.*Got 5.*f ≤ 4"),
     ({"aggregator": "trimmed_mean", "n_workers": 4, "f": 2}, "2f < n"),
     ({"aggregator": "krum", "f": -1}, "'f' parameter"),
     ({"aggregator": "centered_clipping", "clip_tau": 0.0}, "clip_tau"),
     ({"aggregator": "centered_clipping", "clip_iters": 0}, "clip_iters"),
     ({"aggregator": "krum", "weighted": True}, "weighted")],
)
def test_config_checks_preconditions_at_construction(values, match):
    with pytest.raises(ValueError, match=match):
        Config(**values)


def test_f_defaults_to_the_byzantine_count():
    cfg = Config(aggregator="bulyan", alpha=0.15)
    assert cfg.n_tolerated == 3 and cfg.aggregator_kwargs() == {"f": 3}
    assert Config(aggregator="krum", alpha=0.15, f=5).aggregator_kwargs() == {"f": 5}
    assert check_precondition("krum", 20, 8) == 8


def test_bad_state_is_rejected():
    with pytest.raises(ValueError, match="state"):
        centered_clipping(np.zeros((3, 2)), clip_tau=1.0, state=np.array([np.nan, 0.0]))


# ---- non-finite rows ------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(AGGREGATORS))
@pytest.mark.parametrize("bad", ["nan", "inf", "-inf", "huge"])
def test_non_finite_rows_never_leak(name, bad):
    if name == "mean" and bad == "huge":
        pytest.skip("the plain mean averages every finite row by definition (not robust)")
    rng = np.random.default_rng(3)
    G = rng.normal(size=(N, P))
    rows = [1, 7]
    value = {"nan": np.nan, "inf": np.inf, "-inf": -np.inf, "huge": 1e308}[bad]
    G[rows[0]] = value
    G[rows[1], 0] = value
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow/invalid RuntimeWarning either
        a = call(name, G)
    assert np.isfinite(a.vector).all()
    if bad != "huge":
        assert not a.kept[rows].any()
        # dropped and counted toward f: the rule on the finite rows with f − 2
        clean = np.delete(G, rows, axis=0)
        b = call(name, clean, f=PARAMS["f"] - 2)
        if name != "nbs":  # NBS screens ⌊βm⌉ of the m inputs, the bad ones first
            np.testing.assert_allclose(a.vector, b.vector, rtol=1e-12)
    else:  # huge finite rows are valid inputs, but a robust rule does not follow them
        assert np.abs(a.vector).max() < 1e3


def test_all_rows_invalid_raise_aggregation_error():
    G = np.full((7, 3), np.nan)
    for name in AGGREGATORS:
        with pytest.raises(AggregationError):
            call(name, G, f=0)


def test_weighted_mean_and_nbs():
    G = np.array([[1.0], [3.0], [100.0]])
    w = np.array([3.0, 1.0, 1.0])
    assert mean(G, weights=w).vector[0] == pytest.approx((3 + 3 + 100) / 5)
    assert nbs(G, 1 / 3, weights=w).vector[0] == pytest.approx((3 + 3) / 4)
    # unweighted calls are exactly the original rules
    assert mean(G).vector[0] == G.mean()


# ---- through the server ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def problem(data_dir):
    return load_problem(Config(n_workers=20, seed=0))


@pytest.mark.parametrize("name", sorted(set(AGGREGATORS) - {"mean", "nbs"}))
def test_every_rule_trains_under_attack(problem, name):
    """A short run with 3 aggressive byzantine workers: every robust rule makes progress
    where the plain mean diverges."""
    cfg = Config(aggregator=name, wrm=False, alpha=0.15, attack="aggressive", rounds=30,
                 eval_every=30, seed=0)
    err = train(cfg, problem=problem).final["test_error"]
    base = train(cfg.replace(aggregator="mean"), problem=problem).final["test_error"]
    assert err < 0.2 < base


def test_centered_clipping_state_lives_in_run_state(problem):
    """The centre is carried in RunState, survives a JSON snapshot, and a resumed run equals an
    uninterrupted one bit for bit."""
    from ray_robust.algorithm import RunState, Server, honest_gradients, run

    cfg = Config(aggregator="centered_clipping", wrm=False, alpha=0.15, attack="ipm",
                 rounds=12, seed=0)
    server = Server(cfg, problem)

    def compute(theta, t):
        return honest_gradients(cfg, server.model, theta, problem.shards, t)

    full = run(server, compute)
    state = server.initial_state()
    for t in range(5):
        server.step(state, *compute(state.theta, t))
    assert state.aggregator_state is not None
    state = RunState.from_dict(state.to_dict())
    resumed = run(server, compute, state=state)
    np.testing.assert_array_equal(resumed.theta, full.theta)


def test_stateless_rules_unchanged_by_state_field():
    for name in set(AGGREGATORS) - set(INITIAL_STATE):
        assert call(name, np.eye(N, P)).state is None


def test_all_rules_listed_with_their_fields():
    assert set(PRECONDITIONS) <= set(AGGREGATORS)
    for fn, fields in AGGREGATORS.values():
        assert callable(fn) and set(fields) <= set(Config.field_names())
    assert sorted(INITIAL_STATE) == ["centered_clipping"]


# ---- the comparison study --------------------------------------------------------------------


def test_comparison_study_quick_mode_draws_heatmaps(data_dir, tmp_path):
    """tune_configs/aggregators_vs_attacks.yaml in quick mode, run in-process (the Tune path of
    the same file runs in tests/test_studies.py), then the heatmaps and NBS's standing."""
    from pathlib import Path

    from ray_robust.comparison import draw_heatmaps, main, nbs_standing, panels
    from ray_robust.studies import aggregate, load_study, run_grid_local, tidy

    path = Path(__file__).resolve().parents[1] / "tune_configs" / "aggregators_vs_attacks.yaml"
    full = load_study(path)
    assert {a for a in full.param_space["aggregator"]["grid_search"]} == set(AGGREGATORS)
    from ray_robust.core.attacks import ATTACKS

    assert set(full.param_space["attack"]["grid_search"]) == {"none", *ATTACKS}
    study = load_study(path, quick=True)
    runs = run_grid_local(study)
    summary = aggregate(tidy(runs, study), study)
    assert len(summary) == 4 * 2  # 2 aggregators × 2 attacks × 1 wrm × 2 shift budgets
    tabs = panels(summary)
    assert set(tabs) == {(True, 0.0), (True, 0.3)}
    assert tabs[(True, 0.3)].shape == (2, 2)
    # the shift never helps: shifted error ≥ clean error cell by cell
    assert (tabs[(True, 0.3)].to_numpy() >= tabs[(True, 0.0)].to_numpy()).all()
    standing = nbs_standing(summary)
    assert set(standing["aggregator"]) == {"nbs", "krum"}
    png = draw_heatmaps(summary, tmp_path / "heat.png")
    assert png.read_bytes().startswith(b"\x89PNG") and png.stat().st_size > 5000
    csv = tmp_path / "aggregators_vs_attacks_summary.csv"
    summary.to_csv(csv, index=False)
    assert main([str(csv)]) == 0
    heatmap = tmp_path / "aggregators_vs_attacks_heatmap.png"
    assert heatmap.read_bytes().startswith(b"\x89PNG") and heatmap.stat().st_size > 5000
    written = pd.read_csv(tmp_path / "aggregators_vs_attacks_standing.csv")
    assert list(written.columns) == ["aggregator", "wrm", "shift_eps", "clean_attack_free",
                                     "mean_over_attacks", "worst_attack_error", "worst_attack",
                                     "rank_mean", "rank_worst"]
    assert len(written) == 2 * 2  # (WRM on) × 2 shift budgets panels × 2 aggregators
    assert written["clean_attack_free"].isna().all()  # the quick grid has no 'none' attack
    # each row from the run records (one seed: a grid point's mean is its run's error)
    for eps in (0.0, 0.3):
        error = {(r["config/aggregator"], r["config/attack"]): r[f"error@eps={eps:g}"]
                 for r in runs.to_dict("records")}
        panel = written[written["shift_eps"] == eps].set_index("aggregator")
        assert set(panel.index) == {"nbs", "krum"} and panel["wrm"].all()
        for agg, row in panel.iterrows():
            errs = {att: e for (a, att), e in error.items() if a == agg}
            assert row["mean_over_attacks"] == pytest.approx(np.mean(list(errs.values())))
            assert row["worst_attack_error"] == pytest.approx(max(errs.values()))
            assert errs[row["worst_attack"]] == pytest.approx(max(errs.values()))
        for col, rank in (("mean_over_attacks", "rank_mean"), ("worst_attack_error",
                                                             "rank_worst")):
            expected = [1 + int((panel[col] < v).sum()) for v in panel[col]]
            assert panel[rank].tolist() == expected


@pytest.mark.parametrize("name", sorted(set(AGGREGATORS) - {"mean"}))
def test_f_far_away_byzantine_rows_do_not_move_robust_rules(name):
    """f = 2 rows at 10⁶ (finite, so not dropped): every robust rule stays near the honest
    rows; the selection and coordinate-wise rules stay inside their coordinate-wise range."""
    rng = np.random.default_rng(11)
    G = rng.normal(size=(N, P))
    honest = G.copy()
    G[[4, 9]] = 1e6
    a = call(name, G, state=honest.mean(axis=0))
    assert np.linalg.norm(a.vector - honest.mean(axis=0)) < 2 * np.linalg.norm(honest, axis=1).max()
    if name in ("median", "trimmed_mean", "krum", "multi_krum", "bulyan", "nbs"):
        lo, hi = np.delete(G, [4, 9], axis=0).min(0), np.delete(G, [4, 9], axis=0).max(0)
        assert np.all((a.vector >= lo - 1e-12) & (a.vector <= hi + 1e-12))
        assert not a.kept[[4, 9]].any()


@pytest.mark.parametrize("d", [5, 5000])
@pytest.mark.parametrize("row_by_row_from", [1, 10**9])
def test_nbs_mean_is_the_kept_rows_mean_bit_for_bit(d, row_by_row_from, monkeypatch):
    """Both summation paths of NBS (one masked reduction; row by row for wide rows) give
    grads[kept].mean(axis=0) exactly, around screened and non-finite rows."""
    monkeypatch.setattr(aggregators, "ROW_BY_ROW_WIDTH", row_by_row_from)
    rng = np.random.default_rng(d)
    g = rng.standard_normal((40, d)) * rng.uniform(0.1, 10, size=(40, 1))
    g[[3, 17]] = np.nan
    g[25, 0] = np.inf
    out = nbs(g, beta=0.3)
    assert out.kept.sum() == 40 - 12 and not out.kept[[3, 17, 25]].any()
    np.testing.assert_array_equal(out.vector, g[out.kept].mean(axis=0))
