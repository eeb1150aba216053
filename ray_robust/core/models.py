"""Models with analytic gradients in θ and in the input x (needed by the WRM ascent).

Shapes: features ``X`` are ``(..., n, d)`` (any leading batch axes, e.g. ``(k, n, d)`` for the
``k`` shards a worker holds), labels ``y`` are ``(..., n)``. Parameters ``theta`` are a flat
vector of length ``model.n_params(d)``.

Logistic regression, Sec. VII: f(θ; x, y) = −y ln a − (1 − y) ln(1 − a), a = σ(wᵀx + b),
θ = (w, b). Written as softplus(s) − y·s with s = wᵀx + b, which never overflows.

Also: multinomial logistic (softmax) regression, least squares, and a one-hidden-layer tanh
MLP (the nonconvex case of Theorem 2). Each has the same methods (``n_params``, ``init``,
``split``, ``loss``, ``grad_x``, ``mean_grad_theta``, ``lipschitz_xx``, ``predict``,
``flip_labels``); the new ones also evaluate themselves under the worst-case test shift
(``error_under_shift``, which :func:`ray_robust.core.shift.error_rate` calls).

``linear`` means "WRM's exact fast path in :mod:`ray_robust.core.wrm` applies" (issue 8, P5):
the score s = ``scores(θ, x)`` is affine in x with ∇_x s = w (K columns of W for softmax), so
∇_x f = w·∂f/∂s and every ascent iterate is z = x + c·w (z = x + Wc, c ∈ R^K, for softmax), with
s_z = s_x + (wᵀw)c. Such a model gives ``scores``, ``line_gram`` (wᵀw, or WᵀW ``(K, K)``),
``line_link`` (which ∂f/∂s the kernels in wrm.py compute: ``"logistic"`` σ(s) − y,
``"identity"`` s − y, ``"softmax"`` softmax(S) − e_y) and ``mean_grad_theta_on_line``. Logistic,
least squares and softmax are linear; the MLP runs the explicit ascent (``wrm_ascent``).
"""

from __future__ import annotations

import numpy as np
from scipy.special import log_softmax, softmax

#: features per shard from which the binary linear models compute margins with einsum
STREAM_MIN_SHARD = 1 << 18


def sigmoid(x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """σ(x) = 1/(1 + e^{−x}) with numpy's SIMD exp: ≈ 4× faster than scipy's ``expit`` on
    this machine, within 2.2e-16 of it. e^{−x} overflowing to inf gives exactly 0. Every model
    here uses this one σ (issue 8, P5: the WRM fast path and the ERM gradient alike)."""
    if out is None:
        out = np.empty(np.shape(x))
    np.negative(x, out=out)
    with np.errstate(over="ignore"):
        np.exp(out, out=out)
    out += 1.0
    return np.divide(1.0, out, out=out)  # = np.reciprocal, bit for bit, ≈ 2× faster here


class _BinaryCrossEntropy:
    """Shared by the binary models: f = softplus(s) − y·s of the margin s = ``margins(θ, x)``
    (never overflows), labels in {0, 1}."""

    def loss(self, theta: np.ndarray, X: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Per-sample cross-entropy f(θ; x, y), shape ``y.shape``."""
        s = self.margins(theta, X)
        return np.logaddexp(0.0, s) - y * s

    def predict(self, theta: np.ndarray, X: np.ndarray) -> np.ndarray:
        """Predicted labels in {0, 1} (1 when s > 0)."""
        return (self.margins(theta, X) > 0).astype(np.int8)

    def flip_labels(self, y: np.ndarray) -> np.ndarray:
        """Label flipping (a data attack): y ↦ 1 − y."""
        return 1.0 - y


class _LinearGLM:
    """Shared by the binary linear models: θ = (w, b), score s = wᵀx + b, ∂f/∂s = μ(s) − y with
    the mean function μ (``_mean_inplace``: σ or the identity), so ∇_x f = (μ(s) − y)·w and
    ∇_θ f = (μ(s) − y)·(x, 1). Every method is vectorized over all samples of all shards."""

    #: ∇_x f lies on the line spanned by w: the WRM fast path applies (z = x + c·w)
    linear = True
    line_link = ""

    def n_params(self, d: int) -> int:
        return d + 1

    @staticmethod
    def split(theta: np.ndarray) -> tuple[np.ndarray, float]:
        return theta[:-1], theta[-1]

    def init(self, d: int, rng: np.random.Generator, scale: float = 0.01) -> np.ndarray:
        """A shared random initialization θ₀ ~ N(0, scale²) (Sec. VII)."""
        return rng.normal(0.0, scale, size=self.n_params(d))

    def margins(self, theta: np.ndarray, X: np.ndarray) -> np.ndarray:
        """s = wᵀx + b, shape ``X.shape[:-1]``.

        Stacks of large shards (≥ ``STREAM_MIN_SHARD`` features per shard) go through numpy's
        einsum: one core streams X at the memory bandwidth (as fast here as OpenBLAS's two
        threads) and no BLAS thread is left spinning while the WRM kernel's threads start
        (issue 8, P5). The choice depends on the shard's shape only, so any grouping of shards
        (the engines' packings) gives the same bits."""
        w, b = self.split(theta)
        if X.ndim >= 3 and X.shape[-2] * X.shape[-1] >= STREAM_MIN_SHARD:
            s = np.einsum("...d,d->...", X, w)
            s += b
            return s
        return X @ w + b

    scores = margins

    def line_gram(self, theta: np.ndarray) -> float:
        """‖w‖²: the margin of z = x + c·w is s_x + c‖w‖²."""
        w, _ = self.split(theta)
        return float(w @ w)

    def _mean_inplace(self, s: np.ndarray) -> np.ndarray:
        """μ(s), overwriting ``s`` (a temporary the caller owns)."""
        raise NotImplementedError

    def grad_x(self, theta: np.ndarray, X: np.ndarray, y: np.ndarray) -> np.ndarray:
        """∇_x f(θ; x, y) = (μ(s) − y)·w per sample, shape ``X.shape``."""
        w, _ = self.split(theta)
        r = self._mean_inplace(self.margins(theta, X)) - y
        return r[..., None] * w

    def mean_grad_theta(
        self, theta: np.ndarray, Z: np.ndarray, y: np.ndarray, weights: np.ndarray
    ) -> np.ndarray:
        """Per-shard weighted mean of ∇_θ f(θ; z) (Algorithm 2, line 6), shape ``(k, p)``.

        ``Z`` is ``(k, n, d)``; ``weights`` is ``(k, n)`` with rows summing to one (zeros mark
        padding in uneven shards).
        """
        r = weights * (self._mean_inplace(self.margins(theta, Z)) - y)  # (k, n)
        gw = np.matmul(r[:, None, :], Z)[:, 0, :]  # (k, d), one product per shard
        return np.concatenate([gw, r.sum(axis=-1, keepdims=True)], axis=-1)

    def mean_grad_theta_on_line(
        self,
        theta: np.ndarray,
        X: np.ndarray,
        y: np.ndarray,
        weights: np.ndarray,
        c: np.ndarray,
        s_x: np.ndarray,
        residual: np.ndarray | None = None,
    ) -> np.ndarray:
        """As :meth:`mean_grad_theta` for z = x + c·w, without forming z (the fast path).

        With s_z = s_x + c‖w‖²: Σ r z = Xᵀr + (Σ r c)·w, so one pass over X suffices.
        ``residual``: μ(s_z) − y if the caller has it (the WRM kernel does; it is overwritten).
        """
        w, _ = self.split(theta)
        if residual is None:
            residual = self._mean_inplace(s_x + c * (w @ w))
            residual -= y
        r = residual
        r *= weights  # (k, n)
        gw = np.matmul(r[:, None, :], X)[:, 0, :] + (r * c).sum(axis=-1)[:, None] * w
        return np.concatenate([gw, r.sum(axis=-1, keepdims=True)], axis=-1)


class LogisticRegression(_BinaryCrossEntropy, _LinearGLM):
    """Binary logistic regression, θ = (w, b) with ``p = d + 1`` parameters:
    ∇_x f(θ; x) = (σ(s) − y)·w.
    """

    name = "logistic"
    line_link = "logistic"

    def _mean_inplace(self, s: np.ndarray) -> np.ndarray:
        """σ(s), in place."""
        return sigmoid(s, out=s) if isinstance(s, np.ndarray) and s.ndim else sigmoid(s)

    def lipschitz_xx(self, theta: np.ndarray) -> float:
        """L_zz: ‖∇²_x f‖ = σ(1 − σ)‖w‖² ≤ ‖w‖²/4 (Sec. VI-D's smoothness of f in z)."""
        w, _ = self.split(theta)
        return float(w @ w) / 4.0


def _weighted_theta_grad(R: np.ndarray, Z: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Per shard Σ_n w_n·R_n ⊗ z_n, flattened as (d, K): shape ``(k, d·K)`` for R ``(k, n, K)``."""
    return np.einsum("knd,knc->kdc", Z, weights[..., None] * R).reshape(Z.shape[0], -1)


class SoftmaxRegression:
    """Multinomial logistic regression, θ = (W, b), W ``(d, K)``, b ``(K,)``: ``p = (d + 1)K``.

    f(θ; x, y) = logsumexp(Wᵀx + b) − (Wᵀx + b)_y, labels y ∈ {0, …, K − 1} stored as floats.
    """

    name = "softmax"
    #: ∇_x f = W(softmax(S) − e_y) lies in the span of W's K columns: the WRM fast path
    #: applies with z = x + Wc, c ∈ R^K per sample, and logits S_z = S_x + (WᵀW)c
    linear = True
    line_link = "softmax"

    def __init__(self, n_classes: int = 2):
        if isinstance(n_classes, bool) or not isinstance(n_classes, int) or n_classes < 2:
            raise ValueError(f"The 'n_classes' parameter of the softmax model must be an integer "
                             f">= 2. Got {n_classes!r} instead.")
        self.n_classes = n_classes

    def n_params(self, d: int) -> int:
        return (d + 1) * self.n_classes

    def split(self, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        K = self.n_classes
        d = theta.size // K - 1
        return theta[: d * K].reshape(d, K), theta[d * K :]

    def init(self, d: int, rng: np.random.Generator, scale: float = 0.01) -> np.ndarray:
        return rng.normal(0.0, scale, size=self.n_params(d))

    def logits(self, theta: np.ndarray, X: np.ndarray) -> np.ndarray:
        """S = XW + b, shape ``X.shape[:-1] + (K,)``."""
        W, b = self.split(theta)
        return X @ W + b

    scores = logits

    def line_gram(self, theta: np.ndarray) -> np.ndarray:
        """WᵀW ``(K, K)``: the logits of z = x + Wc are S_x + (WᵀW)c."""
        W, _ = self.split(theta)
        return W.T @ W

    def _onehot(self, y: np.ndarray) -> np.ndarray:
        return (y[..., None] == np.arange(self.n_classes)).astype(np.float64)

    def loss(self, theta: np.ndarray, X: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Per-sample cross-entropy −log softmax(S)_y."""
        return -(log_softmax(self.logits(theta, X), axis=-1) * self._onehot(y)).sum(axis=-1)

    def predict(self, theta: np.ndarray, X: np.ndarray) -> np.ndarray:
        return self.logits(theta, X).argmax(axis=-1)

    def _residual(self, theta, X, y) -> np.ndarray:
        return softmax(self.logits(theta, X), axis=-1) - self._onehot(y)

    def grad_x(self, theta: np.ndarray, X: np.ndarray, y: np.ndarray) -> np.ndarray:
        """∇_x f = W(softmax(S) − e_y), shape ``X.shape``."""
        W, _ = self.split(theta)
        return self._residual(theta, X, y) @ W.T

    def mean_grad_theta(self, theta, Z, y, weights) -> np.ndarray:
        """Per-shard weighted mean of ∇_θ f at ``Z`` ``(k, n, d)``: shape ``(k, p)``."""
        R = self._residual(theta, Z, y)
        gb = (weights[..., None] * R).sum(axis=1)
        return np.concatenate([_weighted_theta_grad(R, Z, weights), gb], axis=-1)

    def mean_grad_theta_on_line(self, theta, X, y, weights, c, s_x, residual=None):
        """As :meth:`mean_grad_theta` for z = x + Wc (``c`` ``(k, n, K)``, ``s_x`` the logits
        at x), without forming z: Σ z ⊗ r = Σ x ⊗ r + W·Σ c ⊗ r, one pass over X.
        ``residual``: softmax(S_z) − e_y if the caller has it (the WRM kernel does)."""
        W, _ = self.split(theta)
        R = residual
        if R is None:
            R = softmax(s_x + c @ self.line_gram(theta), axis=-1) - self._onehot(y)
        wR = weights[..., None] * R
        gW = np.einsum("knd,knc->kdc", X, wR) + W @ np.einsum("knj,knc->kjc", c, wR)
        return np.concatenate([gW.reshape(X.shape[0], -1), wR.sum(axis=1)], axis=-1)

    def lipschitz_xx(self, theta: np.ndarray) -> float:
        """L_zz ≤ ‖W‖₂²/2: ∇²_x f = W(diag(π) − ππᵀ)Wᵀ and ‖diag(π) − ππᵀ‖ ≤ 1/2."""
        W, _ = self.split(theta)
        return float(np.linalg.norm(W, 2) ** 2) / 2.0

    def flip_labels(self, y: np.ndarray) -> np.ndarray:
        """Label flipping: y ↦ K − 1 − y."""
        return (self.n_classes - 1) - y

    def error_under_shift(self, theta, X, y, norm: str | None = None, eps: float = 0.0) -> float:
        """Misclassification rate when each x may move within ‖z − x‖_p ≤ ε (closed form).

        x is misclassified at some z iff max_{k≠y} (S_k − S_y) + ε‖w_k − w_y‖_q ≥ 0 (q dual
        to p): the exact worst case of the 0-1 loss for a linear model (with ε = 0: argmax).
        """
        if norm is None or eps == 0:
            return float(np.mean(self.predict(theta, X) != y))
        from .shift import NORMS

        W, _ = self.split(theta)
        S = self.logits(theta, X)
        yi = y.astype(np.int64)
        gap = S - np.take_along_axis(S, yi[..., None], axis=-1)
        diffs = W.T[:, None, :] - W.T[None, :, :]  # (K, K, d): w_a − w_b
        dual = np.linalg.norm(diffs, ord=NORMS[norm], axis=-1)  # (K, K)
        worst = gap + eps * dual[yi]  # dual is symmetric: dual[y] = ‖w_k − w_y‖_q
        np.put_along_axis(worst, yi[..., None], -np.inf, axis=-1)
        return float(np.mean(worst.max(axis=-1) >= 0))


class LeastSquares(_LinearGLM):
    """Least-squares regression f(θ; x, y) = ½(wᵀx + b − y)², θ = (w, b), ``p = d + 1``:
    ∇_x f = (s − y)·w, so the WRM recursion on the line is affine in c.

    Its "error" is the mean squared error (clean and under the worst-case shift).
    """

    name = "least_squares"
    line_link = "identity"

    def _mean_inplace(self, s: np.ndarray) -> np.ndarray:
        """μ(s) = s."""
        return s

    def loss(self, theta: np.ndarray, X: np.ndarray, y: np.ndarray) -> np.ndarray:
        return 0.5 * (self.margins(theta, X) - y) ** 2

    def predict(self, theta: np.ndarray, X: np.ndarray) -> np.ndarray:
        return self.margins(theta, X)

    def lipschitz_xx(self, theta: np.ndarray) -> float:
        """L_zz = ‖w‖² exactly (∇²_x f = wwᵀ); g(z) is strongly concave iff 2λ > ‖w‖²."""
        w, _ = self.split(theta)
        return float(w @ w)

    def flip_labels(self, y: np.ndarray) -> np.ndarray:
        """The regression analogue of label flipping: y ↦ −y."""
        return -y

    def error_under_shift(self, theta, X, y, norm: str | None = None, eps: float = 0.0) -> float:
        """MSE when each x may move within ‖z − x‖_p ≤ ε: mean (|s − y| + ε‖w‖_q)² (closed
        form: max over the ball of |r + δᵀw| is |r| + ε‖w‖_q)."""
        r = np.abs(self.margins(theta, X) - y)
        if norm is not None and eps > 0:
            from .shift import dual_norm

            r = r + eps * dual_norm(self.split(theta)[0], norm)
        return float(np.mean(r**2))


class MLP(_BinaryCrossEntropy):
    """One hidden layer of tanh units, a logistic output: s = vᵀtanh(W₁x + c) + b,
    f = softplus(s) − y·s (binary labels, as Spambase). θ = (W₁ ``(h, d)``, c, v, b):
    ``p = h(d + 2) + 1``. Nonconvex in θ (Theorem 2's case); smooth in x.
    """

    name = "mlp"
    linear = False
    #: the ascent worst-case test shift (``error_under_shift``): steps
    shift_steps = 30

    def __init__(self, hidden: int = 16):
        if isinstance(hidden, bool) or not isinstance(hidden, int) or hidden < 1:
            raise ValueError(f"The 'hidden' parameter of the MLP must be an integer >= 1. Got "
                             f"{hidden!r} instead.")
        self.hidden = hidden

    def n_params(self, d: int) -> int:
        return self.hidden * (d + 2) + 1

    def split(self, theta: np.ndarray):
        """(W₁ ``(h, d)``, c ``(h,)``, v ``(h,)``, b)."""
        h = self.hidden
        d = (theta.size - 1) // h - 2
        W = theta[: h * d].reshape(h, d)
        return W, theta[h * d : h * d + h], theta[h * d + h : h * d + 2 * h], theta[-1]

    def init(self, d: int, rng: np.random.Generator, scale: float = 0.01) -> np.ndarray:
        """W₁ ~ N(0, 1/d), v ~ N(0, 1/h), c = b = 0 (LeCun scaling, so tanh starts in its
        linear range and the units differ); ``scale`` is not used by this model."""
        h = self.hidden
        W = rng.normal(0.0, 1.0 / np.sqrt(d), size=h * d)
        v = rng.normal(0.0, 1.0 / np.sqrt(h), size=h)
        return np.concatenate([W, np.zeros(h), v, [0.0]])

    def _forward(self, theta, X):
        W, c, v, b = self.split(theta)
        H = np.tanh(X @ W.T + c)
        return H, H @ v + b

    def margins(self, theta: np.ndarray, X: np.ndarray) -> np.ndarray:
        return self._forward(theta, X)[1]

    def grad_x(self, theta: np.ndarray, X: np.ndarray, y: np.ndarray) -> np.ndarray:
        """∇_x f = (σ(s) − y)·W₁ᵀ(v ⊙ (1 − tanh²(W₁x + c)))."""
        W, _, v, _ = self.split(theta)
        H, s = self._forward(theta, X)
        return (sigmoid(s) - y)[..., None] * (((1.0 - H**2) * v) @ W)

    def mean_grad_theta(self, theta, Z, y, weights) -> np.ndarray:
        """Per-shard weighted mean of ∇_θ f at ``Z`` ``(k, n, d)`` (backpropagation)."""
        _, _, v, _ = self.split(theta)
        H, s = self._forward(theta, Z)
        r = weights * (sigmoid(s) - y)  # (k, n)
        delta = r[..., None] * (1.0 - H**2) * v  # (k, n, h)
        gW = np.einsum("knh,knd->khd", delta, Z).reshape(Z.shape[0], -1)
        gv = np.einsum("kn,knh->kh", r, H)
        return np.concatenate([gW, delta.sum(axis=1), gv, r.sum(axis=-1, keepdims=True)],
                              axis=-1)

    def lipschitz_xx(self, theta: np.ndarray) -> float:
        """A bound on ‖∇²_x f‖: ‖W₁‖₂²·(‖v‖₂²/4 + (4/(3√3))·‖v‖_∞), from
        ∇²_x f = σ'(s)∇s∇sᵀ + (σ(s) − y)·W₁ᵀdiag(v ⊙ tanh''(a))W₁ with σ' ≤ 1/4,
        |tanh'| ≤ 1, |tanh''| ≤ 4/(3√3), |σ − y| ≤ 1."""
        W, _, v, _ = self.split(theta)
        w2 = float(np.linalg.norm(W, 2)) ** 2
        return w2 * (float(v @ v) / 4.0 + 4.0 / (3.0 * np.sqrt(3.0)) * float(np.abs(v).max()))

    def error_under_shift(self, theta, X, y, norm: str | None = None, eps: float = 0.0) -> float:
        """Misclassification rate under a shift found by projected gradient ascent on the loss
        in the ``norm`` ball (:func:`ray_robust.core.pgd.pgd_shift`): a lower bound on the
        true worst case, which has no closed form for a nonlinear model."""
        if norm is None or eps == 0:
            Z = X
        else:
            from .pgd import pgd_shift

            Z = pgd_shift(self, theta, X, y, norm, eps, steps=self.shift_steps)
        return float(np.mean(self.predict(theta, Z) != (y == 1)))


MODELS = {
    "logistic": LogisticRegression,
    "softmax": SoftmaxRegression,
    "least_squares": LeastSquares,
    "mlp": MLP,
}

#: the constructor options of each model (the config fields of the same name)
MODEL_OPTIONS = {"softmax": ("n_classes",), "mlp": ("hidden",)}


def get_model(name: str, **options):
    """The model registered under ``name``; ``options`` (e.g. the config's ``hidden`` and
    ``n_classes``) go to the models that take them and are ignored by the others."""
    from .._validation import check_choice

    cls = MODELS[check_choice(name, "model", "the config", MODELS)]
    return cls(**{k: options[k] for k in MODEL_OPTIONS.get(name, ()) if k in options})
