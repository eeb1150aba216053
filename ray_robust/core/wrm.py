"""The WRM perturbation (Sinha et al. 2018), as an honest worker runs it in Algorithm 2, line 5.

Convention (stated because the paper's OCR lost the coefficient): the cost is
c(z, x) = ‖z − x‖², and a worker maximizes

    g(z) = f(θ; z) − λ·‖z − x‖²,      ∇g(z) = ∇_z f(θ; z) − 2λ(z − x),

by T_z steps of gradient ascent z ← z + η_z ∇g(z) from z = x (Sec. VII). Only features are
perturbed, never labels. g is λ_g-strongly concave and L_g-smooth with (Sec. VI-D)

    λ_g = 2λ − L_zz,     L_g = 2λ + L_zz,

so a fixed step η_z contracts the distance to the maximizer z* by
ρ(η_z) = max(|1 − η_z λ_g|, |1 − η_z L_g|) per step; the best step 2/(L_g + λ_g) = 1/(2λ) gives
ρ = (L_g − λ_g)/(L_g + λ_g), and ‖z_T − z*‖ ≤ ρ^T D_z with D_z = ‖x − z*‖.

For a linear model ∇_z f is a multiple of w, so every ascent iterate is z_t = x + c_t·w with one
scalar c_t per sample: the fast path below runs the same recursion on c_t in O(N) per step.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.special import expit


def ascent_gradient(model, theta, Z, X, y, lam: float) -> np.ndarray:
    """∇g(z) = ∇_z f(θ; z) − 2λ(z − x), per sample."""
    return model.grad_x(theta, Z, y) - 2.0 * lam * (Z - X)


def wrm_ascent(model, theta, X, y, lam: float, eta_z: float, t_z: int) -> np.ndarray:
    """Reference WRM: T_z explicit ascent steps on every sample; returns z, shape ``X.shape``."""
    Z = np.array(X, dtype=np.float64, copy=True)
    for _ in range(t_z):
        Z += eta_z * ascent_gradient(model, theta, Z, X, y, lam)
    return Z


def wrm_line_coefficients(model, theta, s_x, y, lam: float, eta_z: float, t_z: int) -> np.ndarray:
    """Fast WRM for linear models: c_T such that z_T = x + c_T·w, from the margins s_x = wᵀx + b.

    The same iterates as :func:`wrm_ascent` (up to rounding):
    c ← c + η_z[(σ(s_x + c‖w‖²) − y) − 2λc].
    """
    w, _ = model.split(theta)
    ww = float(w @ w)
    c = np.zeros_like(s_x)
    for _ in range(t_z):
        c += eta_z * ((expit(s_x + c * ww) - y) - 2.0 * lam * c)
    return c


def local_gradients(
    model,
    theta: np.ndarray,
    X: np.ndarray,
    y: np.ndarray,
    weights: np.ndarray,
    *,
    wrm: bool,
    lam: float,
    eta_z: float,
    t_z: int,
    fast: bool = True,
) -> np.ndarray:
    """What honest workers send (Algorithm 2, lines 5–6), for a stack of shards at once.

    ``X`` is ``(k, n, d)``, ``y`` and ``weights`` ``(k, n)``; returns ``(k, p)``: for each shard
    the weighted mean of ∇_θ f(θ; z) at the ε-optimal perturbed samples z (or at z = x when
    ``wrm`` is off: ERM and NBS). Both engines call this very function.
    """
    if not wrm or t_z == 0:
        return model.mean_grad_theta(theta, X, y, weights)
    if fast and getattr(model, "linear", False):
        s_x = model.margins(theta, X)
        c = wrm_line_coefficients(model, theta, s_x, y, lam, eta_z, t_z)
        return model.mean_grad_theta_on_line(theta, X, y, weights, c, s_x)
    Z = wrm_ascent(model, theta, X, y, lam, eta_z, t_z)
    return model.mean_grad_theta(theta, Z, y, weights)


# ---- Sec. VI-D: the cost of ε-optimality -------------------------------------------------


def concavity_constants(lam: float, l_zz: float) -> tuple[float, float]:
    """(λ_g, L_g) = (2λ − L_zz, 2λ + L_zz) for c = ‖z − x‖² (Sec. VI-D with L_c = 2)."""
    return 2.0 * lam - l_zz, 2.0 * lam + l_zz


def optimal_step(lam: float, l_zz: float) -> float:
    """η_z = 2/(L_g + λ_g), the step that minimizes the contraction factor."""
    lam_g, l_g = concavity_constants(lam, l_zz)
    return 2.0 / (l_g + lam_g)


def contraction(lam: float, l_zz: float, eta_z: float | None = None) -> float:
    """ρ: per-step contraction of ‖z_t − z*‖ for step ``eta_z`` (default: the optimal step).

    ρ(η) = max(|1 − ηλ_g|, |1 − ηL_g|); ρ ≥ 1 means no guarantee (λ_g ≤ 0 or a step too large).
    """
    lam_g, l_g = concavity_constants(lam, l_zz)
    if eta_z is None:
        eta_z = 2.0 / (l_g + lam_g)
    return max(abs(1.0 - eta_z * lam_g), abs(1.0 - eta_z * l_g))


def steps_for_epsilon(d_z: float, epsilon: float, rho: float) -> int:
    """T_z ≥ log(D_z/ε) / log(1/ρ): ascent steps that make ‖z_T − z*‖ ≤ ε (Sec. VI-D)."""
    if not 0.0 <= rho < 1.0:
        raise ValueError(f"No step count reaches ε when the contraction ρ = {rho:g} is not < 1.")
    if epsilon <= 0:
        raise ValueError(f"ε must be > 0. Got {epsilon!r} instead.")
    if d_z <= epsilon:
        return 0
    if rho == 0.0:
        return 1
    return math.ceil(math.log(d_z / epsilon) / math.log(1.0 / rho))


def ascent_residual(model, theta, Z, X, y, lam: float) -> np.ndarray:
    """‖∇g(z)‖ per sample: 0 exactly at the maximizer; ‖z − z*‖ ≤ ‖∇g(z)‖/λ_g when λ_g > 0."""
    return np.linalg.norm(ascent_gradient(model, theta, Z, X, y, lam), axis=-1)
