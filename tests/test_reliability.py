"""Any message, any crash (issue 7, points 1–3), for real over Ray.

Already covered in tests/test_ray_engine.py (not repeated here): ``ray.kill`` of worker actors
mid-run and their rejoining with their shards, stragglers past ``round_timeout``, every worker
dead → a clear ``AggregationError`` instead of a hang, checkpoints written by the Ray engine.
Here: the full malformed-message matrix × every aggregator, a worker actor whose process exits
by itself, the server actor killed mid-run then resumed from its checkpoint, and a Tune trial
whose process is killed, retried from its saved progress.

Design decision on 1e308-norm vectors: they are finite floats of the right shape, hence *valid*
messages (not counted as rejected). The robust rules screen them; the plain mean is poisoned by
them, its honest behaviour, but the sum overflows, and the server refuses a step whose G (or
θ − ηG) overflows: θ stays finite and the refusal is counted in ``steps_refused``.
"""

from __future__ import annotations

import gc
import os
import warnings
from pathlib import Path

import numpy as np
import pytest

from ray_robust.algorithm import Server, honest_gradients
from ray_robust.api import load_problem, resume, train
from ray_robust.checkpoint import load_checkpoint
from ray_robust.config import Config
from ray_robust.core.aggregators import AGGREGATORS, AggregationError
from ray_robust.engines.ray_engine import RayTrainer, ServerDiedError

pytestmark = pytest.mark.usefixtures("ray_session")

#: every kind of message a byzantine actor sends, two rounds each; True = a valid message
KINDS = {
    "none": False, "str": False, "list": False, "scalar": False, "zero_dim": False,
    "wrong_length": False, "two_d": False, "object": False, "complex": False, "bool": False,
    "int": False, "nan": False, "inf": False, "empty": False, "very_large": False,
    "huge_norm": True,
}
NAMES = list(KINDS)
ROUNDS_PER_KIND = 2
BAD = (1, 8, 14)  # three byzantine logical workers, in different actors of 4
VERY_LARGE = 1_000_000  # floats (8 MB): rejected by its shape, whatever the size


def make_payload(rank: int):
    """What byzantine worker ``rank`` sends in round t: kind NAMES[t // 2]. A closure (pickled
    by value), so Ray's worker processes need not import this test module."""
    names = list(NAMES)

    def send(theta, t):
        kind, p = names[(t // ROUNDS_PER_KIND) % len(names)], theta.size
        sign = 1.0 if rank % 2 else -1.0
        return {
            "none": lambda: None,
            "str": lambda: "not a gradient",
            "list": lambda: [0.0] * p,
            "scalar": lambda: np.float64(0.5),
            "zero_dim": lambda: np.array(0.5),
            "wrong_length": lambda: np.zeros(p - 1),
            "two_d": lambda: np.zeros((1, p)),
            "object": lambda: np.array([0.0] * p, dtype=object),
            "complex": lambda: np.zeros(p, dtype=complex),
            "bool": lambda: np.ones(p, dtype=bool),
            "int": lambda: np.zeros(p, dtype=np.int64),
            "nan": lambda: np.where(np.arange(p) == 0, np.nan, 0.1),
            "inf": lambda: np.where(np.arange(p) == 0, sign * np.inf, 0.1),
            "empty": lambda: np.empty(0),
            "very_large": lambda: np.zeros(VERY_LARGE),
            "huge_norm": lambda: np.full(p, sign * 1e308),
        }[kind]()

    return send


@pytest.fixture(scope="module")
def problem(data_dir):
    return load_problem(Config(seed=3))


@pytest.fixture(scope="module")
def byzantine_trainer(problem):
    """One trainer (4 worker actors) for the whole matrix: the kind changes with the round."""
    payload = {i: make_payload(i) for i in BAD}
    with RayTrainer(problem, actors=4, byzantine_payload=payload) as trainer:
        yield trainer


def _expected_step(cfg, server, problem, state_before, t):
    """θ_{t+1} computed directly: honest gradients, the byzantine rows as the server must see
    them (NaN = rejected, or the huge valid vector), the registry's rule, the step."""
    theta = state_before.theta
    grads, _ = honest_gradients(cfg, server.model, theta, problem.shards, t)
    msgs = grads.copy()
    kind = NAMES[t // ROUNDS_PER_KIND]
    for i in BAD:
        msgs[i] = make_payload(i)(theta, t) if KINDS[kind] else np.nan
    fn, _ = AGGREGATORS[cfg.aggregator]
    centre = state_before.aggregator_state  # centered clipping's; None for stateless rules
    extra = {} if centre is None else {"state": centre}
    with np.errstate(over="ignore", invalid="ignore"):
        G = fn(msgs, **cfg.aggregator_kwargs(), **extra).vector
        new = theta - cfg.eta * G
        if not (np.isfinite(np.linalg.norm(G)) and np.isfinite(new).all()):
            new = theta  # the server refuses a step that overflows
    return new, grads, kind


@pytest.mark.parametrize("aggregator", list(AGGREGATORS))
def test_malformed_message_matrix_over_ray(byzantine_trainer, problem, aggregator):
    """16 kinds of message × this aggregator, sent by 3 byzantine actors over Ray: no crash,
    θ finite every round, the malformed ones counted as rejected, and each round's θ equals
    the step computed directly from the honest gradients and the valid messages."""
    cfg = Config(seed=3, aggregator=aggregator, f=3, beta=0.15,
                 rounds=ROUNDS_PER_KIND * len(KINDS))
    states = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the mean's refused steps
        hist = byzantine_trainer(cfg, checkpoint=states.append, checkpoint_every=1)
    assert [s.round for s in states] == list(range(1, cfg.rounds + 1))
    server = Server(cfg, problem)
    before = server.initial_state()
    rows = hist.metrics.set_index("round")
    for t, after in enumerate(states):
        assert np.isfinite(after.theta).all()
        expected, honest, kind = _expected_step(cfg, server, problem, before, t)
        np.testing.assert_array_equal(after.theta, expected, err_msg=f"round {t}: {kind}")
        assert rows.loc[t + 1, "n_rejected"] == (0 if KINDS[kind] else len(BAD)), kind
        if not KINDS[kind] and aggregator in ("mean", "nbs", "trimmed_mean", "median"):
            # with f = βm = 3 rejected rows, these rules reduce to the mean (median) of the
            # 17 valid honest messages: an independent check of "the honest result"
            valid = np.delete(honest, BAD, axis=0)
            ref = np.median(valid, axis=0) if aggregator == "median" else valid.mean(axis=0)
            np.testing.assert_allclose(before.theta - after.theta, cfg.eta * ref,
                                       rtol=1e-9, atol=1e-15)
        before = after
    refused = rows["steps_refused"] if "steps_refused" in rows else 0 * rows["n_rejected"]
    if aggregator == "mean":  # 3 vectors of norm ~1e309 overflow the mean: both rounds refused
        assert refused.iloc[-1] == ROUNDS_PER_KIND
    else:  # the robust rules screen them
        assert refused.eq(0).all()


@pytest.mark.slow
def test_worker_process_exiting_by_itself_rejoins(problem):
    """A worker actor's process calls os._exit mid-run (not a ray.kill): its messages go
    missing, Ray restarts it (a new pid, its shards reloaded), it rejoins, the run completes."""
    import time

    def exit_once(theta, t):
        if t == 5:
            os._exit(1)
        time.sleep(0.01)  # slow rounds, so the restart (≈ 1–2 s) lands within the run
        return np.zeros(theta.size)

    cfg = Config(seed=3, rounds=300, eval_every=1, wrm=False)
    with RayTrainer(problem, actors=4, byzantine_payload={0: exit_once}) as trainer:
        pid_before = trainer.refresh_placement()[0]["pid"]
        hist = trainer(cfg)
        rejected = hist.metrics.set_index("round")["n_rejected"]
        assert rejected.loc[:5].eq(0).all()
        assert rejected.loc[6] == 5  # the dead actor's 5 logical workers
        assert rejected.iloc[-50:].eq(0).all()  # restarted and answering again
        assert np.isfinite(hist.theta).all()
        pid_after = trainer.refresh_placement()[0]["pid"]
        assert pid_after not in (None, pid_before)


def _live_trainer() -> RayTrainer:
    """The RayTrainer that train(engine='ray') made (to kill its server actor mid-run)."""
    return next(o for o in gc.get_objects()
                if isinstance(o, RayTrainer) and o._server is not None)


@pytest.mark.slow
def test_server_actor_killed_then_resumed_from_its_checkpoint(problem, tmp_path):
    """ray.kill of the server actor mid-run: the driver raises ServerDiedError naming the
    checkpoint folder; resume(dir, engine='ray') ends with the uninterrupted run's θ, bit for
    bit, and its full history."""
    import ray

    cfg = Config(seed=3, alpha=0.15, attack="intelligent", rounds=1000, eval_every=10)
    killed = []

    def kill_server(row):
        if row["round"] >= 200 and not killed:
            killed.append(row["round"])
            ray.kill(_live_trainer()._server, no_restart=True)

    with pytest.raises(ServerDiedError, match=rf"server actor died.*{tmp_path}.*resume\("):
        train(cfg, engine="ray", problem=problem, actors=2, checkpoint_dir=tmp_path,
              checkpoint_every=50, progress=kill_server, progress_every=10)
    assert killed
    _, state = load_checkpoint(tmp_path)
    assert 200 <= state.round < cfg.rounds  # the run really stopped midway
    resumed = resume(tmp_path, engine="ray", problem=problem, actors=2)
    reference = train(cfg, problem=problem)
    assert resumed.theta.tobytes() == reference.theta.tobytes()
    assert resumed.metrics["round"].tolist() == reference.metrics["round"].tolist()
    np.testing.assert_array_equal(resumed.metrics["train_loss"], reference.metrics["train_loss"])


@pytest.mark.slow
def test_tune_retries_a_failed_trial_with_max_failures(data_dir, tmp_path):
    """A trial that raises (its data file went missing after the study checked it against the
    data, a transient fault) is retried by Tune's FailureConfig (the study's max_failures) and
    then finishes; without retries it is recorded as errored with its message
    (tests/test_studies.py::test_failed_trials_are_reported_and_exit_nonzero)."""
    import shutil
    import threading
    import time

    from ray_robust.studies import run_study_full

    late = tmp_path / "late" / "spambase.data"
    late.parent.mkdir()
    shutil.copy(data_dir / "spambase.data", late)  # there when the study checks its points
    study = {"name": "retry", "max_failures": 20, "plot": {"x": "seed"}, "param_space": {
        "environment": "E1", "algorithm": "alg2", "rounds": 20, "seed": {"grid_search": [0]},
        "data_path": str(late)}}
    exp = tmp_path / "retry"
    failed_first = []

    def wait_for(condition) -> bool:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not condition():
            time.sleep(0.01)
        return condition()

    def remove_the_file_then_supply_it_after_the_first_failure():
        wait_for((exp / "study.json").is_file)  # checks done, trials not yet started
        late.unlink()
        failed_first.append(wait_for(lambda: any(exp.glob("*/error.txt"))))
        shutil.copy(data_dir / "spambase.data", late.with_suffix(".tmp"))
        os.replace(late.with_suffix(".tmp"), late)

    helper = threading.Thread(target=remove_the_file_then_supply_it_after_the_first_failure,
                              daemon=True)
    helper.start()
    res = run_study_full(study, storage=tmp_path, log=None)
    helper.join()
    assert failed_first == [True]
    assert res.num_errors == 0
    assert int(res.results["round"].iloc[0]) == 20


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="finds the trial in /proc")
def test_a_trial_whose_process_is_killed_is_retried_from_its_saved_progress(data_dir, tmp_path):
    """SIGKILL of a trial's worker process mid-run: Tune retries the trial (max_failures), which
    continues from the round it last saved in the study's progress store, and ends with the θ
    of an uninterrupted run, bit for bit."""
    import contextlib
    import json
    import signal
    import threading
    import time

    from ray_robust.studies import run_study_full, split_trial_config

    rounds, every = 3000, 100
    values = {"environment": "E1", "algorithm": "alg2", "rounds": rounds, "report_every": every,
              "seed": 0}
    study = {"name": "retry_mid", "max_failures": 2, "plot": {"x": "seed"},
             "param_space": {**values, "seed": {"grid_search": [0]}}}
    exp = tmp_path / "retry_mid"
    killed = []

    def ours(pid: int) -> bool:  # started by this test process's Ray (not another user's)
        while pid > 1:
            if pid == os.getpid():
                return True
            pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        return False

    def trial_processes() -> list[int]:  # Tune's function-trainable actors
        pids = []
        for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
            with contextlib.suppress(OSError):
                pid = int(cmdline.parent.name)
                if cmdline.read_bytes().startswith(b"ray::ImplicitFunc") and ours(pid):
                    pids.append(pid)
        return pids

    def kill_the_trial_midway():
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not res:
            for f in exp.glob("progress/*.json"):
                with contextlib.suppress(ValueError, OSError):  # (replaced while read)
                    saved = json.loads(f.read_text())["state"]["round"]
                    if 5 * every <= saved < rounds - 10 * every:
                        for pid in trial_processes():
                            os.kill(pid, signal.SIGKILL)
                        killed.append(saved)
                        return
            time.sleep(0.02)

    res = []
    helper = threading.Thread(target=kill_the_trial_midway, daemon=True)
    helper.start()
    res.append(run_study_full(study, storage=tmp_path, log=None))
    helper.join()
    assert killed, "the trial ended before it could be killed"
    assert res[0].num_errors == 0 and int(res[0].results["round"].iloc[0]) == rounds
    (trial_dir,) = exp.glob("trainable_*")
    history = [json.loads(ln) for ln in (trial_dir / "result.json").read_text().splitlines()]
    restarts = sorted({h["resumed_from"] for h in history})
    assert restarts[0] == 0 and len(restarts) == 2 and restarts[1] >= killed[0], restarts
    final = json.loads(next(trial_dir.glob("checkpoint_*/run_state.json")).read_text())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = train(split_trial_config(values)[0]).theta
    np.testing.assert_array_equal(np.asarray(final["state"]["theta"]), reference)


def test_in_process_aggregation_error_names_the_round(problem):
    """No valid message at all: the in-process server says which round, as the Ray engine does."""
    cfg = Config(rounds=5, seed=0)
    server = Server(cfg, problem)
    state = server.initial_state()
    grads, _ = honest_gradients(cfg, server.model, state.theta, problem.shards, 0)
    server.step(state, grads)
    with pytest.raises(AggregationError, match=r"^Round 2 of 5: NBS: no valid message"):
        server.step(state, [None] * cfg.n_workers)


def test_byzantine_rows_never_pass_for_honest_ones(problem):
    """When every honest message is lost (a Ray round timeout), the byzantine workers' rows are
    not averaged as if honest: they count as lost too, and the round fails with a clear error."""
    cfg = Config(rounds=5, seed=0, alpha=0.15, attack="aggressive", aggregator="mean")
    server = Server(cfg, problem)
    state = server.initial_state()
    grads, _ = honest_gradients(cfg, server.model, state.theta, problem.shards, 0)
    messages = [g if b else None for g, b in zip(grads, server.byzantine, strict=True)]
    with pytest.raises(AggregationError, match=r"^Round 1 of 5: mean: none of the 20"):
        server.step(state, messages)
