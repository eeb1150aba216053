"""Worst-case test shift (Sec. VII, "Shift model") and the misclassification rate under it.

Each test feature vector x is moved to z with ‖z − x‖_p ≤ ε so as to maximize the cross-entropy;
labels are never changed. For a linear model the loss grows with the signed margin
−(2y − 1)(wᵀz + b), and max_{‖δ‖_p ≤ ε} δᵀw = ε‖w‖_q with q the dual exponent (1/p + 1/q = 1),
so the worst case has a closed form: s ↦ s − (2y − 1)·ε‖w‖_q.
"""

from __future__ import annotations

import numpy as np

#: the norms a shift budget can be given in, and their dual norms' ``ord`` for numpy
NORMS = {"l1": np.inf, "l2": 2, "linf": 1}


def dual_norm(w: np.ndarray, norm: str) -> float:
    """‖w‖_q, the dual of the ``norm`` ball's ‖·‖_p ('l1' → ‖w‖_∞, 'l2' → ‖w‖₂, 'linf' → ‖w‖₁)."""
    return float(np.linalg.norm(w, ord=NORMS[norm]))


def worst_case_direction(w: np.ndarray, norm: str) -> np.ndarray:
    """u with ‖u‖_p = 1 maximizing uᵀw (so uᵀw = ‖w‖_q)."""
    if norm == "l2":
        nw = np.linalg.norm(w)
        return w / nw if nw > 0 else np.zeros_like(w)
    if norm == "l1":
        u = np.zeros_like(w)
        j = int(np.argmax(np.abs(w)))
        u[j] = np.sign(w[j])
        return u
    return np.sign(w)


def worst_case_shift(model, theta, X, y, norm: str, eps: float) -> np.ndarray:
    """The perturbed test inputs z = x − (2y − 1)·ε·u (closed form for linear models)."""
    w, _ = model.split(theta)
    u = worst_case_direction(w, norm)
    return X - ((2 * y - 1) * eps)[..., None] * u


def worst_case_margins(model, theta, X, y, norm: str | None, eps: float) -> np.ndarray:
    """Margins wᵀz + b at the worst-case z, without forming z."""
    s = model.margins(theta, X)
    if norm is None or eps == 0:
        return s
    w, _ = model.split(theta)
    return s - (2 * y - 1) * eps * dual_norm(w, norm)


def error_rate(model, theta, X, y, norm: str | None = None, eps: float = 0.0) -> float:
    """Misclassification rate on (X, y) under the worst-case shift of budget ε in ``norm``.

    Models other than the binary logistic one evaluate themselves (``error_under_shift``:
    closed forms for softmax and least squares, where the "error" is the MSE; projected
    gradient ascent for the MLP).
    """
    custom = getattr(model, "error_under_shift", None)
    if custom is not None:
        return float(custom(theta, X, y, norm, eps))
    s = worst_case_margins(model, theta, X, y, norm, eps)
    return float(np.mean((s > 0) != (y == 1)))
