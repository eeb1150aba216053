"""Cost of one aggregation per rule (issue 6): median of repeated calls on an (m, p) array.

    python -m benchmarks.bench_aggregators [--reps 20]

Prints milliseconds per call for m ∈ {20, 100, 400} workers and p ∈ {58, 1000} parameters
(f = ⌊(m − 3)/4⌋ so that Bulyan's n ≥ 4f + 3 holds). Krum, Multi-Krum and Bulyan build the
m × m distance matrix once by the Gram trick; Bulyan then runs m − 2f vectorized selections.
"""

from __future__ import annotations

import argparse
import functools

import numpy as np

from ray_robust.core.aggregators import AGGREGATORS

from .common import interleaved, seconds_of


def bench(reps: int) -> None:
    rng = np.random.default_rng(0)
    print(f"{'rule':>18} " + " ".join(f"{f'm={m},p={p}':>14}" for m in (20, 100, 400)
                                      for p in (58, 1000)))
    cases = [(m, p, rng.normal(size=(m, p))) for m in (20, 100, 400) for p in (58, 1000)]
    for name, (fn, fields) in AGGREGATORS.items():
        cells = []
        for m, _, G in cases:
            kw = {"beta": 0.15, "f": (m - 3) // 4, "clip_tau": 0.1, "clip_iters": 1}
            kwargs = {k: kw[k] for k in fields}
            call = functools.partial(fn, G, **kwargs)
            ms = interleaved({name: lambda call=call: seconds_of(call)}, reps)
            cells.append(f"{1e3 * ms[name]:14.3f}")
        print(f"{name:>18} " + " ".join(cells))


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=20)
    bench(ap.parse_args().reps)
