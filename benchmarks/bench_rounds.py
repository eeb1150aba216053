"""Time per round: in-process engine vs the Ray engine, beside a no-op round trip (issue 3).

Paper scale: Spambase, m = 20, T_z = 10, Algorithm 2 under the aggressive attack with the L1
shift (Table I's E1), evaluated every round. Per-round times are the gaps between successive
``compute`` calls of :func:`ray_robust.algorithm.run` (round trip + server step + evaluation),
median over the rounds after ``--warmup``; modes run interleaved ``--repeats`` times and the
median of the medians is printed. The no-op round trip calls a method of the same worker
actors that returns a zero message of the same size, from the same server actor.

    python -m benchmarks.bench_rounds [--rounds 300] [--repeats 3]

The summary ratio is benchmark P1 of ``python -m benchmarks``; this script adds the other
packings and the driver-side gathering.

Target (issue 3): Ray with ``actors="auto"`` ≤ 1.3 × (no-op round trip + in-process round).
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from ray_robust.algorithm import Server, run
from ray_robust.api import load_problem
from ray_robust.config import Config
from ray_robust.reproduce import ENVIRONMENTS, PAPER_SETTING

from .common import local_round_seconds


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=300, help="rounds per run (paper: 300)")
    parser.add_argument("--warmup", type=int, default=30, help="rounds left out of the median")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repeats per mode")
    parser.add_argument("--address", default=None, help="Ray cluster to join (default: local)")
    parser.add_argument("--actors", nargs="*", default=["1"],
                        help="further packings to time, as numbers of worker actors (default 1)")
    args = parser.parse_args(argv)

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray

    from ray_robust.engines.ray_engine import RayTrainer

    cfg = Config.from_dict({**PAPER_SETTING, **ENVIRONMENTS["E1"], "algorithm": "alg2",
                            "rounds": args.rounds, "seed": 0})
    problem = load_problem(cfg)
    ray.init(address=args.address or "local", include_dashboard=False, log_to_driver=False)
    n_cpus = int(ray.cluster_resources().get("CPU", 0))
    trainers = {}
    for packing in ["auto", "per-worker", *(int(a) for a in args.actors)]:
        t0 = time.perf_counter()
        trainers[packing] = RayTrainer(problem, actors=packing)
        trainers[packing].startup = time.perf_counter() - t0

    w = args.warmup
    times: dict[str, list[float]] = {}

    def record(name: str, seconds: np.ndarray) -> None:
        times.setdefault(name, []).append(float(np.median(seconds[w:])))

    for _ in range(args.repeats):
        record("in-process", local_round_seconds(cfg, problem))
        for packing, trainer in trainers.items():
            trainer(cfg)
            record(f"ray {packing}", trainer.round_seconds())
            if packing == "auto":  # the driver polls the server actor every 0.25 s
                trainer(cfg, progress=lambda row: None, progress_every=50)
                record("ray auto, progress polled", trainer.round_seconds())
            record(f"noop {packing}", trainer.time_noop(cfg, args.rounds))
            server = Server(cfg, problem)
            starts: list[float] = []
            gather = trainer.compute_fn(cfg)

            def compute(theta, t, gather=gather, starts=starts):
                starts.append(time.perf_counter())
                return gather(theta, t)

            compute.launch = gather.launch  # run() starts round t+1 before evaluating
            run(server, compute)
            record(f"ray {packing}, driver gathers", np.diff(starts))

    ms = {name: 1e3 * float(np.median(v)) for name, v in times.items()}
    best = {name: 1e3 * float(np.min(v)) for name, v in times.items()}
    print(f"Time per round, Alg. 2 at paper scale (Spambase, m = 20, T_z = 10, E1), "
          f"{args.rounds} rounds, median after {w}; median (and best) of {args.repeats} "
          f"interleaved repeats; Ray {ray.__version__}, {n_cpus} CPUs, load average "
          f"{os.getloadavg()[0]:.1f}")
    print(f"{'mode':<32}{'actors':>7}{'ms/round':>10}{'noop ms':>9}{'÷(noop+local)':>15}"
          f"{'best ms':>9}{'best ÷':>8}")
    print(f"{'in-process':<32}{'-':>7}{ms['in-process']:>10.3f}{'':>24}"
          f"{best['in-process']:>9.3f}")
    for packing, trainer in trainers.items():
        noop, noop_best = ms[f"noop {packing}"], best[f"noop {packing}"]
        names = [f"ray {packing}", f"ray {packing}, driver gathers"]
        if packing == "auto":
            names.insert(1, "ray auto, progress polled")
        for name in names:
            ratio = ms[name] / (noop + ms["in-process"])
            ratio_best = best[name] / (noop_best + best["in-process"])
            print(f"{name:<32}{len(trainer.groups):>7}{ms[name]:>10.3f}{noop:>9.3f}"
                  f"{ratio:>15.2f}{best[name]:>9.3f}{ratio_best:>8.2f}")
        print(f"{f'noop {packing}':<32}{len(trainer.groups):>7}{noop:>10.3f}{'':>24}"
              f"{noop_best:>9.3f}")
    for packing, trainer in trainers.items():
        print(f"actor start-up, {packing}: {trainer.startup:.1f} s for "
              f"{len(trainer.groups)} worker actors + the server actor")
    ratio = ms["ray auto"] / (ms["noop auto"] + ms["in-process"])
    print(f"ratio ray auto ÷ (noop auto + in-process) = {ratio:.2f} (target ≤ 1.3)")
    for trainer in trainers.values():
        trainer.close()
    ray.shutdown()


if __name__ == "__main__":
    main()
