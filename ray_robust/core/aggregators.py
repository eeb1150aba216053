"""Server-side aggregation rules: pure functions of an ``(m, p)`` array of worker messages.

Rows that are not finite (a NaN/Inf from a byzantine worker, or a row the server marked as
malformed or missing) never reach the output: every rule drops them first, and NBS counts
them as infinitely large, i.e. they are the first to be screened.

The rules that take ``f`` (the number of faulty inputs they must tolerate) drop the b
non-finite rows first and count them toward f: they run on the n' = n − b finite rows with
f' = max(f − b, 0). A missing or malformed message is a fault (crash or byzantine), so the
finite rows hold at most f' byzantine ones when the run has at most f faults in all; and the
precondition on (n, f) implies the one on (n', f') (e.g. Krum: n > 2f + 2 ⇒ n' > 2f' + 2).

``kept`` (which inputs entered the output): for selection rules (NBS, Krum, Multi-Krum) the
selected rows; for coordinate-wise rules (median, trimmed mean, Bulyan's second stage) the rows
whose value was used in at least one coordinate; for rules that weigh every input (mean,
geometric median, centered clipping) all finite rows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .._validation import check_real


class AggregationError(RuntimeError):
    """Too few valid messages for the rule to produce an output."""


@dataclass(frozen=True)
class Aggregation:
    """The aggregated vector G and which inputs went into it (``kept``, shape ``(m,)``)."""

    vector: np.ndarray
    kept: np.ndarray
    #: what a stateful rule carries to the next round (centered clipping: the centre)
    state: np.ndarray | None = None

    @property
    def n_screened(self) -> int:
        return int(self.kept.size - self.kept.sum())


def finite_rows(grads: np.ndarray) -> np.ndarray:
    """Boolean ``(m,)``: rows whose entries are all finite."""
    return np.isfinite(grads).all(axis=1)


def n_to_screen(beta: float, m: int) -> int:
    """⌊βm⌉, the number of inputs NBS drops: βm rounded to the nearest integer, halves up."""
    return math.floor(beta * m + 0.5 + 1e-9)


def mean(grads: np.ndarray) -> Aggregation:
    """Plain averaging G = (1/|V|) Σ_{i∈V} g_i over the valid rows V (ERM and DRO)."""
    kept = finite_rows(grads)
    if not kept.any():
        raise AggregationError(f"mean: none of the {len(grads)} messages is valid.")
    return Aggregation(grads[kept].mean(axis=0), kept)


def nbs(grads: np.ndarray, beta: float) -> Aggregation:
    """Norm-based screening, Algorithm 1: drop the ⌊βm⌉ largest-norm inputs, average the rest.

    Non-finite rows count as infinitely large. Selection is an O(m) ``argpartition``, not a
    sort. Theorem 1: with a fraction α < 1/2 byzantine and β > α, for every vector S,
    ‖G − S‖ ≤ 2α/(1 − β)·‖S‖ + max_{i honest} ‖g_i − S‖.
    """
    beta = check_real(beta, "beta", "NBS", low=0.0, high=1.0, high_open=True)
    m = grads.shape[0]
    n_keep = m - n_to_screen(beta, m)
    if n_keep < 1:
        raise ValueError(
            f"The 'beta' parameter of NBS must leave at least one input: β = {beta:g} screens "
            f"all {m}. Use a smaller beta."
        )
    valid = finite_rows(grads)
    norms = np.full(m, np.inf)
    # Norms of the valid rows only; np.linalg.norm of a row can overflow to inf (1e308 entries),
    # which still sorts it last.
    with np.errstate(over="ignore"):
        norms[valid] = np.linalg.norm(grads[valid], axis=1)
    if n_keep < m:
        idx = np.argpartition(norms, n_keep - 1)[:n_keep]
    else:
        idx = np.arange(m)
    kept = np.zeros(m, dtype=bool)
    kept[idx] = True
    kept &= valid
    if not kept.any():
        raise AggregationError(
            f"NBS: no valid message among the {n_keep} smallest of {m} "
            f"({m - int(valid.sum())} malformed or missing)."
        )
    return Aggregation(grads[kept].mean(axis=0), kept)


#: name → (function, the config fields it takes)
AGGREGATORS = {
    "mean": (mean, ()),
    "nbs": (nbs, ("beta",)),
}
