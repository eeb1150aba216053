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

Certified ε (Sec. VI-D): by λ_g-strong concavity, ‖z − z*‖ ≤ ‖∇g(z)‖/λ_g at every z, a bound
a worker gets for free (on the fast path ‖∇g‖ = |(σ − y) − 2λc|·‖w‖, the very residual of the
step). :func:`local_gradients_certified` ascends until every sample's bound is ≤ ε. It needs an
upper bound on L_zz = sup ‖∇²_z f‖: ``model.lipschitz_xx(θ)`` (closed form ‖w‖²/4 for logistic
regression). A model without a closed form must supply a bound (e.g. a spectral-norm product
bound over its layers); an estimate (power iteration on Hessian-vector products) is not a bound
and would make the certificate heuristic, so this module does not guess one.
"""

from __future__ import annotations

import math

import numpy as np

from .models import sigmoid

#: samples per chunk of the line recursion (4 chunk-sized float64 arrays stay in L2)
LINE_CHUNK = 32768


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
    ww, two_lam = float(w @ w), 2.0 * lam
    c = np.zeros(s_x.shape)
    flat_c = c.reshape(-1)
    flat_s = np.ascontiguousarray(s_x, dtype=np.float64).reshape(-1)
    flat_y = np.ascontiguousarray(np.broadcast_to(y, s_x.shape), dtype=np.float64).reshape(-1)
    t, u = np.empty(min(LINE_CHUNK, flat_c.size)), np.empty(min(LINE_CHUNK, flat_c.size))
    # The recursion is elementwise: run all T_z steps on one cache-sized chunk of samples at a
    # time, in place (no per-step allocations). Same operations, same bits, as
    # c += η_z·((σ(s_x + c·‖w‖²) − y) − 2λ·c) on the whole array.
    for a in range(0, flat_c.size, LINE_CHUNK):
        b = min(a + LINE_CHUNK, flat_c.size)
        cs, ss, ys, tt, uu = flat_c[a:b], flat_s[a:b], flat_y[a:b], t[: b - a], u[: b - a]
        for _ in range(t_z):
            np.multiply(cs, ww, out=tt)
            tt += ss
            sigmoid(tt, out=tt)
            tt -= ys
            tt -= np.multiply(cs, two_lam, out=uu)
            tt *= eta_z
            cs += tt
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


# ---- certified ε-optimal ascent -----------------------------------------------------------


def certificate_scale(lam: float, l_zz: float) -> float:
    """1/λ_g, the factor turning ‖∇g(z)‖ into the bound on ‖z − z*‖; ``inf`` when λ_g ≤ 0."""
    lam_g, _ = concavity_constants(lam, l_zz)
    return 1.0 / lam_g if lam_g > 0 else math.inf


def _certified_loop(state, residual, advance, mask, scale, epsilon, t_z_max):
    """The adaptive ascent shared by both paths, deciding per shard (axis 0).

    ``residual(idx, state_rows) -> (r, norms)`` gives the step direction and ‖∇g‖ per sample
    for shards ``idx``; ``advance(state_rows, r) -> new rows`` is the fixed-step update. Shard i
    stops at the first step t with max over its real samples of ‖∇g‖·scale ≤ ε, or at
    ``t_z_max``. A shard's iterates depend on its own rows only, so the result does not depend on
    which other shards share the stack (the Ray engine packs shards into actors freely).
    """
    k = state.shape[0]
    steps = np.zeros(k, dtype=np.int64)
    cert = np.full(mask.shape, np.inf)
    active = np.arange(k)
    for t in range(t_z_max + 1):
        rows = state[active]
        r, norms = residual(active, rows)
        ce = np.full(norms.shape, np.inf) if math.isinf(scale) else norms * scale
        worst = np.where(mask[active], ce, 0.0).max(axis=-1)
        done = worst <= epsilon if t < t_z_max else np.ones(active.size, dtype=bool)
        fin = active[done]
        cert[fin], steps[fin] = ce[done], t
        keep = ~done
        active = active[keep]
        if active.size == 0:
            break
        state[active] = advance(rows[keep], r[keep])
    return steps, cert


def wrm_line_certified(
    model, theta, s_x, y, mask, lam: float, eta_z: float, epsilon: float, t_z_max: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fast certified WRM for linear models: ``(c, steps, certificate)``.

    The iterates are those of :func:`wrm_line_coefficients`, bit for bit; shard i stops after
    ``steps[i]`` of them. ``certificate`` ``(k, n)`` is |(σ − y) − 2λc|·‖w‖/λ_g at the returned
    c (``inf`` when λ_g ≤ 0); ``mask`` marks real samples (padding never holds a shard back).
    """
    w, _ = model.split(theta)
    ww = float(w @ w)
    scale = certificate_scale(lam, model.lipschitz_xx(theta)) * math.sqrt(ww)
    c = np.zeros_like(s_x)

    def residual(idx, rows):
        r = (sigmoid(s_x[idx] + rows * ww) - y[idx]) - 2.0 * lam * rows
        return r, np.abs(r)

    steps, cert = _certified_loop(
        c, residual, lambda rows, r: rows + eta_z * r, mask, scale, epsilon, t_z_max
    )
    return c, steps, cert


def wrm_ascent_certified(
    model, theta, X, y, mask, lam: float, eta_z: float, epsilon: float, t_z_max: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Reference certified WRM on explicit z (any model with ``lipschitz_xx``): ``(z, steps,
    certificate)`` with certificate ‖∇g(z)‖/λ_g; the iterates are :func:`wrm_ascent`'s."""
    Z = np.array(X, dtype=np.float64, copy=True)
    scale = certificate_scale(lam, model.lipschitz_xx(theta))

    def residual(idx, rows):
        G = ascent_gradient(model, theta, rows, X[idx], y[idx], lam)
        return G, np.linalg.norm(G, axis=-1)

    steps, cert = _certified_loop(
        Z, residual, lambda rows, G: rows + eta_z * G, mask, scale, epsilon, t_z_max
    )
    return Z, steps, cert


def local_gradients_certified(
    model,
    theta: np.ndarray,
    X: np.ndarray,
    y: np.ndarray,
    weights: np.ndarray,
    *,
    lam: float,
    eta_z: float,
    epsilon: float,
    t_z_max: int,
    fast: bool = True,
) -> tuple[np.ndarray, dict]:
    """:func:`local_gradients` with the ascent run to a certified precision ε per sample.

    Each shard (logical worker) ascends until every one of its samples has ‖z − z*‖ ≤
    ‖∇g(z)‖/λ_g ≤ ε, or ``t_z_max`` steps. Returns the ``(k, p)`` gradients and the round's
    statistics, mergeable over shard groups (sums; ``*_max``: maxima): ``wrm_steps`` (ascent
    steps summed over shards), ``wrm_steps_max``, ``wrm_certificate_max``,
    ``wrm_certificate_sums`` (per shard) and ``wrm_samples`` (for the mean), ``wrm_capped``
    (shards that hit the cap uncertified) and ``wrm_uncertified`` (shards where λ_g ≤ 0: no
    certificate exists).
    """
    if not hasattr(model, "lipschitz_xx"):
        raise ValueError(
            f"Certified ε needs a bound on L_zz: model '{getattr(model, 'name', model)}' has no "
            "lipschitz_xx(theta). Give t_z (a fixed step count) instead of epsilon."
        )
    mask = weights > 0
    if fast and getattr(model, "linear", False):
        s_x = model.margins(theta, X)
        c, steps, cert = wrm_line_certified(
            model, theta, s_x, y, mask, lam, eta_z, epsilon, t_z_max
        )
        grads = model.mean_grad_theta_on_line(theta, X, y, weights, c, s_x)
    else:
        Z, steps, cert = wrm_ascent_certified(
            model, theta, X, y, mask, lam, eta_z, epsilon, t_z_max
        )
        grads = model.mean_grad_theta(theta, Z, y, weights)
    real = np.where(mask, cert, 0.0)
    worst = real.max(axis=-1)
    uncertified = math.isinf(certificate_scale(lam, model.lipschitz_xx(theta)))
    info = {
        "wrm_steps": int(steps.sum()),
        "wrm_steps_max": int(steps.max(initial=0)),
        "wrm_certificate_max": float(worst.max(initial=0.0)),
        # one sum per shard; the server adds them with math.fsum (exactly rounded, so the
        # total does not depend on how shards are grouped into actors)
        "wrm_certificate_sums": tuple(float(v) for v in real.sum(axis=-1)),
        "wrm_samples": int(mask.sum()),
        "wrm_capped": int(((worst > epsilon) & ~np.isinf(worst)).sum()),
        "wrm_uncertified": int(worst.size) if uncertified else 0,
    }
    return grads, info


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
