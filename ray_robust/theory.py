"""The paper's guarantees as functions: what holds for a given configuration, and why.

- Theorem 1 (NBS): with a fraction α < 1/2 of byzantine inputs and screening β ≥ α,
  ‖G − S‖ ≤ 2α/(1 − β)·‖S‖ + max_{i∈M} ‖g_i − S‖ for every vector S (:func:`theorem1_bound`).
- Lemma 2 / Theorems 2–3: convergence needs C_α = 2α/(1 − β) < 1, i.e. 2α + β < 1; with β ≥ α
  this forces α < 1/3, the NBS breakpoint of Sec. VI-C (:func:`verdict`, :data:`NBS_BREAKPOINT`).
- Sec. VI-C: the counterexample where NBS with α = β = 0.4 is dominated by four byzantine
  copies of −g₁₀ (:func:`counterexample`).
- Sec. VI-D: the WRM ascent's contraction ρ and the step count T_z for a target ε
  (:func:`ascent_plan`, reusing :mod:`ray_robust.core.wrm`).

α and β of a :class:`~ray_robust.config.Config` are the realized fractions ⌊αm⌉/m and ⌊βm⌉/m.

>>> round(c_alpha(0.15, 0.15), 3)
0.353
>>> verdict(Config(alpha=0.15, beta=0.15, attack="aggressive")).text
'converges per Theorem 2 (C_α = 2α/(1 − β) = 0.353 < 1; 2α + β = 0.45 < 1)'
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from .config import Config
from .core import wrm
from .core.aggregators import nbs

#: The breakpoint of any NBS-based algorithm (Sec. VI-C): 2α + β < 1 with β ≥ α needs α < 1/3,
#: not 1/2 as earlier NBS papers claimed.
NBS_BREAKPOINT = Fraction(1, 3)


def c_alpha(alpha: float, beta: float) -> float:
    """C_α = 2α/(1 − β), the coefficient of ‖∇F‖ in Lemma 2's bound on ‖G − ∇F‖."""
    if not 0 <= beta < 1:
        raise ValueError(f"The 'beta' parameter of c_alpha must be in [0, 1). Got {beta!r}.")
    return 2.0 * alpha / (1.0 - beta)


def nbs_breakpoint() -> Fraction:
    """1/3: the smallest byzantine fraction at which NBS-based algorithms lose the guarantee."""
    return NBS_BREAKPOINT


def theorem1_bound(S: np.ndarray, honest: np.ndarray, alpha: float, beta: float) -> float:
    """Theorem 1's right-hand side 2α/(1 − β)·‖S‖ + max_{i∈M} ‖g_i − S‖.

    ``honest`` holds the honest inputs g_i (rows), ``S`` any vector (e.g. the true gradient);
    the NBS output G of any input set with a fraction α < 1/2 byzantine and β ≥ α satisfies
    ‖G − S‖ ≤ this bound.
    """
    S = np.asarray(S, dtype=np.float64)
    honest = np.atleast_2d(np.asarray(honest, dtype=np.float64))
    spread = float(np.linalg.norm(honest - S, axis=1).max())
    return c_alpha(alpha, beta) * float(np.linalg.norm(S)) + spread


@dataclass(frozen=True)
class Verdict:
    """Whether the paper's convergence guarantee covers a configuration, in plain language."""

    covered: bool
    alpha: float
    beta: float
    c_alpha: float | None
    text: str

    def __str__(self) -> str:
        return self.text


def verdict(config: Config) -> Verdict:
    """Theorems 1–3 for ``config``: "converges per Theorem 2 (...)" or "outside the guarantee:
    ..." (with the reason and the NBS breakpoint 1/3)."""
    m = config.n_workers
    a, b = config.n_byzantine / m, config.n_screened / m
    bp = f"NBS breakpoint {NBS_BREAKPOINT}"
    if config.n_byzantine == 0:
        return Verdict(True, 0.0, b, 0.0,
                       "no byzantine workers: C_α = 0, the byzantine term of Lemma 2 vanishes")
    if config.aggregator != "nbs":
        why = ("plain averaging has no byzantine robustness: one worker can move G anywhere"
               if config.aggregator == "mean" else
               "Theorems 1–3 are proved for NBS; this rule's own guarantee is in its reference")
        return Verdict(False, a, b, None,
                       f"outside the guarantee: {config.n_byzantine} byzantine worker(s) and "
                       f"aggregator '{config.aggregator}' ({why}); use aggregator='nbs'")
    ca = c_alpha(a, b)
    if b < a:
        return Verdict(False, a, b, ca,
                       f"outside the guarantee: β = {b:.3g} < α = {a:.3g}, so NBS cannot screen "
                       f"every byzantine input (Theorem 1 needs β ≥ α); {bp}")
    if 2 * a + b >= 1:
        return Verdict(False, a, b, ca,
                       f"outside the guarantee: 2α + β = {2 * a + b:.3g} ≥ 1 (C_α = 2α/(1 − β) "
                       f"= {ca:.3g} ≥ 1); {bp}")
    return Verdict(True, a, b, ca,
                   f"converges per Theorem 2 (C_α = 2α/(1 − β) = {ca:.3g} < 1; "
                   f"2α + β = {2 * a + b:.3g} < 1)")


@dataclass(frozen=True)
class AscentPlan:
    """Sec. VI-D's numbers for one θ: the concavity constants, the step, ρ, and T_z for ε."""

    lam_g: float
    l_g: float
    eta_z: float
    rho: float
    t_z: int | None  # None: no step count reaches ε (ρ ≥ 1, e.g. λ_g ≤ 0)


def ascent_plan(
    lam: float, l_zz: float, epsilon: float, d_z: float, eta_z: float | None = None
) -> AscentPlan:
    """ρ and the a-priori count T_z ≥ log(D_z/ε)/log(1/ρ) for step ``eta_z`` (default: the
    optimal 2/(L_g + λ_g) = 1/(2λ) in this convention). ``d_z`` bounds ‖x − z*‖; for logistic
    regression ‖z* − x‖ ≤ ‖∇g(x)‖/λ_g ≤ ‖w‖/λ_g."""
    lam_g, l_g = wrm.concavity_constants(lam, l_zz)
    step = wrm.optimal_step(lam, l_zz) if eta_z is None else float(eta_z)
    rho = wrm.contraction(lam, l_zz, step)
    t_z = wrm.steps_for_epsilon(d_z, epsilon, rho) if rho < 1 else None
    return AscentPlan(lam_g, l_g, step, rho, t_z)


def ascent_plan_for(
    config: Config, theta: np.ndarray, X: np.ndarray, y: np.ndarray, epsilon: float
) -> AscentPlan:
    """:func:`ascent_plan` for a run's model, λ and step at θ on samples ``(X, y)``.

    L_zz is the model's bound ``lipschitz_xx(θ)``; D_z = max ‖x − z*‖ is bounded by the
    certificate at the start point, max ‖∇_x f(θ; x)‖/λ_g (∇g(x) = ∇_x f at z = x).
    """
    from .core.models import get_model

    model = get_model(config.model, **config.model_options())
    l_zz = model.lipschitz_xx(theta)
    lam_g, _ = wrm.concavity_constants(config.lam, l_zz)
    d_z = float(np.linalg.norm(model.grad_x(theta, X, y), axis=-1).max()) / lam_g
    return ascent_plan(config.lam, l_zz, epsilon, d_z if lam_g > 0 else np.inf, config.step_z)


@dataclass(frozen=True)
class Counterexample:
    """Sec. VI-C's inputs, NBS output and the paper's closed form (−4·g₁₀ + g₉ + g₁₀)/6."""

    inputs: np.ndarray
    byzantine: np.ndarray
    output: np.ndarray
    formula: np.ndarray
    honest_mean: np.ndarray


def counterexample(honest: np.ndarray | None = None) -> Counterexample:
    """Sec. VI-C: 4 byzantine + 6 honest inputs g₅ … g₁₀ (norm-descending), β = α = 0.4.

    The byzantine inputs all equal −g₁₀ (the smallest honest norm), so NBS screens the four
    largest honest inputs and outputs (−4·g₁₀ + g₉ + g₁₀)/6. Default honest inputs:
    g_i = (11 − i)·e₁ (norms 6, …, 1), whose mean is 3.5·e₁ while NBS outputs −e₁/6.
    """
    if honest is None:
        honest = np.arange(6, 0, -1, dtype=np.float64)[:, None] * np.array([[1.0, 0.0]])
    honest = np.asarray(honest, dtype=np.float64)
    if honest.ndim != 2 or honest.shape[0] != 6:
        raise ValueError(
            f"The 'honest' parameter of counterexample must be a (6, p) array. Got shape "
            f"{honest.shape} instead."
        )
    order = np.argsort(-np.linalg.norm(honest, axis=1), kind="stable")
    honest = honest[order]  # g₅ … g₁₀, norm-descending
    g9, g10 = honest[4], honest[5]
    inputs = np.vstack([np.tile(-g10, (4, 1)), honest])
    byz = np.zeros(10, dtype=bool)
    byz[:4] = True
    out = nbs(inputs, 0.4).vector
    return Counterexample(inputs, byz, out, (-4 * g10 + g9 + g10) / 6, honest.mean(axis=0))
