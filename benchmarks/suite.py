"""The performance benchmarks P1–P6 of issue 8, each a function ``(quick) -> list[Result]``.

Every ratio is measured side by side in one run (modes interleaved, medians); see
:mod:`benchmarks.common`. Full sizes are the issue's; ``quick`` shrinks each to seconds so CI
checks the code still runs (its ratios mean nothing).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from ray_robust.algorithm import honest_gradients
from ray_robust.config import Config
from ray_robust.core.aggregators import nbs
from ray_robust.core.models import get_model
from ray_robust.data import Shards, make_synthetic, prepare

from .common import (
    PeakSampler,
    Result,
    blas_threads,
    interleaved,
    local_round_seconds,
    ray_pss,
    seconds_of,
)

ROOT = Path(__file__).resolve().parents[1]
TABLE1 = ROOT / "tune_configs" / "table1.yaml"
MiB = 2.0**20


def _config(**values) -> Config:
    return Config.from_dict(values)


def _synthetic_problem(n: int, d: int, m: int):
    """make_synthetic + prepare without standardization (x ~ N(0, I) already), no extra copy
    of the raw data kept."""
    X, y = make_synthetic(n, d, seed=0)
    problem = prepare(X, y, n_workers=m, standardize="none", seed=0)
    del X, y
    return problem


def _data_bytes(problem) -> int:
    return problem.X_train.nbytes + problem.X_test.nbytes


# ---- P1: paper scale, Ray round vs no-op round trip + in-process round ---------------------


def p1(quick: bool) -> list[Result]:
    from ray_robust.api import load_problem
    from ray_robust.engines.ray_engine import RayTrainer
    from ray_robust.reproduce import ENVIRONMENTS, PAPER_SETTING

    rounds, skip, repeats = (20, 5, 1) if quick else (200, 20, 5)
    cfg = _config(**{**PAPER_SETTING, **ENVIRONMENTS["E1"], "algorithm": "alg2",
                     "rounds": rounds, "seed": 0})
    problem = load_problem(cfg)
    with RayTrainer(problem, actors="auto") as trainer, \
            RayTrainer(problem, actors=2) as pair:
        def ray_round(tr):
            tr(cfg)
            return tr.round_seconds()[skip:]

        ms = interleaved({
            "local": lambda: local_round_seconds(cfg, problem, skip),
            "ray": lambda: ray_round(trainer),
            "noop": lambda: trainer.time_noop(cfg, rounds)[skip:],
            "ray 2": lambda: ray_round(pair),
            "noop 2": lambda: pair.time_noop(cfg, rounds)[skip:],
        }, repeats)
        n_actors = len(trainer.groups)
    work = f"Spambase, m = 20, T_z = 10, Alg. 2 (E1), {n_actors} worker actor(s)"
    return [
        Result("P1", "ray auto ÷ (noop + in-process) per round",
               ms["ray"] / (ms["noop"] + ms["local"]), "≤ 1.3", ms["ray"],
               ms["noop"] + ms["local"],
               note=f"{work}; noop {1e3 * ms['noop']:.2f} ms, in-process "
                    f"{1e3 * ms['local']:.3f} ms"),
        Result("P1", "ray auto ÷ in-process per round", ms["ray"] / ms["local"], "",
               ms["ray"], ms["local"], note=work),
        Result("P1", "ray, 2 worker actors ÷ (their noop + in-process) per round",
               ms["ray 2"] / (ms["noop 2"] + ms["local"]), "", ms["ray 2"],
               ms["noop 2"] + ms["local"],
               note=f"the same run on actors=2 (one per CPU): noop {1e3 * ms['noop 2']:.2f} ms; "
                    f"ray 2 actors ÷ ray auto = {ms['ray 2'] / ms['ray']:.2f}"),
    ]


# ---- P2 and P5: 2,000,000 × 100, m = 100 ---------------------------------------------------


def p2_p5(quick: bool, ray_too: bool = True) -> list[Result]:
    n, d, m = (20_000, 20, 10) if quick else (2_000_000, 100, 100)
    rounds, skip, repeats = (4, 1, 1) if quick else (6, 1, 3)
    problem = _synthetic_problem(n, d, m)
    base = dict(n_workers=m, t_z=10, lam=3.0, eta_z=0.05, eta=1.0, rounds=rounds,
                eval_every=rounds, standardize="none", seed=0)
    alg2, erm = _config(**base, algorithm="alg2"), _config(**base, algorithm="erm")
    modes = {
        "alg2": lambda: local_round_seconds(alg2, problem, skip),
        "erm": lambda: local_round_seconds(erm, problem, skip),
    }
    model = get_model("logistic")
    theta = model.init(d, np.random.default_rng(0))
    halves = [slice(0, m // 2), slice(m // 2, m)]
    sh = problem.shards
    views = [Shards(sh.X[h], sh.y[h], sh.weights[h], sh.worker_ids[h]) for h in halves]

    def one(shards) -> float:
        return seconds_of(lambda: honest_gradients(alg2, model, theta, shards, 0))

    def one_core() -> np.ndarray:
        with _one_thread():
            return local_round_seconds(alg2, problem, skip)

    def read(X: np.ndarray) -> np.ndarray:  # one streaming pass over the features
        return np.add.reduce(X.reshape(-1, X.shape[-1]), axis=0)

    modes["alg2, one core"] = one_core
    with ThreadPoolExecutor(2) as pool:  # numpy releases the GIL: the no-Ray ceiling
        def grads() -> float:
            with _one_thread():
                return one(sh)

        def threads() -> float:
            with _one_thread():
                return seconds_of(lambda: list(pool.map(one, views)))

        modes["grads"], modes["threads"] = grads, threads
        modes["read"] = lambda: seconds_of(lambda: read(sh.X))
        modes["read, 2 threads"] = lambda: seconds_of(
            lambda: list(pool.map(read, [v.X for v in views])))
        out = _p2_p5(problem, modes, alg2, repeats, skip, ray_too,
                     f"synthetic {n:,} × {d}, m = {m}, T_z = 10, evaluated once at round "
                     f"T = {rounds} (eval_every = T: per-round times exclude the train-loss "
                     "pass)")
    return out


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """OpenBLAS and the WRM fast path's kernel on one thread each inside the block (the kernel
    reads ``$RAY_ROBUST_WRM_THREADS`` at each call)."""
    before = os.environ.get("RAY_ROBUST_WRM_THREADS")
    os.environ["RAY_ROBUST_WRM_THREADS"] = "1"
    try:
        with blas_threads(1):
            yield
    finally:
        if before is None:
            del os.environ["RAY_ROBUST_WRM_THREADS"]
        else:
            os.environ["RAY_ROBUST_WRM_THREADS"] = before


def _p2_p5(problem, modes, alg2, repeats, skip, ray_too, work) -> list[Result]:
    out: list[Result] = []
    if ray_too:
        from ray_robust.engines.ray_engine import RayTrainer

        trainer = None

        def make():
            nonlocal trainer
            trainer = RayTrainer(problem, actors="auto")

        startup = seconds_of(make)
        assert trainer is not None

        def ray_round():
            trainer(alg2)
            return trainer.round_seconds()[skip:]

        modes["ray"] = ray_round
        try:
            ms = interleaved(modes, repeats)
        finally:
            n_actors = len(trainer.groups)
            trainer.close()
        out.append(Result(
            "P2", "in-process ÷ ray auto per round", ms["alg2"] / ms["ray"], "≥ 1.6",
            ms["alg2"], ms["ray"],
            note=f"{work}; {n_actors} worker actors; RayTrainer start-up {startup:.1f} s "
                 f"(data {_data_bytes(problem) / 2**30:.2f} GiB: shard stacks put once, the "
                 "server actor's Problem without the shards' features)"))
        out.append(Result(
            "P2", "in-process on one core ÷ ray auto per round",
            ms["alg2, one core"] / ms["ray"], "", ms["alg2, one core"], ms["ray"],
            note="OpenBLAS and the WRM kernel limited to 1 thread: the in-process engine "
                 "already runs both on both cores, so this is the parallel speed-up over one "
                 "core (Ray's actors run 1 thread each: Ray sets OMP_NUM_THREADS=1)"))
        out.append(Result(
            "P2", "ray auto ÷ 2 threads without Ray, per round", ms["ray"] / ms["threads"],
            "", ms["ray"], ms["threads"],
            note="the engine's own cost at this scale: a Ray round vs honest_gradients on "
                 "the two halves of the shards in two threads of one process (row below)"))
    else:
        ms = interleaved(modes, repeats)
    out.append(Result(
        "P2", "honest gradients, 1 thread ÷ 2 threads, 1 thread each (no Ray)",
        ms["grads"] / ms["threads"], "", ms["grads"], ms["threads"],
        note="honest_gradients on the two halves of the shards in a ThreadPoolExecutor "
             "(numpy releases the GIL; OpenBLAS and the WRM kernel 1 thread each): what 2 "
             "cores give this workload without Ray, the ceiling for the 1-core row above"))
    gbs = problem.shards.X.nbytes / 1e9
    out.append(Result(
        "P2", "memory bandwidth: one read pass over the shards, 1 thread ÷ 2 threads",
        ms["read"] / ms["read, 2 threads"], "", ms["read"], ms["read, 2 threads"],
        note=f"np.add.reduce over the {gbs:.2f} GB feature stack: {gbs / ms['read']:.1f} GB/s "
             f"on 1 thread, {gbs / ms['read, 2 threads']:.1f} GB/s on 2; Alg. 2's two passes "
             f"over X alone take ≥ {2e3 * ms['read, 2 threads']:.0f} ms at the 2-thread rate "
             f"(one core's full round: {1e3 * ms['grads']:.0f} ms)"))
    out.append(Result("P5", "Alg. 2 (T_z = 10) ÷ ERM per round, in-process",
                      ms["alg2"] / ms["erm"], "≤ 1.2", ms["alg2"], ms["erm"], note=work))
    return out


# ---- P3: Table I with 5 seeds through `ray-robust tune` -------------------------------------

#: `ray-robust tune` with the trainable swapped for one that only saves progress and reports
#: (the same progress records, reports, final checkpoint, Tune settings, CSV and plot; no
#: training): the floor of P3
_P3_NOOP = """
import sys, tempfile
import numpy as np
from ray_robust import studies
from ray_robust.algorithm import RunState
from ray_robust.cli import main

def noop(config, experiment_dir=None, trials=None):
    from ray import tune
    cfg, opts = studies.split_trial_config(config)
    every = opts["report_every"]
    for r in [*range(every, cfg.rounds, every), cfg.rounds]:
        row = {"train_loss": 0.5, "test_error": 0.5, "test_error_shifted": 0.5, "round": r,
               "grad_norm": 0.0, "n_screened": 0, "n_rejected": 0, "error": 0.5,
               "resumed_from": 0}
        state = RunState(np.zeros(58), r, np.random.default_rng(0), rows=[row] * r)
        studies.save_trial_progress(experiment_dir, config, state, cfg)
        if r < cfg.rounds:
            tune.report(row)
            continue
        with tempfile.TemporaryDirectory() as d:
            studies.save_final_state(d, config, state, cfg)
            tune.report(row, checkpoint=tune.Checkpoint.from_directory(d))

studies.driver.trainable = noop  # the name the Tune driver runs
sys.exit(main(["tune", *sys.argv[1:]]))
"""

#: a Python process that starts and stops a local Ray instance as `ray-robust tune` does
_P3_RAY_ONLY = """
import ray
ray.init(address="local", include_dashboard=False, log_to_driver=False, configure_logging=False)
ray.shutdown()
"""


def _tune_wall(quick: bool, code: str | None = None) -> float:
    """Wall seconds of ``ray-robust tune tune_configs/table1.yaml [--quick]`` in a subprocess
    (its own Ray instance, as a user runs it); with ``code``, of that program instead (given
    the same arguments)."""
    with tempfile.TemporaryDirectory() as storage:
        prog = ["-c", code] if code else ["-m", "ray_robust.cli", "tune"]
        cmd = [sys.executable, *prog, str(TABLE1), "--storage", storage,
               *(["--quick"] if quick else [])]
        env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
        wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"`{' '.join(cmd[:3])}` failed ({proc.returncode}):\n"
                           f"{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return wall


def p3(quick: bool) -> list[Result]:
    """Full mode also measures what limits P3: the ``--quick`` grid (4 trials × 20 rounds:
    almost no work), the same 100 trials with a no-op trainable (same progress records,
    reports, Tune settings, CSV and plot), and a process that only starts and stops Ray."""
    from ray_robust.studies import load_study, run_grid_local

    study = load_study(TABLE1, quick=quick)
    n_trials = len(study.trial_configs())
    cores = os.cpu_count() or 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Table I's λ = 3 is below L_zz/2 late in E1 runs
        serial = seconds_of(lambda: run_grid_local(study))
    wall = _tune_wall(quick)
    ideal = serial / cores
    out = [Result(
        "P3", "tune wall ÷ (Σ in-process trial time ÷ cores)", wall / ideal, "≤ 1.5",
        wall, ideal,
        note=f"`ray-robust tune {TABLE1.relative_to(ROOT)}{' --quick' if quick else ''}`: "
             f"{n_trials} trials, T = {study.param_space['rounds']}, report_every = "
             f"{study.param_space['report_every']}; wall includes Ray start-up; Σ in-process "
             f"= {serial:.1f} s (run_grid_local), {cores} cores")]
    if not quick:
        small = load_study(TABLE1, quick=True)
        n_small = len(small.trial_configs())
        fixed = _tune_wall(True)
        noop = _tune_wall(False, _P3_NOOP)
        ray_only = _tune_wall(False, _P3_RAY_ONLY)
        per_trial = (wall - fixed) / (n_trials - n_small)
        out += [
            Result("P3", "(wall − fixed cost) ÷ (Σ in-process trial time ÷ cores)",
                   (wall - fixed) / ideal, "", wall - fixed, ideal,
                   note=f"fixed = wall of the --quick grid ({n_small} trials × "
                        f"{small.param_space['rounds']} rounds) = {fixed:.1f} s; marginal wall "
                        f"per trial {per_trial:.3f} s vs {serial / n_trials:.3f} s of in-process "
                        "work"),
            Result("P3", "floor: no-op trials' tune wall ÷ (Σ in-process trial time ÷ cores)",
                   noop / ideal, "", noop, ideal,
                   note=f"the same command and {n_trials} trials, the trainable only saves "
                        f"progress and reports (no training): {noop:.1f} s"),
            Result("P3", "floor: Python + ray.init + ray.shutdown ÷ (Σ in-process ÷ cores)",
                   ray_only / ideal, "", ray_only, ideal,
                   note=f"a process that starts and stops a local Ray: {ray_only:.1f} s"),
        ]
    return out


# ---- P4: m = 1000 logical workers, memory -------------------------------------------------


def p4(quick: bool) -> list[Result]:
    """Peak PSS of this driver's Ray processes during a run, sampled every 0.2 s. The fixed
    Ray overhead is measured, not assumed: the same run (same m, actors, rounds) on a data set
    100× smaller, whose own size is then negligible. Both runs get the actor count that
    ``actors="auto"`` picks for the large one (auto would pick fewer for the small data)."""

    from ray_robust.engines.ray_engine import RayTrainer, actor_count

    n, d, m = (20_000, 10, 100) if quick else (200_000, 50, 1000)
    rounds = 5 if quick else 20
    cfg = _config(n_workers=m, t_z=10, algorithm="alg2", rounds=rounds, eval_every=1,
                  standardize="none", seed=0)
    idle = ray_pss()
    peaks = {}
    problems = {size: _synthetic_problem(max(size, 2 * m), d, m) for size in (n // 100, n)}
    n_actors = actor_count("auto", m, problems[n].shards.X.nbytes)
    for size, problem in problems.items():  # the small run first: the fixed overhead
        with PeakSampler() as peak:
            with RayTrainer(problem, actors=n_actors) as trainer:
                trainer(cfg)
        peaks[size] = peak
    data = _data_bytes(problems[n])
    fixed, big = peaks[n // 100].peak_ray, peaks[n].peak_ray
    return [
        Result("P4", "peak Ray PSS ÷ data", big / data, "", big, data, unit="B",
               note=f"synthetic {n:,} × {d} ({data / MiB:.0f} MiB), m = {m}, {n_actors} worker "
                    f"actors + server actor, Alg. 2, {rounds} rounds: completed"),
        Result("P4", "(peak Ray PSS − fixed Ray overhead) ÷ data", (big - fixed) / data, "≤ 2",
               big - fixed, data, unit="B",
               note=f"fixed = peak of the same run on {max(n // 100, 2 * m):,} × {d} = "
                    f"{fixed / MiB:.0f} MiB (idle Ray before: {idle / MiB:.0f} MiB); driver "
                    f"peak PSS {peaks[n].peak_driver / MiB:.0f} MiB (not counted)"),
    ]


# ---- P6: NBS on m = 10,000 × d = 10,000 ---------------------------------------------------


def p6(quick: bool) -> list[Result]:
    m, d = (1000, 1000) if quick else (10_000, 10_000)
    repeats = 3 if quick else 5
    G = np.random.default_rng(0).standard_normal((m, d))
    ms = interleaved({
        "nbs": lambda: seconds_of(lambda: nbs(G, beta=0.15)),
        "norms": lambda: seconds_of(lambda: np.sqrt(np.einsum("ij,ij->i", G, G))),
        "linalg": lambda: seconds_of(lambda: np.linalg.norm(G, axis=1)),
    }, repeats)
    work = f"m = {m:,} vectors of d = {d:,} ({G.nbytes / MiB:.0f} MiB), β = 0.15"
    return [
        Result("P6", "NBS ÷ one norm pass (sqrt of einsum('ij,ij->i'))",
               ms["nbs"] / ms["norms"], "≤ 2", ms["nbs"], ms["norms"], note=work),
        Result("P6", "NBS ÷ np.linalg.norm(G, axis=1)", ms["nbs"] / ms["linalg"], "",
               ms["nbs"], ms["linalg"], note=work + " (linalg.norm squares into a temporary)"),
    ]
