"""The WRM perturbation (Sinha et al. 2018), as an honest worker runs it in Algorithm 2, line 5.

Sinha et al.'s Alg. 1 with penalty γ = λ: find an approximate maximizer z of the inner problem
φ_λ(θ; x) = sup_z f(θ; z) − λ·c(z, x), then take ∇_θ f(θ; z), which is ∇_θ φ_λ at the exact
maximizer z* (their Lemma 1, Danskin); Zhou et al.'s Algorithm 2 runs that on each honest worker
(line 5: z, line 6: the local gradient) and Sec. VI-D counts the ascent steps an ε needs.

Convention (stated because the paper's OCR lost the coefficient): the cost is
c(z, x) = ‖z − x‖², and a worker maximizes

    g(z) = f(θ; z) − λ·‖z − x‖²,      ∇g(z) = ∇_z f(θ; z) − 2λ(z − x),

by T_z steps of gradient ascent z ← z + η_z ∇g(z) from z = x (Sec. VII). Only features are
perturbed, never labels. g is λ_g-strongly concave and L_g-smooth with (Sec. VI-D)

    λ_g = 2λ − L_zz,     L_g = 2λ + L_zz,

so a fixed step η_z contracts the distance to the maximizer z* by
ρ(η_z) = max(|1 − η_z λ_g|, |1 − η_z L_g|) per step; the best step 2/(L_g + λ_g) = 1/(2λ) gives
ρ = (L_g − λ_g)/(L_g + λ_g), and ‖z_T − z*‖ ≤ ρ^T D_z with D_z = ‖x − z*‖.

For a linear model (logistic, least squares) ∇_z f is a multiple of w, so every ascent iterate
is z_t = x + c_t·w with one scalar c_t per sample; for softmax regression ∇_z f lies in the span
of W's K columns, z_t = x + Wc_t with K scalars. The fast path below runs the same recursion on
c_t: O(N) per step (O(NK²) for softmax) after one pass over the data (issue 8, P5).

Certified ε (Sec. VI-D): by λ_g-strong concavity, ‖z − z*‖ ≤ ‖∇g(z)‖/λ_g at every z, a bound
a worker gets for free (on the fast path ‖∇g‖ = |r|·‖w‖, or √(rᵀ(WᵀW)r) for softmax, with r the
very residual of the step). :func:`local_gradients_certified` ascends until every sample's
bound is ≤ ε. It needs an upper bound on L_zz = sup ‖∇²_z f‖: ``model.lipschitz_xx(θ)``
(closed form ‖w‖²/4 for logistic regression). A model without a closed form must supply a
bound (e.g. a spectral-norm product bound over its layers); an estimate (power iteration on
Hessian-vector products) is not a bound and would make the certificate heuristic, so this
module does not guess one.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from .threads import line_threads, run_tasks  # noqa: F401 (line_threads re-exported)

#: scalars per chunk of the fast path's recursion (a chunk's few float64 arrays stay in L2)
LINE_CHUNK = 32768
#: smallest ‖w‖² for which the logistic kernel iterates on the margin's move (6 passes a step)
MARGIN_FORM_MIN_GRAM = 1e-100


def ascent_gradient(model, theta, Z, X, y, lam: float) -> np.ndarray:
    """∇g(z) = ∇_z f(θ; z) − 2λ(z − x) per sample: the gradient of the inner objective of φ_λ."""
    return model.grad_x(theta, Z, y) - 2.0 * lam * (Z - X)


def wrm_ascent(model, theta, X, y, lam: float, eta_z: float, t_z: int) -> np.ndarray:
    """Reference WRM (Algorithm 2, line 5): T_z explicit steps z ← z + η_z∇g(z) from z = x on
    every sample; returns z, shape ``X.shape``."""
    Z = np.array(X, dtype=np.float64, copy=True)
    for _ in range(t_z):
        Z += eta_z * ascent_gradient(model, theta, Z, X, y, lam)
    return Z


# ---- the exact fast path for linear models (issue 8, P5) ----------------------------------
#
# With z = x + c·w (z = x + Wc for softmax), ∇g(z) = w·r with the residual
# r = ∂f/∂s(s_x + Gc) − 2λc (G = ‖w‖², or WᵀW), so the ascent z ← z + η_z∇g(z) is exactly
# c ← c + η_z·r, and ‖∇g(z)‖ = ‖w‖·|r| (√(rᵀGr) for softmax). A kernel runs that recursion on
# a chunk of samples in place, as c ← a·c + η_z·μ(s_x + Gc) − η_z·y with a = 1 − 2λη_z and the
# per-sample constants precomputed once per chunk: fewer elementwise passes than evaluating r.
# At the end it also gives ∂f/∂s at z_T (μ(s_z) − y), which the θ-gradient needs, while the
# chunk is in cache. Every operation is elementwise (softmax's K×K products are written out as
# K² scaled adds, never BLAS), so a sample's bits depend on its own values only: not on its
# chunk, the thread that ran it, or which shards share the stack.
#
# Kernel protocol: ``prepare(s, y)`` the chunk's constants (a NamedTuple, one per kernel, each
# field an array over the chunk's samples); ``start(consts, out)`` the state at c = 0; per step
# ``increment`` (the μ term, into ``bufs``) then ``advance`` (the state); ``residual`` the
# certificate's per-sample norm (times ``norm_scale`` = ‖∇g‖) after ``increment``; ``final``
# ∂f/∂s at the state; ``finish`` c from the state. ``lead`` is the number of leading component
# axes of the state (0, or 1 for softmax's K), ``K`` the coefficients per sample.


@dataclass(frozen=True)
class _AscentStep:
    """The scalars of the ascent step c ← c + η_z·r = a·c + η_z·(∂f/∂s) (Alg. 1's inner
    ascent on the line) that every kernel uses."""

    eta_z: float  #: η_z, the WRM ascent step
    a: float  #: a = 1 − 2λη_z, the factor on c per step
    two_lam_eta_z: float  #: 2λη_z, the weight of c in η_z·r = η_z·∂f/∂s − 2λη_z·c

    @classmethod
    def of(cls, lam: float, eta_z: float) -> _AscentStep:
        return cls(eta_z, 1.0 - 2.0 * lam * eta_z, 2.0 * lam * eta_z)


def _zero_state(shape: tuple, out: np.ndarray | None = None) -> np.ndarray:
    """The state at c = 0 (z = x): a new zero array, or ``out`` zeroed in place."""
    if out is None:
        return np.zeros(shape)
    out.fill(0.0)
    return out


def _ignore_overflow():
    """Logistic kernels: e^{…} may overflow to inf, which gives σ = 0 exactly."""
    return np.errstate(over="ignore")


class _LogisticConsts(NamedTuple):
    """A chunk's constants for :class:`_LogisticLine`."""

    s_x: np.ndarray  #: s_x = ⟨w, x⟩ + b, the score at z = x
    eta_z_y: np.ndarray  #: η_z·y, the label term of a step
    y: np.ndarray  #: y, the label (∂f/∂s = σ(s) − y)


class _LogisticLine:
    """Logistic loss: c ← a·c + η_z·σ(s_x + ‖w‖²c) − η_z·y (state c, scores ``(…)``).

    Works for any ‖w‖ (also w = 0); :class:`_LogisticMarginLine` is the leaner form used when
    ‖w‖² is a normal float."""

    lead, K = 0, 1  # state arrays have the sample shape

    def __init__(self, gram: float, lam: float, eta_z: float):
        self.gram = float(gram)  # ‖w‖²
        self.step = _AscentStep.of(lam, eta_z)
        self.norm_scale = math.sqrt(self.gram) / eta_z  # ‖∇g‖ = ‖w‖·|η_z r|/η_z

    def prepare(self, s, y) -> _LogisticConsts:
        return _LogisticConsts(s, np.multiply(y, self.step.eta_z), y)  # s_x and y are views

    def start(self, consts: _LogisticConsts, out=None):
        return _zero_state(consts.s_x.shape, out)

    def buffers(self, shape):
        return np.empty(shape)

    def _sigmoid(self, c, s, out, scale: float) -> None:
        """out = scale·σ(s + ‖w‖²c) = scale/(1 + e^{−‖w‖²c − s}) (e^{…} = inf gives 0)."""
        np.multiply(c, -self.gram, out=out)
        out -= s
        np.exp(out, out=out)
        out += 1.0
        np.divide(scale, out, out=out)

    def increment(self, c, consts: _LogisticConsts, t) -> None:
        """t = η_z·σ(s_x + ‖w‖²c)."""
        self._sigmoid(c, consts.s_x, t, self.step.eta_z)

    def advance(self, c, consts: _LogisticConsts, t) -> None:
        """c ← a·c + t − η_z·y."""
        c *= self.step.a
        c += t
        c -= consts.eta_z_y

    def residual(self, c, consts: _LogisticConsts, t, out) -> None:
        """out = |η_z·r| = |η_zσ − η_z·y − 2λη_z·c| per sample (after :meth:`increment`)."""
        np.multiply(c, -self.step.two_lam_eta_z, out=out)
        out += t
        out -= consts.eta_z_y
        np.abs(out, out=out)

    def final(self, c, consts: _LogisticConsts, bufs, out) -> None:
        """out = ∂f/∂s at z = σ(s_x + ‖w‖²c) − y (the bits of ``sigmoid(s_z) − y``)."""
        self._sigmoid(c, consts.s_x, out, 1.0)
        out -= consts.y

    def finish(self, c, consts: _LogisticConsts):
        return c

    def errstate(self):
        return _ignore_overflow()


class _MarginConsts(NamedTuple):
    """A chunk's constants for :class:`_LogisticMarginLine`."""

    s_shift: np.ndarray  #: s' = s_x − ‖w‖²y/(2λ), the score with the label term moved in
    y_over_2lam: np.ndarray  #: y/(2λ), the shift c̃ − c of the coefficient
    y: np.ndarray  #: y, the label (∂f/∂s = σ(u) − y)


class _LogisticMarginLine:
    """Logistic loss in 6 elementwise passes per step instead of 8: the state is
    e = −‖w‖²(c + y/(2λ)), the margin's move shifted so the label term drops out.

    With c̃ = c + y/(2λ) the step c ← a·c + η_zσ(s_x + ‖w‖²c) − η_z·y is c̃ ← a·c̃ + η_zσ(u)
    (as 1 − a = 2λη_z), and u = s_x + ‖w‖²c = s' − e with s' = s_x − ‖w‖²y/(2λ); so per step
    t = ‖w‖²η_z/(1 + e^{e − s'}), e ← a·e − t. The residual is η_z·r = −(t + 2λη_z·e)/‖w‖²,
    and c = −e/‖w‖² − y/(2λ) at the end: divisions by ‖w‖², relative errors only (no
    cancellation), hence only for a normal ‖w‖² (else :class:`_LogisticLine`).
    """

    lead, K = 0, 1  # state arrays have the sample shape

    def __init__(self, gram: float, lam: float, eta_z: float):
        self.gram = float(gram)  # ‖w‖²
        self.step = _AscentStep.of(lam, eta_z)
        self.half_inv_lam = 0.5 / lam  # 1/(2λ)
        self.gram_eta_z = self.gram * eta_z  # ‖w‖²η_z
        self.norm_scale = 1.0 / (eta_z * math.sqrt(self.gram))  # ‖∇g‖ = |t + 2λη_z e|/(η_z‖w‖)

    def prepare(self, s, y) -> _MarginConsts:
        gy = np.multiply(y, self.half_inv_lam)  # y/(2λ)
        sp = np.multiply(gy, self.gram)
        np.subtract(s, sp, out=sp)  # s' = s_x − ‖w‖²y/(2λ)
        return _MarginConsts(sp, gy, y)

    def start(self, consts: _MarginConsts, out=None):
        return np.multiply(consts.y_over_2lam, -self.gram, out=out)  # e₀ = −‖w‖²·y/(2λ): c = 0

    def buffers(self, shape):
        return np.empty(shape)

    def increment(self, e, consts: _MarginConsts, t) -> None:
        """t = ‖w‖²η_z·σ(u) = ‖w‖²η_z/(1 + e^{e − s'})."""
        np.subtract(e, consts.s_shift, out=t)
        np.exp(t, out=t)
        t += 1.0
        np.divide(self.gram_eta_z, t, out=t)

    def advance(self, e, consts: _MarginConsts, t) -> None:
        """e ← a·e − t."""
        e *= self.step.a
        e -= t

    def residual(self, e, consts: _MarginConsts, t, out) -> None:
        """out = |t + 2λη_z·e| = ‖w‖²·|η_z·r|."""
        np.multiply(e, self.step.two_lam_eta_z, out=out)
        out += t
        np.abs(out, out=out)

    def final(self, e, consts: _MarginConsts, bufs, out) -> None:
        """out = σ(u) − y = 1/(1 + e^{e − s'}) − y."""
        np.subtract(e, consts.s_shift, out=out)
        np.exp(out, out=out)
        out += 1.0
        np.divide(1.0, out, out=out)
        out -= consts.y

    def finish(self, e, consts: _MarginConsts):
        """c = −e/‖w‖² − y/(2λ), in place."""
        np.divide(e, -self.gram, out=e)
        e -= consts.y_over_2lam
        return e

    def errstate(self):
        return _ignore_overflow()


class _IdentityConsts(NamedTuple):
    """A chunk's constants for :class:`_IdentityLine`."""

    p: np.ndarray  #: p = η_z(s_x − y), the constant term of a step
    s_x: np.ndarray  #: s_x = ⟨w, x⟩ + b, the score at z = x
    y: np.ndarray  #: y, the target (∂f/∂s = s − y)


class _IdentityLine:
    """Least squares: r = s_x + ‖w‖²c − y − 2λc is affine in c, so the step is
    c ← b·c + p with b = 1 + η_z(‖w‖² − 2λ), p = η_z(s_x − y)."""

    lead, K = 0, 1  # state arrays have the sample shape

    def __init__(self, gram: float, lam: float, eta_z: float):
        self.gram = float(gram)  # ‖w‖²
        self.eta_z = eta_z
        self.norm_scale = math.sqrt(self.gram) / eta_z  # ‖∇g‖ = ‖w‖·|η_z r|/η_z
        self.b_minus_1 = eta_z * (self.gram - 2.0 * lam)  # b − 1 = η_z(‖w‖² − 2λ)
        self.b = 1.0 + self.b_minus_1

    def prepare(self, s, y) -> _IdentityConsts:
        p = np.subtract(s, y)
        p *= self.eta_z
        return _IdentityConsts(p, s, y)

    def start(self, consts: _IdentityConsts, out=None):
        return _zero_state(consts.p.shape, out)

    def buffers(self, shape):
        return np.empty(shape)

    def increment(self, c, consts: _IdentityConsts, t) -> None:
        """Nothing: the step is affine in c."""

    def advance(self, c, consts: _IdentityConsts, t) -> None:
        """c ← b·c + p."""
        c *= self.b
        c += consts.p

    def residual(self, c, consts: _IdentityConsts, t, out) -> None:
        """out = |η_z·r| = |p + (b − 1)c|."""
        np.multiply(c, self.b_minus_1, out=out)
        out += consts.p
        np.abs(out, out=out)

    def final(self, c, consts: _IdentityConsts, bufs, out) -> None:
        """out = ∂f/∂s at z = s_x + ‖w‖²c − y."""
        np.multiply(c, self.gram, out=out)
        out += consts.s_x
        out -= consts.y

    def finish(self, c, consts: _IdentityConsts):
        return c

    def errstate(self):
        return contextlib.nullcontext()


class _SoftmaxConsts(NamedTuple):
    """A chunk's constants for :class:`_SoftmaxLine`, component-major (``(K, …)``)."""

    S_x: np.ndarray  #: S_x = Wᵀx + b, the K scores at z = x
    eta_z_e_y: np.ndarray  #: η_z·e_y, the label term of a step
    e_y: np.ndarray  #: e_y, the one-hot label (∂f/∂S = softmax(S) − e_y)


class _SoftmaxLine:
    """Softmax regression: C ← a·C + η_z·softmax(S_x + GC) − η_z·e_y with G = WᵀW, the K
    coefficients stored component-major (state ``(K, …)``, scores ``(…, K)``)."""

    lead = 1

    def __init__(self, gram: np.ndarray, lam: float, eta_z: float):
        self.G = np.asarray(gram, dtype=np.float64)  # G = WᵀW, K × K
        self.K = self.G.shape[0]
        self.step = _AscentStep.of(lam, eta_z)
        self.norm_scale = 1.0 / eta_z  # ‖∇g‖ = ‖W(η_z r)‖/η_z = √((η_z r)ᵀG(η_z r))/η_z

    def prepare(self, s, y) -> _SoftmaxConsts:
        S = np.ascontiguousarray(np.moveaxis(s, -1, 0))
        E = np.stack([(y == j).astype(np.float64) for j in range(self.K)])  # e_y
        return _SoftmaxConsts(S, E * self.step.eta_z, E)

    def start(self, consts: _SoftmaxConsts, out=None):
        return _zero_state(consts.S_x.shape, out)

    def buffers(self, shape):
        """T (the step's softmax term), a per-sample scratch row, and R and GR for the
        certificate's residual (allocated once per chunk, not per step)."""
        return np.empty(shape), np.empty(shape[1:]), np.empty(shape), np.empty(shape)

    def _times_gram(self, C, out, tmp) -> None:
        """out_i = Σ_j G_ji C_j, as scaled adds in a fixed order."""
        for i in range(self.K):
            np.multiply(C[0], self.G[0, i], out=out[i])
            for j in range(1, self.K):
                out[i] += np.multiply(C[j], self.G[j, i], out=tmp)

    def _softmax(self, C, S, out, tmp, scale: float) -> None:
        """out = scale·softmax(S + GC), stabilized by the per-sample maximum."""
        self._times_gram(C, out, tmp)
        out += S
        np.copyto(tmp, out[0])
        for i in range(1, self.K):
            np.maximum(tmp, out[i], out=tmp)
        out -= tmp
        np.exp(out, out=out)
        np.copyto(tmp, out[0])
        for i in range(1, self.K):
            tmp += out[i]
        np.divide(scale, tmp, out=tmp)
        out *= tmp

    def increment(self, C, consts: _SoftmaxConsts, bufs) -> None:
        """T = η_z·softmax(S_x + GC)."""
        self._softmax(C, consts.S_x, bufs[0], bufs[1], self.step.eta_z)

    def advance(self, C, consts: _SoftmaxConsts, bufs) -> None:
        """C ← a·C + T − η_z·e_y."""
        C *= self.step.a
        C += bufs[0]
        C -= consts.eta_z_e_y

    def residual(self, C, consts: _SoftmaxConsts, bufs, out) -> None:
        """out = ‖W(η_z r)‖ = √(Σ_i R_i (GR)_i) with R = η_z r = T − η_z·e_y − 2λη_z·C."""
        T, tmp, R, GR = bufs
        np.multiply(C, -self.step.two_lam_eta_z, out=R)
        R += T
        R -= consts.eta_z_e_y
        self._times_gram(R, GR, tmp)
        np.multiply(R[0], GR[0], out=out)
        for i in range(1, self.K):
            out += np.multiply(R[i], GR[i], out=tmp)
        np.maximum(out, 0.0, out=out)  # G is PSD: only rounding can make it negative
        np.sqrt(out, out=out)

    def final(self, C, consts: _SoftmaxConsts, bufs, out) -> None:
        """out = ∂f/∂S at z = softmax(S_x + GC) − e_y."""
        self._softmax(C, consts.S_x, out, bufs[1], 1.0)
        out -= consts.e_y

    def finish(self, C, consts: _SoftmaxConsts):
        return np.moveaxis(C, 0, -1)

    def errstate(self):
        return contextlib.nullcontext()


_LINE_KERNELS = {"logistic": _LogisticLine, "identity": _IdentityLine, "softmax": _SoftmaxLine}


def _line_kernel(model, theta, lam: float, eta_z: float):
    """The kernel for ``model.line_link`` at θ (the margin form for a normal ‖w‖²)."""
    link = getattr(model, "line_link", "")
    if link not in _LINE_KERNELS:
        raise ValueError(f"Model '{getattr(model, 'name', model)}' has no WRM line kernel "
                         f"(line_link = {link!r}); use fast=False.")
    gram = model.line_gram(theta)
    if link == "logistic" and gram >= MARGIN_FORM_MIN_GRAM:
        return _LogisticMarginLine(gram, lam, eta_z)
    return _LINE_KERNELS[link](gram, lam, eta_z)


def _line_fixed(model, theta, s_x, y, lam: float, eta_z: float, t_z: int):
    """``(c_T, ∂f/∂s at z_T)``, both shaped like ``s_x``: Algorithm 2, line 5 on the line, as
    T_z kernel steps per chunk of samples (``LINE_CHUNK`` scalars), the chunks spread over
    threads."""
    kern = _line_kernel(model, theta, lam, eta_z)
    tail = s_x.shape[s_x.ndim - kern.lead:]
    s = np.ascontiguousarray(s_x, dtype=np.float64).reshape(-1, *tail)
    yy = np.ascontiguousarray(np.broadcast_to(y, s_x.shape[: s_x.ndim - kern.lead]),
                              dtype=np.float64).reshape(-1)
    c, r = np.empty(s.shape), np.empty(s.shape)  # every chunk writes its rows
    size = max(1, LINE_CHUNK // kern.K)

    def run(a: int) -> None:
        b = min(a + size, yy.size)
        consts = kern.prepare(s[a:b], yy[a:b])
        state = kern.start(consts, c[a:b] if kern.lead == 0 else None)  # binary: in place
        bufs = kern.buffers(state.shape)
        out = r[a:b] if kern.lead == 0 else np.empty(state.shape)
        with kern.errstate():
            for _ in range(t_z):
                kern.increment(state, consts, bufs)
                kern.advance(state, consts, bufs)
            kern.final(state, consts, bufs, out)
        state = kern.finish(state, consts)
        if kern.lead:
            c[a:b], r[a:b] = state, np.moveaxis(out, 0, -1)

    run_tasks(run, list(range(0, yy.size, size)))
    return c.reshape(s_x.shape), r.reshape(s_x.shape)


def wrm_line_coefficients(model, theta, s_x, y, lam: float, eta_z: float, t_z: int) -> np.ndarray:
    """Fast WRM for linear models (Algorithm 2, line 5): c_T such that z_T = x + c_T·w
    (x + Wc_T for softmax), from the scores s_x = ``model.scores(θ, x)``; shape ``s_x.shape``.

    The iterates of :func:`wrm_ascent` (up to rounding): c ← c + η_z·r, r the residual above.
    """
    return _line_fixed(model, theta, s_x, y, lam, eta_z, t_z)[0]


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
    ``wrm`` is off: ERM and NBS), Sinha et al.'s Alg. 1 gradient ∇_θ f(θ; z) ≈ ∇_θ φ_λ(θ; x).
    Both engines call this very function. ``fast`` (default) takes the exact fast path for a
    ``linear`` model; ``fast=False`` the explicit ascent.
    """
    if not wrm or t_z == 0:
        return model.mean_grad_theta(theta, X, y, weights)
    if fast and getattr(model, "linear", False):
        s_x = model.scores(theta, X)
        c, r = _line_fixed(model, theta, s_x, y, lam, eta_z, t_z)
        return model.mean_grad_theta_on_line(theta, X, y, weights, c, s_x, residual=r)
    Z = wrm_ascent(model, theta, X, y, lam, eta_z, t_z)
    return model.mean_grad_theta(theta, Z, y, weights)


# ---- certified ε-optimal ascent -----------------------------------------------------------


def certificate_scale(lam: float, l_zz: float) -> float:
    """1/λ_g, the factor turning ‖∇g(z)‖ into the bound ‖z − z*‖ ≤ ‖∇g(z)‖/λ_g of λ_g-strong
    concavity (Sec. VI-D); ``inf`` when λ_g ≤ 0."""
    lam_g, _ = concavity_constants(lam, l_zz)
    return 1.0 / lam_g if lam_g > 0 else math.inf


def _certified_loop(state, residual, advance, mask, scale, epsilon, t_z_max):
    """The adaptive ascent of the explicit (reference) path, deciding per shard (axis 0): line 5
    run until the Sec. VI-D bound certifies ε.

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


def _line_certified(model, theta, s_x, y, mask, lam, eta_z, epsilon, t_z_max):
    """``(c, steps, certificate, ∂f/∂s at z)``: see :func:`wrm_line_certified`."""
    kern = _line_kernel(model, theta, lam, eta_z)
    k, n = mask.shape
    lam_scale = certificate_scale(lam, model.lipschitz_xx(theta))
    scale = lam_scale * kern.norm_scale if not math.isinf(lam_scale) else math.inf
    s_x = np.asarray(s_x, dtype=np.float64)
    y = np.broadcast_to(y, (k, n))
    c, r = np.zeros(s_x.shape), np.empty(s_x.shape)
    steps = np.zeros(k, dtype=np.int64)
    cert = np.full((k, n), np.inf)
    rows = max(1, LINE_CHUNK // max(1, n * kern.K))

    def take(x, keep):
        return x[(slice(None),) * kern.lead + (keep,)]

    def run(a: int) -> None:
        b = min(a + rows, k)
        ids, m = np.arange(a, b), mask[a:b]
        consts = kern.prepare(s_x[a:b], y[a:b])
        state = kern.start(consts)
        bufs = kern.buffers(state.shape)
        norms = np.empty(m.shape)
        with kern.errstate():
            for t in range(t_z_max + 1):
                kern.increment(state, consts, bufs)
                if math.isinf(scale):
                    ce = np.full(m.shape, np.inf)
                else:
                    kern.residual(state, consts, bufs, norms)
                    ce = norms * scale
                worst = np.max(ce, axis=-1, where=m, initial=0.0)
                done = worst <= epsilon if t < t_z_max else np.ones(ids.size, dtype=bool)
                if done.any():  # stopped shards leave the chunk: c, ∂f/∂s, certificate, steps
                    fin, f_state = ids[done], take(state, done)
                    f_consts = consts._make(take(x, done) for x in consts)
                    out = np.empty(f_state.shape)
                    kern.final(f_state, f_consts, kern.buffers(f_state.shape), out)
                    c[fin] = kern.finish(f_state, f_consts)
                    r[fin] = np.moveaxis(out, 0, -1) if kern.lead else out
                    cert[fin], steps[fin] = ce[done], t
                    if done.all():
                        return
                    keep = ~done
                    ids, m, state = ids[keep], m[keep], take(state, keep)
                    consts = consts._make(take(x, keep) for x in consts)
                    bufs, norms = kern.buffers(state.shape), np.empty(m.shape)
                    kern.increment(state, consts, bufs)  # elementwise: the same values again
                kern.advance(state, consts, bufs)

    run_tasks(run, list(range(0, k, rows)))
    return c, steps, cert, r


def wrm_line_certified(
    model, theta, s_x, y, mask, lam: float, eta_z: float, epsilon: float, t_z_max: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fast certified WRM for linear models (line 5 to a certified ε, Sec. VI-D): ``(c, steps,
    certificate)``.

    The iterates are those of :func:`wrm_line_coefficients`, bit for bit (same kernel, same
    operations); shard i (axis 0) stops after ``steps[i]`` of them, at the first step whose
    certificate max over its real samples is ≤ ε (or at ``t_z_max``). ``certificate`` ``(k, n)``
    is ‖∇g(z)‖/λ_g at the returned z, computed exactly on the subspace: |r|·‖w‖/λ_g, or
    √(rᵀ(WᵀW)r)/λ_g for softmax (``inf`` when λ_g ≤ 0); ``mask`` marks real samples (padding
    never holds a shard back). Runs on chunks of whole shards, each shard's rows compacted
    out of its chunk once it stops (no per-step re-indexing).
    """
    return _line_certified(model, theta, s_x, y, mask, lam, eta_z, epsilon, t_z_max)[:3]


def wrm_ascent_certified(
    model, theta, X, y, mask, lam: float, eta_z: float, epsilon: float, t_z_max: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Reference certified WRM on explicit z (any model with ``lipschitz_xx``; Sec. VI-D):
    ``(z, steps, certificate)`` with certificate ‖∇g(z)‖/λ_g; the iterates are
    :func:`wrm_ascent`'s."""
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
    """:func:`local_gradients` with the ascent run to a certified precision ε per sample
    (Algorithm 2, lines 5–6 with Sec. VI-D's ε-optimal z).

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
        s_x = model.scores(theta, X)
        c, steps, cert, r = _line_certified(
            model, theta, s_x, y, mask, lam, eta_z, epsilon, t_z_max
        )
        grads = model.mean_grad_theta_on_line(theta, X, y, weights, c, s_x, residual=r)
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
    """η_z = 2/(L_g + λ_g) = 1/(2λ), the step that minimizes the contraction ρ (Sec. VI-D)."""
    lam_g, l_g = concavity_constants(lam, l_zz)
    return 2.0 / (l_g + lam_g)


def contraction(lam: float, l_zz: float, eta_z: float | None = None) -> float:
    """ρ: per-step contraction of ‖z_t − z*‖ for step ``eta_z`` (default: the optimal step),
    Sec. VI-D.

    ρ(η_z) = max(|1 − η_zλ_g|, |1 − η_zL_g|); ρ ≥ 1 means no guarantee (λ_g ≤ 0 or a step
    too large).
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
    """‖∇g(z)‖ per sample: 0 exactly at the maximizer; ‖z − z*‖ ≤ ‖∇g(z)‖/λ_g when λ_g > 0
    (Sec. VI-D)."""
    return np.linalg.norm(ascent_gradient(model, theta, Z, X, y, lam), axis=-1)
