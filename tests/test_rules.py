"""The aggregation-rule protocol (issue 13): rules built once, chained pre-aggregation steps,
carried state, the adversary in one place and the named seed streams."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ray_robust.adversary import Adversary, byzantine_mask
from ray_robust.algorithm import Server, build_rule_for
from ray_robust.api import load_problem
from ray_robust.config import Config
from ray_robust.core.aggregators import AGGREGATORS, centered_clipping, nbs
from ray_robust.core.preaggregation import clipping
from ray_robust.core.rules import INITIAL_STATE, Rule, build_rule, chain, clip
from ray_robust.seeds import STREAMS, SeedStreams

#: hyperparameters for every rule (f = 2 of n = 13 satisfies Bulyan's n ≥ 4f + 3)
PARAMS = {"beta": 0.2, "f": 2, "clip_tau": 0.5, "clip_iters": 3}
N, P = 13, 6


def rule_for(name: str, **over) -> Rule:
    fields = AGGREGATORS[name][1]
    return build_rule(name, n_inputs=N, **{k: over.get(k, PARAMS[k]) for k in fields})


# ---- every registered rule follows the protocol -----------------------------------------------


@pytest.mark.parametrize("name", sorted(AGGREGATORS))
def test_every_rule_follows_the_protocol(name):
    """rule(messages, state) -> ((p,) G, state, info with the (m,) kept mask and n_screened),
    G bit for bit the pure function's; the state is None unless the rule carries one; the
    messages are not modified and a second call with the same inputs gives the same output."""
    rng = np.random.default_rng(0)
    G = rng.normal(size=(N, P))
    G[3] *= 30
    G[5] = np.nan
    before = G.copy()
    rule = rule_for(name)
    state = rule.init_state(P)
    vector, new_state, info = rule(G, state)
    assert vector.shape == (P,) and np.isfinite(vector).all()
    assert info["kept"].shape == (N,) and info["kept"].dtype == bool and not info["kept"][5]
    assert info["n_screened"] == N - int(info["kept"].sum())
    fn, fields = AGGREGATORS[name]
    extra = {"state": state} if state is not None else {}
    pure = fn(G, **{k: PARAMS[k] for k in fields}, **extra)
    np.testing.assert_array_equal(vector, pure.vector)
    np.testing.assert_array_equal(info["kept"], pure.kept)
    if name in INITIAL_STATE:
        assert state.shape == (P,) and new_state.shape == (P,)
    else:
        assert state is None and new_state is None
    np.testing.assert_array_equal(G, before)
    again = rule(G, state)
    np.testing.assert_array_equal(again[0], vector)
    with pytest.raises(ValueError, match=f"built for n_inputs = {N} messages. Got {N - 1}"):
        rule(G[1:], state)


# ---- built once: hyperparameters and preconditions checked at build time ---------------------


@pytest.mark.parametrize(
    ("name", "n", "f", "match"),
    [("krum", 6, 2, r"'f' parameter of Krum must satisfy n > 2f \+ 2 \(Blanchard et al\. "
                    r"2017\) with n = 6 inputs\. Got 2 instead\. Use f ≤ 1"),
     ("multi_krum", 4, 1, r"'f' parameter of Multi-Krum must satisfy n > 2f \+ 2"),
     ("bulyan", 10, 2, r"'f' parameter of Bulyan must satisfy n ≥ 4f \+ 3 .* Use f ≤ 1"),
     ("trimmed_mean", 4, 2, r"'f' parameter of the trimmed mean must satisfy 2f < n")],
)
def test_precondition_is_checked_at_build(name, n, f, match):
    with pytest.raises(ValueError, match=match):
        build_rule(name, n_inputs=n, f=f)
    ok_n = next(k for k in range(n, 10 * n) if k > 4 * f + 2)  # inside every condition
    rule = build_rule(name, n_inputs=ok_n, f=f)
    assert rule.hyperparams == {"f": f}
    assert rule(np.random.default_rng(0).normal(size=(ok_n, 3)))[0].shape == (3,)


@pytest.mark.parametrize(
    ("name", "hyperparams", "match"),
    [("nbs", {"beta": 1.0}, r"'beta' parameter of NBS must be a finite real number in \[0, 1\)"),
     ("nbs", {"beta": 0.99}, r"'beta' parameter of NBS must leave at least one input"),
     ("centered_clipping", {"clip_tau": 0.0}, r"'clip_tau' parameter of the centered clipping"),
     ("centered_clipping", {"clip_tau": 1.0, "clip_iters": 0}, r"'clip_iters'"),
     ("krum", {"f": -1}, r"'f' parameter of Krum must be an integer >= 0"),
     ("krum", {}, r"The rule 'krum' needs the hyperparameter\(s\) \['f'\]"),
     ("median", {"beta": 0.1}, r"Unknown hyperparameter\(s\) \['beta'\] of the rule 'median'"),
     ("mean", {"weights": [1.0, 2.0]}, r"'weights' parameter of the mean must be a vector of 5"),
     ("avg", {}, r"'name' parameter of build_rule must be one of"),
     ("krum", {"f": 1.5}, r"'f' parameter of Krum must be an integer")],
)
def test_bad_hyperparameters_fail_at_build(name, hyperparams, match):
    with pytest.raises(ValueError, match=match):
        build_rule(name, n_inputs=5, **hyperparams)


def test_rule_without_n_inputs_checks_at_call_as_the_pure_function():
    rule = build_rule("krum", f=2)
    assert rule.n_inputs is None
    with pytest.raises(ValueError, match=r"n > 2f \+ 2"):
        rule(np.zeros((6, 2)))
    assert rule(np.random.default_rng(0).normal(size=(7, 2)))[0].shape == (2,)


def test_build_rule_for_maps_the_config(data_dir):
    """f resolved from alpha (n_tolerated), weighted NBS by the shard sizes, as the Server."""
    problem = load_problem(Config(n_workers=20, seed=0, sharding="quantity"))
    sizes = problem.shards.sizes
    cfg = Config(aggregator="nbs", weighted=True, beta=0.2, alpha=0.1, sharding="quantity")
    rule = build_rule_for(cfg, sizes)
    G = np.random.default_rng(1).normal(size=(20, 4))
    np.testing.assert_array_equal(rule(G)[0], nbs(G, 0.2, weights=sizes.astype(float)).vector)
    assert not np.array_equal(rule(G)[0], nbs(G, 0.2).vector)  # the sizes are uneven
    with pytest.raises(ValueError, match="pass shard_sizes"):
        build_rule_for(cfg)
    krum_rule = build_rule_for(Config(aggregator="bulyan", alpha=0.15))
    assert krum_rule.hyperparams == {"f": 3} and krum_rule.n_inputs == 20
    server = Server(cfg, problem)
    assert server.rule.name == "nbs" and server.rule.n_inputs == 20


# ---- stateful: centered clipping carries its centre -------------------------------------------


def test_centered_clipping_carries_its_centre():
    """Two rounds by hand: τ = 1, one iteration, from the centre 0 the first round."""
    rule = build_rule("centered_clipping", n_inputs=3, clip_tau=1.0)
    X = np.array([[2.0, 0.0], [0.0, 0.0], [0.0, 0.5]])
    state = rule.init_state(2)
    np.testing.assert_array_equal(state, [0.0, 0.0])
    G1, state, info = rule(X, state)
    # [2, 0] is clipped to [1, 0]; the other two are inside the ball: v = ([1, 0] + [0, 0.5])/3
    np.testing.assert_allclose(G1, [1 / 3, 1 / 6], rtol=1e-15)
    np.testing.assert_array_equal(state, G1)
    assert info["kept"].all() and info["n_screened"] == 0
    G2, state2, _ = rule(X, state)
    # round 2 from v = [1/3, 1/6]: x − v = [5/3, −1/6] (norm √101/6 > 1, clipped to unit
    # length), [−1/3, −1/6] and [−1/3, 1/3] (inside): v + their mean
    r = math.sqrt(101) / 6
    expected = np.array([1 / 3, 1 / 6]) + (
        np.array([5 / 3, -1 / 6]) / r + np.array([-1 / 3, -1 / 6]) + np.array([-1 / 3, 1 / 3])
    ) / 3
    np.testing.assert_allclose(G2, expected, rtol=1e-14)
    np.testing.assert_array_equal(state2, G2)
    # the carried state is what changes round 2: from the centre 0 again it would be G1
    np.testing.assert_array_equal(rule(X, rule.init_state(2))[0], G1)
    np.testing.assert_array_equal(G2, centered_clipping(X, 1.0, state=G1).vector)


# ---- pre-aggregation steps and chain ---------------------------------------------------------


def test_clipping_by_hand():
    X = np.array([[3.0, 4.0], [0.3, 0.4], [np.nan, 1.0], [np.inf, 0.0], [1e308, 1e308]])
    out = clipping(X, 1.0)
    np.testing.assert_allclose(out[0], [0.6, 0.8], rtol=1e-15)  # norm 5 → 1
    np.testing.assert_array_equal(out[1], X[1])  # inside the ball: unchanged, bit for bit
    assert not np.isfinite(out[2]).all() and not np.isfinite(out[3]).all()  # still rejected
    np.testing.assert_allclose(out[4], [1 / math.sqrt(2)] * 2, rtol=1e-15)  # norm overflows
    assert X[0, 0] == 3.0  # the input is not modified
    with pytest.raises(ValueError, match=r"'tau' parameter of clipping"):
        clipping(X, 0.0)
    with pytest.raises(ValueError, match=r"'tau' parameter of clipping"):
        clip(-1.0)
    with pytest.raises(ValueError, match=r"\(m, p\) array"):
        clipping(np.ones(3), 1.0)


def test_chain_clips_before_the_rule():
    """chain(clip(1), mean): [3, 4] → [0.6, 0.8], [0, 1] and [0.3, 0.4] unchanged; mean."""
    X = np.array([[3.0, 4.0], [0.0, 1.0], [0.3, 0.4]])
    rule = chain(clip(1.0), build_rule("mean", n_inputs=3))
    G, state, info = rule(X)
    np.testing.assert_allclose(G, [0.9 / 3, 2.2 / 3], rtol=1e-15)
    assert state is None and info["kept"].all()
    assert rule.name == "clipping(tau=1) → mean" and rule.n_inputs == 3
    np.testing.assert_allclose(build_rule("mean")(X)[0], [3.3 / 3, 5.4 / 3], rtol=1e-15)
    # any function messages → messages is a step; steps apply in order (clip, then double)
    doubled = chain(clip(1.0), lambda g: 2 * g, build_rule("mean"))
    np.testing.assert_allclose(doubled(X)[0], [1.8 / 3, 4.4 / 3], rtol=1e-15)
    # clipping leaves the outlier in but bounds it: Krum (f = 1 of 5) still picks an honest row
    Y = np.array([[0.1, 0.0], [0.0, 0.1], [0.1, 0.1], [0.05, 0.05], [100.0, 0.0]])
    G, _, info = chain(clip(1.0), build_rule("krum", n_inputs=5, f=1))(Y)
    assert not info["kept"][4] and info["kept"].sum() == 1
    np.testing.assert_array_equal(G, Y[info["kept"]][0])


def test_chain_keeps_the_rule_state():
    X = np.array([[2.0, 0.0], [0.0, 0.0], [0.0, 0.5]])
    cc = build_rule("centered_clipping", n_inputs=3, clip_tau=1.0)
    rule = chain(clip(10.0), cc)  # a radius no row reaches: the chain equals the rule
    state = rule.init_state(2)
    for _ in range(3):
        expected = cc(X, state)
        G, state, _ = rule(X, state)
        np.testing.assert_array_equal(G, expected[0])
        np.testing.assert_array_equal(state, expected[1])


@pytest.mark.parametrize(
    ("steps", "match"),
    [((), "Got nothing last"), ((clip(1.0),), "Got Step last"),
     ((build_rule("mean"), build_rule("median")), "Got the rule 'mean' before the rule 'median'"),
     ((3, build_rule("mean")), "Got 3 before the rule 'mean'")],
)
def test_chain_needs_steps_then_one_rule(steps, match):
    with pytest.raises(ValueError, match=match):
        chain(*steps)


# ---- the adversary and the seed streams -----------------------------------------------------


def test_seed_streams_are_the_spawned_children():
    """The named streams are exactly SeedSequence(seed).spawn(…)[i] (results unchanged)."""
    for seed in (0, 7, 2**40):
        children = np.random.SeedSequence(seed).spawn(5)
        streams = SeedStreams(seed)
        for name in ("data", "init", "byzantine", "attack"):
            np.testing.assert_array_equal(getattr(streams, name).generate_state(4),
                                          children[STREAMS[name]].generate_state(4))
        flip = children[STREAMS["label_flip"]].spawn(4)[3]
        np.testing.assert_array_equal(streams.label_flip(3).generate_state(4),
                                      flip.generate_state(4))
    assert sorted(STREAMS.values()) == list(range(len(STREAMS)))


def test_adversary_forges_the_byzantine_rows_at_the_server():
    cfg = Config(n_workers=10, alpha=0.2, attack="aggressive", seed=1)
    adv = Adversary.from_config(cfg)
    np.testing.assert_array_equal(adv.byzantine, byzantine_mask(cfg))
    assert adv.n_byzantine == 2 and adv.forges_messages and not adv.poisons_data
    G = np.random.default_rng(0).normal(size=(10, 3))
    rejected = np.zeros(10, dtype=bool)
    rejected[np.flatnonzero(~adv.byzantine)[0]] = True
    G[rejected] = np.nan
    honest = G[~adv.byzantine & ~rejected]
    out, rej = adv.forge(G.copy(), rejected, np.random.default_rng(0))
    np.testing.assert_array_equal(out[adv.byzantine], np.tile(-10 * honest.mean(axis=0), (2, 1)))
    np.testing.assert_array_equal(rej, rejected)
    # nothing honest arrived: nothing to attack with; the byzantine rows count as lost
    out, rej = adv.forge(np.full((10, 3), np.nan), np.ones(10, dtype=bool),
                         np.random.default_rng(0))
    assert rej.all() and np.isnan(out).all()
    none = Adversary.from_config(cfg.replace(attack="none"))
    out, rej = none.forge(G, rejected, np.random.default_rng(0))
    assert out is G and rej is rejected
    assert Adversary.from_config(cfg.replace(attack="label_flip")).poisons_data
