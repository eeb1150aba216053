"""The Ray engine (issue 3) against the in-process reference, on real Ray actors.

Every test uses the session's local Ray instance (``ray_session``); worker actors are created
once per packing and reused across tests, as ``reproduce table1`` reuses them across runs.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest

from ray_robust.algorithm import Server, honest_gradients, run
from ray_robust.api import load_problem, train
from ray_robust.checkpoint import load_checkpoint
from ray_robust.config import Config
from ray_robust.core.aggregators import AggregationError
from ray_robust.core.models import get_model
from ray_robust.engines.ray_engine import RayTrainer
from ray_robust.reproduce import PAPER_SETTING, format_table1, run_table1, summarize_table1

pytestmark = pytest.mark.usefixtures("ray_session")

ROUNDS = 30
BASE = {**PAPER_SETTING, "rounds": ROUNDS, "seed": 1, "alpha": 0.15, "shift_norm": "l1",
        "shift_eps": 0.3}


def make_config(**values) -> Config:
    return Config.from_dict({**BASE, **values})


@pytest.fixture(scope="module")
def problem(data_dir):
    return load_problem(make_config(algorithm="alg2"))


@pytest.fixture(scope="module")
def trainers(problem):
    """packing → a RayTrainer on the module's problem, created on first use (actors cost)."""
    made: dict = {}

    def get(actors):
        if actors not in made:
            made[actors] = RayTrainer(problem, actors=actors, round_timeout=30.0)
        return made[actors]

    yield get
    for trainer in made.values():
        trainer.close()


def assert_same_run(ray_hist, local_hist):
    np.testing.assert_array_equal(ray_hist.theta, local_hist.theta)  # bit for bit
    np.testing.assert_array_equal(ray_hist.byzantine, local_hist.byzantine)
    # every metric too, certified-ε statistics included (per-shard sums added with math.fsum)
    pd.testing.assert_frame_equal(ray_hist.metrics, local_hist.metrics, check_exact=True)


#: the cases of the fast loop (``-m "not slow"``); the other packings and pairs are slow
FAST_IDENTICAL = {("auto", "erm", "aggressive"), ("auto", "alg2", "aggressive"),
                  ("auto", "nbs", "intelligent")}


@pytest.mark.parametrize(("actors", "algorithm", "attack"), [
    pytest.param(actors, algorithm, attack, marks=() if (actors, algorithm, attack)
                 in FAST_IDENTICAL else pytest.mark.slow)
    for actors in ("auto", "per-worker") for algorithm in ("erm", "nbs", "dro", "alg2")
    for attack in ("aggressive", "intelligent")])
def test_bit_identical_to_local_engine(trainers, problem, actors, algorithm, attack):
    cfg = make_config(algorithm=algorithm, attack=attack)
    trainer = trainers(actors)
    # Spambase's shards (≈ 1.6 MiB) are below one actor's share of data: auto = one per node
    assert len(trainer.groups) == (20 if actors == "per-worker" else 1)
    assert_same_run(trainer(cfg), train(cfg, problem=problem))


@pytest.mark.parametrize("values", [
    dict(algorithm="alg2", attack="intelligent"),  # uneven groups: 7 + 7 + 6 shards
    dict(algorithm="alg2", attack="aggressive", epsilon=1e-3),  # certified ascent, wrm_* info
    dict(algorithm="dro", attack="none", alpha=0.0, eval_every=7),
    dict(algorithm="alg2", attack="label_flip"),  # shards poisoned inside honest_gradients
], ids=["uneven", "certified-eps", "eval-every", "label-flip"])
def test_bit_identical_three_actors(trainers, problem, values):
    cfg = make_config(**values)
    trainer = trainers(3)
    assert [len(g) for g in trainer.groups] == [7, 7, 6]
    assert_same_run(trainer(cfg), train(cfg, problem=problem))


def _busy_in_rounds(first: int, last: int):
    """A payload that takes 0.3 s in rounds [first, last) (so a kill lands mid-call) and
    sends a valid zero vector."""
    def payload(theta, t):
        if first <= t < last:
            time.sleep(0.3)
        return np.zeros(theta.size)

    return payload


@pytest.mark.slow
def test_killed_workers_rejoin_after_restart(problem):
    """Kill 3 of 20 worker actors mid-run (mid-call: they are busy in rounds 15–29): the run
    completes, their lost messages count as rejected, Ray restarts them (new processes, shards
    reloaded) and they contribute again."""
    import ray

    victims = [2, 9, 15]
    payload = {i: _busy_in_rounds(15, 30) for i in victims}
    with RayTrainer(problem, actors="per-worker", byzantine_payload=payload) as trainer:
        before = {i: trainer.refresh_placement()[i]["pid"] for i in victims}
        cfg = make_config(algorithm="alg2", attack="none", alpha=0.0, rounds=60)
        killed_at = []

        def kill_once(row):
            if row["round"] >= 20 and not killed_at:
                for i in victims:
                    ray.kill(trainer.worker_actors[i], no_restart=False)
                killed_at.append(row["round"])

        hist = trainer(cfg, progress=kill_once, progress_every=1)
        rejected = hist.metrics.set_index("round")["n_rejected"]
        assert killed_at and len(hist.metrics) == 60
        assert rejected.loc[: killed_at[0]].eq(0).all()
        assert rejected.sum() >= len(victims)  # the killed workers' lost messages
        assert rejected.max() <= len(victims)
        assert rejected.iloc[-20:].eq(0).all()  # all 20 workers' messages valid again
        assert np.isfinite(hist.theta).all()
        after = trainer.refresh_placement()
        assert all(after[i]["pid"] not in (None, before[i]) for i in victims)


@pytest.mark.slow
def test_restarted_actors_reload_their_shards(trainers, problem):
    """After a kill and restart, a run on the same actors is bit-identical again."""
    import ray

    trainer = trainers("per-worker")
    victims = (2, 9, 15)
    before = {i: trainer.refresh_placement()[i]["pid"] for i in victims}
    for i in victims:
        ray.kill(trainer.worker_actors[i], no_restart=False)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # until every victim answers from a new process
        now = trainer.refresh_placement()
        if all(now[i]["pid"] not in (None, before[i]) for i in victims):
            break
        time.sleep(0.2)
    cfg = make_config(algorithm="alg2", attack="aggressive")
    assert_same_run(trainer(cfg), train(cfg, problem=problem))


PAYLOADS = {
    0: None,
    3: "not a gradient",
    5: np.zeros(7),  # wrong shape
    7: lambda theta, t: np.full(theta.size, np.nan),
    11: lambda theta, t: np.where(np.arange(theta.size) == t % theta.size, np.inf, 1.0),
    12: [0.0] * 58,  # a list, not an array
    16: np.zeros((58, 1)),
}


@pytest.fixture(scope="module")
def malformed_trainer(problem):
    with RayTrainer(problem, actors=4, byzantine_payload=PAYLOADS) as trainer:
        yield trainer


@pytest.mark.parametrize("algorithm,attack", [("alg2", "none"), ("erm", "aggressive"),
                                              ("nbs", "intelligent")])
def test_malformed_messages_from_real_actors(malformed_trainer, problem, algorithm, attack):
    """Actors really send None, str, wrong shapes, NaN, Inf over Ray: every such message is
    rejected, the server never crashes, and θ equals a local run where they are missing."""
    cfg = make_config(algorithm=algorithm, attack=attack, rounds=20)
    hist = malformed_trainer(cfg)
    assert np.isfinite(hist.theta).all()
    server = Server(cfg, problem)
    bad = np.isin(np.arange(20), list(PAYLOADS))
    expected_rejected = int((bad & ~server.byzantine).sum()) if attack != "none" else bad.sum()
    assert hist.metrics["n_rejected"].eq(expected_rejected).all()

    def compute(theta, t):  # the local reference with those messages missing
        grads, info = honest_gradients(cfg, server.model, theta, problem.shards, t)
        msgs = list(grads)
        for i in PAYLOADS:
            msgs[i] = None
        return msgs, info

    np.testing.assert_array_equal(hist.theta, run(server, compute).theta)


@pytest.mark.slow
def test_stragglers_are_skipped_and_dead_workers_end_the_run_clearly(problem):
    """A worker actor slower than round_timeout: its workers' messages count as missing (the
    round does not wait for it). With every worker actor dead the run ends with a clear error
    at the driver instead of hanging."""
    import ray

    slow = {0: lambda theta, t: time.sleep(2.0) or np.zeros(theta.size)}
    cfg = make_config(algorithm="alg2", attack="none", alpha=0.0, rounds=3)
    with RayTrainer(problem, actors=2, round_timeout=0.5, byzantine_payload=slow) as trainer:
        t0 = time.perf_counter()
        hist = trainer(cfg)
        elapsed = time.perf_counter() - t0
        assert hist.metrics["n_rejected"].eq(10).all()  # the slow actor holds workers 0–9
        assert elapsed < 5.0  # ≈ round_timeout per round, not the 2 s per call
        for actor in trainer.worker_actors:
            ray.kill(actor, no_restart=True)
        with pytest.raises(AggregationError, match=r"Round 1 of 3: NBS: no valid message.*"
                                                   r"last worker error: ActorDiedError"):
            trainer(cfg)


@pytest.mark.slow
def test_a_stalled_actor_is_not_queued_behind_its_late_call(problem):
    """A stalled actor gets no new call while its late call runs (the other workers' rounds go
    on without waiting for it) and rejoins once that call has ended."""
    def stall_once(theta, t):
        if t == 0:
            time.sleep(1.5)
        return np.zeros(theta.size)

    def pace(theta, t):  # keeps every round ≈ 0.2 s long, within the timeout
        time.sleep(0.2)
        return np.zeros(theta.size)

    cfg = make_config(algorithm="nbs", attack="none", alpha=0.0, rounds=14)
    with RayTrainer(problem, actors=2, round_timeout=0.5,
                    byzantine_payload={0: stall_once, 10: pace}) as trainer:
        rejected = trainer(cfg).metrics["n_rejected"].tolist()
    assert rejected[0] == 10  # the stalled actor holds workers 0–9
    assert rejected[-4:] == [0, 0, 0, 0]  # it answers again once its late call ended


def test_malformed_actor_replies_never_crash_the_gather():
    """A reply is one bytes object (header, JSON statistics, k·p float64): any other value,
    another k or p, a wrong length or statistics that are not numbers leave that group's
    messages None; the statistics of the valid replies are merged."""
    from ray_robust.engines.ray_engine import _Gather
    from ray_robust.messages import REPLY_HEADER, REPLY_MAGIC, encode_reply

    gather = _Gather([None, None], [[0, 1], [2]], round_timeout=1.0)
    good = encode_reply(np.arange(10.0).reshape(2, 5), {"wrm_steps": 3, "wrm_sums": (1.5,)})
    other = encode_reply(np.arange(5.0).reshape(1, 5) + 10, {"wrm_steps": 4, "wrm_sums": (2.5,)})
    messages, info = gather._assemble([good, other], p=5)
    np.testing.assert_array_equal(messages, np.arange(15.0).reshape(3, 5))
    assert info == {"wrm_steps": 7, "wrm_sums": (1.5, 2.5)}
    text = b'{"wrm_steps":"x"}'
    for bad in (
        None, b"", bytes(39), good, encode_reply(np.zeros((1, 6)), {}), other[:-1], other + b"0",
        (np.zeros((1, 5)).tobytes(), {}),  # the old (bytes, info) tuple: not bytes
        bytearray(other),  # only exact bytes
        REPLY_HEADER.pack(REPLY_MAGIC, 1, 5, len(text)) + text + bytes(40),
        REPLY_HEADER.pack(b"XXXX", 1, 5, 2) + b"{}" + bytes(40),
    ):
        messages, info = gather._assemble([good, bad], p=5)
        assert len(messages) == 3 and messages[2] is None, bad
        np.testing.assert_array_equal(messages[1], np.arange(5.0, 10.0))
        assert info == {"wrm_steps": 3, "wrm_sums": (1.5,)}


def test_the_server_actor_gets_no_shard_features(problem):
    """The server actor's copy of the problem drops the shards' features (only the worker
    actors read them) and keeps what the server uses: shard sizes, train and test sets."""
    from ray_robust.engines.ray_engine import _server_problem

    light = _server_problem(problem)
    assert light.shards.X.size == 0 and light.shards.n_workers == problem.shards.n_workers
    np.testing.assert_array_equal(light.shards.sizes, problem.shards.sizes)
    assert light.X_train is problem.X_train and light.X_test is problem.X_test
    cfg = make_config(algorithm="alg2", attack="aggressive", weighted=True, rounds=3)
    assert_same_run(run(Server(cfg, light), lambda th, t: honest_gradients(
        cfg, get_model(cfg.model), th, problem.shards, t)), train(cfg, problem=problem))


def test_run_launches_the_next_round_before_evaluating(problem):
    """run() calls compute.launch(θ_{t+1}, t + 1) once θ_{t+1} is known, before the server's
    evaluation, and never past the last round; compute then gets that very θ."""
    cfg = make_config(algorithm="alg2", attack="none", rounds=4)
    server = Server(cfg, problem)
    events: list[tuple] = []

    class Compute:
        def __call__(self, theta, t):
            events.append(("compute", t, theta.tobytes()))
            return honest_gradients(cfg, server.model, theta, problem.shards, t)

        def launch(self, theta, t):
            events.append(("launch", t, theta.tobytes()))

    evaluate = server.evaluate
    server.evaluate = lambda theta: events.append(("evaluate",)) or evaluate(theta)
    run(server, Compute())
    assert [e[:2] for e in events] == [
        ("compute", 0), ("launch", 1), ("evaluate",), ("compute", 1), ("launch", 2),
        ("evaluate",), ("compute", 2), ("launch", 3), ("evaluate",), ("compute", 3),
        ("evaluate",)]
    launched = [e for e in events if e[0] == "launch"]
    computed = [e for e in events if e[0] == "compute"][1:]
    assert [e[1:] for e in launched] == [e[1:] for e in computed]


def test_launched_round_is_collected_only_for_the_same_theta(trainers, problem):
    """The pipelined gather (run() launches round t+1 before the server's evaluation):
    compute(θ, t) collects a launched round only when θ's bits and t match; otherwise the
    launch is dropped and the round computed for the θ asked for."""
    from ray import cloudpickle

    from ray_robust.engines.ray_engine import _Gather

    cfg = make_config(algorithm="alg2", attack="none")
    trainer = trainers("auto")
    gather = _Gather(trainer.worker_actors, trainer.groups, round_timeout=30.0)
    server = Server(cfg, problem)
    theta_a = server.initial_state().theta
    theta_b = theta_a + 0.01

    def local(theta, t):
        return honest_gradients(cfg, server.model, theta, problem.shards, t)[0]

    blob = cloudpickle.dumps(cfg)
    gather.launch("compute", blob, theta_a, 0)
    messages, _ = gather("compute", blob, theta_b, 0)  # not what was launched
    np.testing.assert_array_equal(messages, local(theta_b, 0))
    gather.launch("compute", blob, theta_b, 1)
    messages, _ = gather("compute", blob, theta_b.copy(), 1)  # the launched round
    np.testing.assert_array_equal(messages, local(theta_b, 1))
    assert gather._pending is None and not gather._busy


def test_progress_reaches_the_driver(trainers, problem):
    rows = []
    hist = trainers("auto")(make_config(algorithm="alg2", attack="aggressive"),
                           progress=rows.append, progress_every=10)
    assert [r["round"] for r in rows] == [10, 20, 30]
    assert rows[-1]["train_loss"] == hist.final["train_loss"]


def test_warnings_of_the_server_reach_the_driver(trainers, problem):
    from ray_robust.config import GuaranteeWarning

    cfg = make_config(algorithm="dro", attack="aggressive")
    with pytest.warns(GuaranteeWarning, match="not provably strongly concave") as local:
        train(cfg, problem=problem)
    with pytest.warns(GuaranteeWarning, match="not provably strongly concave") as remote:
        trainers("auto")(cfg)
    assert [str(w.message) for w in remote] == [str(w.message) for w in local]


def test_configs_must_match_the_trainers_problem(trainers):
    trainer = trainers("auto")
    trainer(make_config(algorithm="erm", rounds=1))
    with pytest.raises(ValueError, match="n_workers = 10 but this RayTrainer holds 20 shards"):
        trainer(make_config(algorithm="erm", n_workers=10, rounds=1))
    with pytest.raises(ValueError, match=r"another problem: the config has seed = 2 \(trainer: "
                                         r"1\); make a new RayTrainer"):
        trainer(make_config(algorithm="erm", seed=2, rounds=1))


@pytest.mark.parametrize("options,match", [
    (dict(actors="many"), "'actors' parameter of the Ray engine must be 'auto', 'per-worker'"),
    (dict(actors=21), r"an int in \[1, 20\]. Got 21"),
    (dict(round_timeout=0), "'round_timeout' parameter of the Ray engine"),
    (dict(byzantine_payload={20: None}), "'byzantine_payload' parameter"),
])
def test_invalid_options(problem, options, match):
    with pytest.raises(ValueError, match=match):
        RayTrainer(problem, **options)


def test_compute_fn_gathers_in_the_calling_process(trainers, problem):
    cfg = make_config(algorithm="nbs", attack="intelligent")
    server = Server(cfg, problem)
    assert_same_run(run(server, trainers("auto").compute_fn(cfg)), train(cfg, problem=problem))


@pytest.mark.slow
def test_train_api_with_checkpoint_and_resume(trainers, problem, tmp_path):
    """train(engine='ray') uses the running Ray (and leaves it up); checkpoints and resume
    give the local engine's θ."""
    import ray

    cfg = make_config(algorithm="alg2", attack="intelligent")
    local = train(cfg, problem=problem)
    hist = train(cfg, engine="ray", problem=problem, actors=2, checkpoint_dir=tmp_path,
                 checkpoint_every=10)
    assert ray.is_initialized()
    assert_same_run(hist, local)
    saved_cfg, state = load_checkpoint(tmp_path)
    assert saved_cfg == cfg and state.round == ROUNDS
    np.testing.assert_array_equal(state.theta, local.theta)
    # Resume on Ray from a local run stopped after 10 rounds.
    first = make_config(algorithm="alg2", attack="intelligent", rounds=10)
    server = Server(first, problem)
    state = server.initial_state()
    run(server, lambda th, t: honest_gradients(first, server.model, th, problem.shards, t),
        state=state)
    resumed = trainers("auto")(cfg, state=state)
    assert_same_run(resumed, local)


def _table(text: str) -> list[str]:
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("env "))
    return lines[start:start + 6]


@pytest.mark.slow
def test_cli_reproduce_table1_on_ray_prints_the_local_table(ray_session, data_dir, tmp_path):
    """The CLI joins a running Ray instance (here the session's) with --address, as it would
    join a cluster's head; an explicit address needs RAY_AUTH_MODE=token (Ray 2.60's default
    token authentication)."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(RAY_ROBUST_DATA_DIR=str(data_dir), RAY_AUTH_MODE="token")
    address = ray_session.get_runtime_context().gcs_address
    proc = subprocess.run(
        [sys.executable, "-m", "ray_robust.cli", "reproduce", "table1", "--engine", "ray",
         "--seeds", "1", "--rounds", "20", "--out", str(tmp_path), "--address", address],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    local = format_table1(summarize_table1(run_table1([0], rounds=20)))
    assert _table(proc.stdout) == _table(local)


@pytest.mark.parametrize(("m", "cpus", "nodes", "mib", "want"), [
    (20, 2, 1, 1.6, 1),      # Spambase on a laptop: one actor (the calls cost more than the split)
    (20, 3, 3, 1.6, 3),      # a 3-node cluster: one actor per node, whatever the data size
    (100, 2, 1, 1280, 2),    # large data: one per CPU
    (100, 8, 1, 70, 3),      # in between: one per 32 MiB
    (2, 8, 4, 1280, 2),      # never more than m
])
def test_auto_actor_count(m, cpus, nodes, mib, want):
    from ray_robust.engines.ray_engine import auto_actor_count

    assert auto_actor_count(m, cpus, nodes, int(mib * 2**20)) == want
