"""Worst-case test shift for nonlinear models: projected gradient ascent in an L1, L2 or L∞ ball.

For a linear model the worst case has a closed form (:mod:`ray_robust.core.shift`); for the MLP
each test input x is moved to z, ‖z − x‖_p ≤ ε, by T steps of steepest ascent on the loss
f(θ; z, y) (Madry et al. 2018): the step direction is the one of unit p-norm maximizing uᵀ∇f
(L∞: sign(∇f); L2: ∇f/‖∇f‖₂; L1: the coordinate of largest |∂f|), of length 2.5ε/T, followed
by the Euclidean projection onto the ball (L1: Duchi, Shalev-Shwartz, Singer, Chandra 2008).
Each sample keeps its highest-loss iterate. The result is a lower bound on the true worst case.
"""

from __future__ import annotations

import numpy as np

from .shift import NORMS


def project_ball(delta: np.ndarray, norm: str, eps: float) -> np.ndarray:
    """Euclidean projection of each row (last axis) of ``delta`` onto {‖δ‖_p ≤ ε}."""
    if norm == "linf":
        return np.clip(delta, -eps, eps)
    if norm == "l2":
        n = np.linalg.norm(delta, axis=-1, keepdims=True)
        return delta * np.minimum(1.0, eps / np.maximum(n, 1e-300))
    if norm != "l1":
        raise ValueError(f"The 'norm' parameter must be one of {sorted(NORMS)}. Got {norm!r}.")
    a = np.abs(delta)
    inside = a.sum(axis=-1) <= eps
    u = -np.sort(-a, axis=-1)  # descending
    css = np.cumsum(u, axis=-1) - eps
    j = np.arange(1, u.shape[-1] + 1)
    rho = (u - css / j > 0).sum(axis=-1)  # the condition holds for a prefix of j
    tau = np.take_along_axis(css, np.maximum(rho - 1, 0)[..., None], axis=-1) / np.maximum(
        rho, 1)[..., None]
    out = np.sign(delta) * np.maximum(a - tau, 0.0)
    return np.where(inside[..., None], delta, out)


def steepest_direction(g: np.ndarray, norm: str) -> np.ndarray:
    """u with ‖u‖_p = 1 maximizing uᵀg, per row (0 where g = 0)."""
    if norm == "linf":
        return np.sign(g)
    if norm == "l2":
        n = np.linalg.norm(g, axis=-1, keepdims=True)
        return np.where(n > 0, g / np.where(n > 0, n, 1.0), 0.0)
    j = np.abs(g).argmax(axis=-1)[..., None]
    u = np.zeros_like(g)
    np.put_along_axis(u, j, np.sign(np.take_along_axis(g, j, axis=-1)), axis=-1)
    return u


def pgd_shift(
    model, theta, X, y, norm: str, eps: float, *, steps: int = 30, step_size: float | None = None
) -> np.ndarray:
    """The shifted inputs z (shape ``X.shape``): T steps of projected steepest ascent on the
    per-sample loss in the ε-ball of ``norm`` around each x, keeping each sample's best iterate."""
    if eps == 0 or steps == 0:
        return np.array(X, dtype=np.float64, copy=True)
    alpha = 2.5 * eps / steps if step_size is None else step_size
    delta = np.zeros_like(X, dtype=np.float64)
    best, best_loss = X.astype(np.float64, copy=True), model.loss(theta, X, y)
    for _ in range(steps):
        g = model.grad_x(theta, X + delta, y)
        delta = project_ball(delta + alpha * steepest_direction(g, norm), norm, eps)
        Z = X + delta
        loss = model.loss(theta, Z, y)
        better = loss > best_loss
        best[better], best_loss = Z[better], np.where(better, loss, best_loss)
    return best
