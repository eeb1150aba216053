"""Timing and memory helpers shared by every benchmark (one copy; issue 8).

Machines here are shared and noisy: a benchmark runs its modes *interleaved* (A, B, A, B, …)
after a warm-up, takes the median of each mode, and reports the ratio of medians measured in
the same run. Absolute times are context only.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass

import numpy as np

from ray_robust.algorithm import Server, honest_gradients, run


def seconds_of(fn: Callable[[], object]) -> float:
    """Wall seconds of one call of ``fn``."""
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def interleaved(
    modes: Mapping[str, Callable[[], float | np.ndarray]], repeats: int, warmup: int = 1
) -> dict[str, float]:
    """Median seconds per mode, the modes run in turn ``repeats`` times after ``warmup`` turns.

    A mode returns either seconds (a float) or an array of per-round seconds (its median counts
    as that repeat's value).
    """
    samples: dict[str, list[float]] = {name: [] for name in modes}
    for rep in range(warmup + repeats):
        for name, fn in modes.items():
            value = fn()
            if rep >= warmup:
                samples[name].append(float(np.median(value)))
    return {name: float(np.median(v)) for name, v in samples.items()}


def local_round_seconds(cfg, problem, skip: int = 0) -> np.ndarray:
    """Per-round seconds of the in-process engine (gaps between successive ``compute`` calls of
    :func:`ray_robust.algorithm.run`: worker gradients + server step + evaluation), the first
    ``skip`` rounds left out."""
    server = Server(cfg, problem)
    starts: list[float] = []

    def compute(theta, t):
        starts.append(time.perf_counter())
        return honest_gradients(cfg, server.model, theta, problem.shards, t)

    run(server, compute)
    return np.diff(starts)[skip:]


@contextlib.contextmanager
def blas_threads(n: int) -> Iterator[bool]:
    """Limit numpy's OpenBLAS to ``n`` threads inside the block (ctypes into the loaded
    library; threadpoolctl is not a dependency). Yields False, changing nothing, when no
    OpenBLAS with a known setter is loaded."""
    import ctypes

    with open("/proc/self/maps") as fh:
        paths = sorted({ln.split()[-1] for ln in fh if "openblas" in ln.lower() and "/" in ln})
    lib = setter = getter = None
    for path in paths:
        lib = ctypes.CDLL(path)
        for prefix in ("scipy_openblas", "openblas"):
            for suffix in ("64_", ""):
                if hasattr(lib, f"{prefix}_set_num_threads{suffix}"):
                    setter = getattr(lib, f"{prefix}_set_num_threads{suffix}")
                    getter = getattr(lib, f"{prefix}_get_num_threads{suffix}")
                    break
            if setter:
                break
        if setter:
            break
    if setter is None:
        yield False
        return
    before = int(getter())
    setter(n)
    try:
        yield True
    finally:
        setter(before)


# ---- results -----------------------------------------------------------------------------


@dataclass
class Result:
    """One measured ratio: ``numerator ÷ denominator`` (medians, seconds or bytes)."""

    id: str
    metric: str
    ratio: float
    target: str = ""
    numerator: float = float("nan")
    denominator: float = float("nan")
    unit: str = "s"
    note: str = ""

    @property
    def met(self) -> str:
        if not self.target:
            return ""
        op, bound = self.target.split()
        ok = self.ratio <= float(bound) if op == "≤" else self.ratio >= float(bound)
        return "yes" if ok else "NO"

    def row(self) -> dict:
        return {**asdict(self), "met": self.met}


# ---- memory of Ray's processes (/proc; psutil is not installed) ---------------------------


def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        kids.setdefault(ppid, []).append(int(entry))
    return kids


def descendants(pid: int | None = None) -> list[int]:
    """Every process below ``pid`` (default: this one). A local ``ray.init`` starts the GCS and
    the raylet as children of the driver, and the raylet starts the workers: the descendants of
    the driver are exactly *this* Ray instance's processes (other users' Ray on the machine are
    not counted)."""
    kids, out, todo = _children(), [], [os.getpid() if pid is None else pid]
    while todo:
        for child in kids.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def pss_bytes(pid: int) -> int:
    """Proportional set size of one process (shared pages, e.g. the object store's, split
    between the processes mapping them), from ``/proc/<pid>/smaps_rollup``; 0 if it is gone."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as fh:
            for line in fh:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def ray_pss() -> int:
    """PSS summed over this driver's Ray processes (GCS, raylet, workers, actors)."""
    return sum(pss_bytes(p) for p in descendants())


class PeakSampler:
    """Samples :func:`ray_pss` (and the driver's own PSS) every ``interval`` s in a thread."""

    def __init__(self, interval: float = 0.2):
        self.interval = interval
        self.peak_ray = 0
        self.peak_driver = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.peak_ray = max(self.peak_ray, ray_pss())
            self.peak_driver = max(self.peak_driver, pss_bytes(os.getpid()))
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_ray = max(self.peak_ray, ray_pss())
