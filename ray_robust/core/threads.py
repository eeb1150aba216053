"""The thread pool that the WRM fast path (:mod:`ray_robust.core.wrm`) spreads its chunks over.

Every chunk's arithmetic is independent of the thread that runs it, so the results do not
depend on the number of threads.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

_POOLS: dict[tuple[int, int], ThreadPoolExecutor] = {}


def line_threads() -> int:
    """Threads the fast path spreads its chunks over: ``$RAY_ROBUST_WRM_THREADS`` if set, else
    ``$OMP_NUM_THREADS`` (its first level) if set (Ray sets it to the actor's CPUs, 1 for ours:
    the Ray engine parallelizes over actors), else the usable cores. The result does not
    depend on it."""
    value = os.environ.get("RAY_ROBUST_WRM_THREADS", "").strip()
    if value:
        try:
            n = int(value)
        except ValueError:
            n = 0
        if n < 1:
            raise ValueError(f"$RAY_ROBUST_WRM_THREADS must be a positive integer. Got {value!r} "
                             "instead.")
        return n
    omp = os.environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()
    if omp.isdigit() and int(omp) > 0:
        return int(omp)
    return max(1, len(os.sched_getaffinity(0)))


def run_tasks(fn, tasks: list) -> None:
    """Call ``fn(task)`` for every task, spread over :func:`line_threads` threads (numpy
    releases the GIL in its elementwise loops; the calling thread takes one share)."""
    n = min(line_threads(), len(tasks))
    if n <= 1:
        for task in tasks:
            fn(task)
        return
    key = (os.getpid(), n)  # a forked child must not reuse the parent's (dead) threads
    pool = _POOLS.get(key)
    if pool is None:
        pool = _POOLS[key] = ThreadPoolExecutor(n - 1, thread_name_prefix="wrm-line")

    def share(i: int) -> None:
        for task in tasks[i::n]:
            fn(task)

    futures = [pool.submit(share, i) for i in range(1, n)]
    try:
        share(0)
    finally:
        for f in futures:
            f.result()
