"""Server-side aggregation rules: pure functions of an ``(m, p)`` array of worker messages.

Rows that are not finite (a NaN/Inf from a byzantine worker, or a row the server marked as
malformed or missing) never reach the output: every rule drops them first, and NBS counts
them as infinitely large, i.e. they are the first to be screened.

The rules that take ``f`` (the number of faulty inputs they must tolerate) drop the b
non-finite rows first and count them toward f: they run on the n' = n − b finite rows with
f' = max(f − b, 0). A missing or malformed message is a fault (crash or byzantine), so the
finite rows hold at most f' byzantine ones when the run has at most f faults in all; and the
precondition on (n, f) implies the one on (n', f') (e.g. Krum: n > 2f + 2 ⇒ n' > 2f' + 2).
The price: f must cover every fault. If honest workers can also go missing (a Ray straggler
past the round timeout, a dead actor) while f byzantine ones attack, set f to the byzantine
count plus the missing messages you expect, or a byzantine row survives the trim/selection.

``kept`` (which inputs entered the output): for selection rules (NBS, Krum, Multi-Krum) the
selected rows; for coordinate-wise rules (median, trimmed mean, Bulyan's second stage) the rows
whose value was used in at least one coordinate; for rules that weigh every input (mean,
geometric median, centered clipping) all finite rows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .._validation import check_int, check_real


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


def row_norms(grads: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(valid, norms)`` of an ``(m, p)`` array in one pass over it (no temporary copy).

    ``valid``: rows with all entries finite; ``norms``: their Euclidean norms, ``inf`` for
    invalid rows. A valid row's norm may overflow to ``inf`` (entries near 1e308): it then
    sorts last, as a huge row should. Only rows whose squared norm is not finite are checked
    entry by entry.
    """
    with np.errstate(over="ignore", invalid="ignore"):
        sq = np.einsum("ij,ij->i", grads, grads)
    valid = np.isfinite(sq)
    odd = np.flatnonzero(~valid)
    if odd.size:
        valid[odd] = np.isfinite(grads[odd]).all(axis=1)
    norms = np.sqrt(sq)
    norms[~valid] = np.inf
    return valid, norms


def n_to_screen(beta: float, m: int) -> int:
    """⌊βm⌉, the number of inputs NBS drops: βm rounded to the nearest integer, halves up."""
    return math.floor(beta * m + 0.5 + 1e-9)


def _average(grads: np.ndarray, kept: np.ndarray, weights: np.ndarray | None) -> np.ndarray:
    if weights is None:
        return grads[kept].mean(axis=0)
    w = np.asarray(weights, dtype=np.float64)[kept]
    return (w @ grads[kept]) / w.sum()


def mean(grads: np.ndarray, weights: np.ndarray | None = None) -> Aggregation:
    """Plain averaging G = (1/|V|) Σ_{i∈V} g_i over the valid rows V (ERM and DRO).

    ``weights`` ``(m,)`` (e.g. shard sizes): G = Σ_V w_i g_i / Σ_V w_i instead.
    """
    kept = finite_rows(grads)
    if not kept.any():
        raise AggregationError(f"mean: none of the {len(grads)} messages is valid.")
    return Aggregation(_average(grads, kept, weights), kept)


def nbs(grads: np.ndarray, beta: float, weights: np.ndarray | None = None) -> Aggregation:
    """Norm-based screening, Algorithm 1: drop the ⌊βm⌉ largest-norm inputs, average the rest.

    Non-finite rows count as infinitely large. Selection is an O(m) ``argpartition``, not a
    sort. Theorem 1: with a fraction α < 1/2 byzantine and β > α, for every vector S,
    ‖G − S‖ ≤ 2α/(1 − β)·‖S‖ + max_{i honest} ‖g_i − S‖.
    ``weights`` ``(m,)``: the kept rows are averaged with these weights (screening unchanged).
    """
    beta = check_real(beta, "beta", "NBS", low=0.0, high=1.0, high_open=True)
    m = grads.shape[0]
    n_keep = m - n_to_screen(beta, m)
    if n_keep < 1:
        raise ValueError(
            f"The 'beta' parameter of NBS must leave at least one input: β = {beta:g} screens "
            f"all {m}. Use a smaller beta."
        )
    valid, norms = row_norms(grads)
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
    if weights is None:
        return Aggregation(_sum_rows(grads, kept) / kept.sum(), kept)
    return Aggregation(_average(grads, kept, weights), kept)


#: row width from which :func:`_sum_rows` adds row by row (below it, one masked reduction)
ROW_BY_ROW_WIDTH = 4096


def _sum_rows(grads: np.ndarray, kept: np.ndarray) -> np.ndarray:
    """Σ_{i kept} g_i, added in row order: ``grads[kept].sum(axis=0)`` bit for bit, no copy.

    Wide rows are added one at a time into an accumulator that stays in cache (one pass over
    the kept rows only); numpy's masked reduction (``where=``) costs about 1.6 passes there.
    Narrow rows (the paper's m = 20, d = 58) take the masked reduction: one call, no loop.
    """
    if grads.shape[1] < ROW_BY_ROW_WIDTH:
        return np.add.reduce(grads, axis=0, where=kept[:, None])
    rows = np.flatnonzero(kept).tolist()
    acc = grads[rows[0]].copy()
    for i in rows[1:]:
        np.add(acc, grads[i], out=acc)
    return acc


# ---- the field's other rules -------------------------------------------------------------

#: rule → (display name, condition on (n, f), the condition as text, reference)
PRECONDITIONS: dict[str, tuple[str, object, str, str]] = {
    "trimmed_mean": ("the trimmed mean", lambda n, f: 2 * f < n, "2f < n", "Yin et al. 2018"),
    "krum": ("Krum", lambda n, f: n > 2 * f + 2, "n > 2f + 2", "Blanchard et al. 2017"),
    "multi_krum": ("Multi-Krum", lambda n, f: n > 2 * f + 2, "n > 2f + 2",
                   "Blanchard et al. 2017"),
    "bulyan": ("Bulyan", lambda n, f: n >= 4 * f + 3, "n ≥ 4f + 3", "El Mhamdi et al. 2018"),
}


def check_precondition(rule: str, n: int, f: object) -> int:
    """Return ``f`` as an int if rule ``rule`` can tolerate f faults among n inputs, else raise.

    One error form for every rule: "The 'f' parameter of Krum must satisfy n > 2f + 2
    (Blanchard et al. 2017) with n = 6 inputs. Got 2 instead. ..."
    """
    label, ok, text, ref = PRECONDITIONS[rule]
    f = check_int(f, "f", label, low=0)
    if not ok(n, f):
        largest = max((g for g in range(n) if ok(n, g)), default=None)
        fix = (f"Use f ≤ {largest} or more workers." if largest is not None
               else "Use more workers.")
        raise ValueError(
            f"The 'f' parameter of {label} must satisfy {text} ({ref}) with n = {n} inputs. "
            f"Got {f} instead. {fix}"
        )
    return f


def _finite(grads: np.ndarray, rule: str) -> tuple[np.ndarray, np.ndarray]:
    """The finite rows and the ``(m,)`` mask of them; AggregationError when there are none."""
    valid = finite_rows(grads)
    if not valid.any():
        raise AggregationError(f"{rule}: none of the {len(grads)} messages is valid.")
    return grads[valid], valid


def _finite_f(grads: np.ndarray, f: int, rule: str) -> tuple[np.ndarray, np.ndarray, int]:
    """Drop the b non-finite rows and count them toward f: (finite rows, mask, max(f − b, 0))."""
    X, valid = _finite(grads, rule)
    return X, valid, max(f - int((~valid).sum()), 0)


def _mask(valid: np.ndarray, used_rows: np.ndarray) -> np.ndarray:
    """The ``(m,)`` mask of the rows ``used_rows`` (indices into the finite rows)."""
    kept = np.zeros(valid.size, dtype=bool)
    kept[np.flatnonzero(valid)[used_rows]] = True
    return kept


def median(grads: np.ndarray) -> Aggregation:
    """Coordinate-wise median (Yin et al. 2018): G_j = median_i g_ij over the finite rows.

    With an even count the two middle values are averaged (as ``np.median``). ``kept``: the
    rows that are a middle value in at least one coordinate.
    """
    X, valid = _finite(grads, "median")
    n = X.shape[0]
    order = np.argsort(X, axis=0, kind="stable")
    lo, hi = (n - 1) // 2, n // 2
    mid = np.take_along_axis(X, order[lo : hi + 1], axis=0)
    return Aggregation(mid.mean(axis=0), _mask(valid, np.unique(order[lo : hi + 1])))


def trimmed_mean(grads: np.ndarray, f: int) -> Aggregation:
    """Coordinate-wise trimmed mean (Yin et al. 2018): per coordinate, drop the f largest and
    the f smallest values and average the n − 2f others. Needs 2f < n.

    Non-finite rows count toward f (f' = f − b trimmed from each side of the n − b finite
    values). ``kept``: rows that survive the trim in at least one coordinate.
    """
    f = check_precondition("trimmed_mean", grads.shape[0], f)
    X, valid, f = _finite_f(grads, f, "trimmed mean")
    n = X.shape[0]
    if 2 * f >= n:
        raise AggregationError(f"trimmed mean: {n} valid messages cannot lose 2·{f}.")
    order = np.argsort(X, axis=0, kind="stable")[f : n - f]
    vec = np.take_along_axis(X, order, axis=0).mean(axis=0)
    return Aggregation(vec, _mask(valid, np.unique(order)))


def pairwise_sq_distances(X: np.ndarray) -> np.ndarray:
    """‖x_i − x_j‖² for all pairs by the Gram trick ‖x_i‖² + ‖x_j‖² − 2x_iᵀx_j (clipped at 0,
    exact 0 on the diagonal; an overflow counts as +inf, never NaN)."""
    with np.errstate(over="ignore", invalid="ignore"):
        sq = np.einsum("ij,ij->i", X, X)
        D = sq[:, None] + sq[None, :] - 2.0 * (X @ X.T)
    D[np.isnan(D)] = np.inf
    np.maximum(D, 0.0, out=D)
    D = 0.5 * (D + D.T)  # exactly symmetric, so a mutual-nearest pair ties exactly
    np.fill_diagonal(D, 0.0)
    return D


def _rank(scores: np.ndarray, X: np.ndarray) -> np.ndarray:
    """Indices by increasing score, ties broken by the rows' values (lexicographically), not
    by position: the selection is permutation invariant. Ties are common: with one neighbour
    (n − f − 2 = 1) the two points of a mutual-nearest pair have the same score."""
    order = np.argsort(scores, kind="stable")
    ranked = scores[order]
    if not np.any(ranked[1:] == ranked[:-1]):
        return order
    return np.lexsort((*X.T[::-1], scores))  # only on exact ties: p sort keys are costly


def krum_scores(D: np.ndarray, f: int) -> np.ndarray:
    """Krum's score of each input: the sum of its squared distances to its n − f − 2 nearest
    other inputs (Blanchard et al. 2017), from the squared-distance matrix ``D``."""
    n = D.shape[0]
    k = n - f - 2
    if k <= 0:
        return np.zeros(n)
    off = D + np.diag(np.full(n, np.inf))
    with np.errstate(invalid="ignore"):
        return np.partition(off, k - 1, axis=1)[:, :k].sum(axis=1)


def krum(grads: np.ndarray, f: int) -> Aggregation:
    """Krum (Blanchard et al. 2017): output the input with the smallest score, the sum of its
    squared distances to its n − f − 2 nearest neighbours. Needs n > 2f + 2.

    Non-finite rows count toward f. Ties go to the lexicographically smallest row.
    ``kept``: the chosen input.
    """
    return _krum_select(grads, f, 1, "krum")


def multi_krum(grads: np.ndarray, f: int, n_selected: int | None = None) -> Aggregation:
    """Multi-Krum (Blanchard et al. 2017): average the ``n_selected`` inputs with the smallest
    Krum scores (default n − f, counted on the finite rows). Needs n > 2f + 2.

    ``kept``: the selected inputs.
    """
    if n_selected is not None:
        n_selected = check_int(n_selected, "n_selected", "Multi-Krum", low=1)
    return _krum_select(grads, f, n_selected, "multi_krum")


def _krum_select(grads: np.ndarray, f: int, n_selected: int | None, rule: str) -> Aggregation:
    f = check_precondition(rule, grads.shape[0], f)
    X, valid, f = _finite_f(grads, f, PRECONDITIONS[rule][0])
    n = X.shape[0]  # n > 2f + 2 still holds for the finite rows (see the module docstring)
    q = n - f if n_selected is None else min(n_selected, n)
    scores = krum_scores(pairwise_sq_distances(X), f)
    chosen = _rank(scores, X)[:q]
    return Aggregation(X[chosen].mean(axis=0), _mask(valid, chosen))


def geometric_median(
    grads: np.ndarray, *, tol: float = 1e-7, max_iter: int = 200, nu: float = 1e-10
) -> Aggregation:
    """Geometric median argmin_z Σ_i ‖z − g_i‖ by the smoothed Weiszfeld iteration (RFA,
    Pillutla, Kakade, Harchaoui 2022): z ← Σ_i β_i g_i / Σ_i β_i, β_i = 1/max(ν, ‖z − g_i‖),
    from the coordinate-wise median, until ‖Δz‖ ≤ tol·(mean_i ‖z − g_i‖) (a criterion that
    does not depend on the origin or the scale) or ``max_iter`` steps.

    Breakdown point 1/2; takes no f. ``kept``: every finite row (all carry weight).
    """
    X, valid = _finite(grads, "geometric median")
    z = np.median(X, axis=0)
    with np.errstate(over="ignore", invalid="ignore"):
        for _ in range(max_iter):
            dist = np.linalg.norm(X - z, axis=1)
            b = 1.0 / np.maximum(dist, nu)
            z_new = (b @ X) / b.sum()
            done = np.linalg.norm(z_new - z) <= tol * float(dist.mean())
            z = z_new
            if done:
                break
    return Aggregation(z, valid)


def centered_clipping(
    grads: np.ndarray, clip_tau: float, clip_iters: int = 1, state: np.ndarray | None = None
) -> Aggregation:
    """Centered clipping (Karimireddy, He, Jaggi 2021): from the previous round's output v
    (``state``; zeros in the first round), repeat ``clip_iters`` times
    v ← v + (1/n) Σ_i (g_i − v)·min(1, τ/‖g_i − v‖), over the n finite rows.

    Stateful: the returned ``Aggregation.state`` is the new centre, to pass in next round.
    Translation equivariant when the centre is translated too. ``kept``: every finite row.
    """
    tau = check_real(clip_tau, "clip_tau", "centered clipping", low=0.0, low_open=True)
    iters = check_int(clip_iters, "clip_iters", "centered clipping", low=1)
    X, valid = _finite(grads, "centered clipping")
    if state is None:
        v = np.zeros(X.shape[1])
    else:
        v = np.array(state, dtype=np.float64)
        if v.shape != (X.shape[1],) or not np.isfinite(v).all():
            raise ValueError(
                f"The 'state' of centered clipping must be a finite vector of length "
                f"{X.shape[1]} (the previous centre). Got shape {v.shape}."
            )
    with np.errstate(over="ignore", invalid="ignore"):
        for _ in range(iters):
            diff = X - v
            norms = np.linalg.norm(diff, axis=1)
            c = np.where(norms > tau, tau / np.where(norms > tau, norms, 1.0), 1.0)
            v = v + (c[:, None] * diff).mean(axis=0)
    return Aggregation(v, valid, state=v.copy())


def bulyan(grads: np.ndarray, f: int) -> Aggregation:
    """Bulyan (El Mhamdi, Guerraoui, Rouault 2018) over Krum. Needs n ≥ 4f + 3.

    1. Select θ = n − 2f inputs by Krum applied recursively (take the Krum winner of the
       remaining set, remove it, repeat; neighbour count n_k − f − 2 in a set of n_k).
    2. Per coordinate, average the β = θ − 2f selected values closest to their median.

    Non-finite rows count toward f. ``kept``: selected rows used in at least one coordinate.
    """
    f = check_precondition("bulyan", grads.shape[0], f)
    X, valid, f = _finite_f(grads, f, "Bulyan")
    n = X.shape[0]
    n_sel, beta = n - 2 * f, n - 4 * f
    if beta < 1:
        raise AggregationError(f"Bulyan: {n} valid messages do not satisfy n ≥ 4f + 3, f = {f}.")
    D = pairwise_sq_distances(X)
    remaining = np.arange(n)
    selected = np.empty(n_sel, dtype=np.int64)
    for t in range(n_sel):  # θ ≤ n vectorized Krum selections, not an O(n²) Python loop
        scores = krum_scores(D[np.ix_(remaining, remaining)], f)
        j = int(_rank(scores, X[remaining])[0])
        selected[t] = remaining[j]
        remaining = np.delete(remaining, j)
    S = X[selected]
    med = np.median(S, axis=0)
    with np.errstate(invalid="ignore"):
        order = np.argsort(np.abs(S - med), axis=0, kind="stable")[:beta]
    vec = np.take_along_axis(S, order, axis=0).mean(axis=0)
    return Aggregation(vec, _mask(valid, selected[np.unique(order)]))


#: name → (function, the config fields it takes); :func:`ray_robust.core.rules.build_rule`
#: makes a rule, built once, of each
AGGREGATORS = {
    "mean": (mean, ()),
    "nbs": (nbs, ("beta",)),
    "median": (median, ()),
    "trimmed_mean": (trimmed_mean, ("f",)),
    "krum": (krum, ("f",)),
    "multi_krum": (multi_krum, ("f",)),
    "geometric_median": (geometric_median, ()),
    "centered_clipping": (centered_clipping, ("clip_tau", "clip_iters")),
    "bulyan": (bulyan, ("f",)),
}
