"""Models with analytic gradients in θ and in the input x (needed by the WRM ascent).

Shapes: features ``X`` are ``(..., n, d)`` (any leading batch axes, e.g. ``(k, n, d)`` for the
``k`` shards a worker holds), labels ``y`` are ``(..., n)``. Parameters ``theta`` are a flat
vector of length ``model.n_params(d)``.

Logistic regression, Sec. VII: f(θ; x, y) = −y ln a − (1 − y) ln(1 − a), a = σ(wᵀx + b),
θ = (w, b). Written as softplus(s) − y·s with s = wᵀx + b, which never overflows.
"""

from __future__ import annotations

import numpy as np
from scipy.special import expit


class LogisticRegression:
    """Binary logistic regression, θ = (w, b) with ``p = d + 1`` parameters.

    Every method is vectorized over all samples of all shards; no Python loop over samples.
    """

    name = "logistic"
    #: ∇_x f(θ; x) = (σ(s) − y)·w always lies on the line spanned by w (the WRM fast path).
    linear = True

    def n_params(self, d: int) -> int:
        return d + 1

    @staticmethod
    def split(theta: np.ndarray) -> tuple[np.ndarray, float]:
        return theta[:-1], theta[-1]

    def init(self, d: int, rng: np.random.Generator, scale: float = 0.01) -> np.ndarray:
        """A shared random initialization θ₀ ~ N(0, scale²) (Sec. VII)."""
        return rng.normal(0.0, scale, size=self.n_params(d))

    def margins(self, theta: np.ndarray, X: np.ndarray) -> np.ndarray:
        """s = wᵀx + b, shape ``X.shape[:-1]``."""
        w, b = self.split(theta)
        return X @ w + b

    def loss(self, theta: np.ndarray, X: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Per-sample cross-entropy f(θ; x, y), shape ``y.shape``."""
        s = self.margins(theta, X)
        return np.logaddexp(0.0, s) - y * s

    def predict(self, theta: np.ndarray, X: np.ndarray) -> np.ndarray:
        """Predicted labels in {0, 1} (1 when s > 0)."""
        return (self.margins(theta, X) > 0).astype(np.int8)

    def grad_x(self, theta: np.ndarray, X: np.ndarray, y: np.ndarray) -> np.ndarray:
        """∇_x f(θ; x, y) = (σ(s) − y)·w per sample, shape ``X.shape``."""
        w, _ = self.split(theta)
        r = expit(self.margins(theta, X)) - y
        return r[..., None] * w

    def lipschitz_xx(self, theta: np.ndarray) -> float:
        """L_zz: ‖∇²_x f‖ = σ(1 − σ)‖w‖² ≤ ‖w‖²/4 (Sec. VI-D's smoothness of f in z)."""
        w, _ = self.split(theta)
        return float(w @ w) / 4.0

    def mean_grad_theta(
        self, theta: np.ndarray, Z: np.ndarray, y: np.ndarray, weights: np.ndarray
    ) -> np.ndarray:
        """Per-shard weighted mean of ∇_θ f(θ; z) (Algorithm 2, line 6), shape ``(k, p)``.

        ``Z`` is ``(k, n, d)``; ``weights`` is ``(k, n)`` with rows summing to one (zeros mark
        padding in uneven shards).
        """
        r = weights * (expit(self.margins(theta, Z)) - y)  # (k, n)
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
    ) -> np.ndarray:
        """As :meth:`mean_grad_theta` for z = x + c·w, without forming z (the fast path).

        With s_z = s_x + c‖w‖²: Σ r z = Xᵀr + (Σ r c)·w, so one pass over X suffices.
        """
        w, _ = self.split(theta)
        r = weights * (expit(s_x + c * (w @ w)) - y)  # (k, n)
        gw = np.matmul(r[:, None, :], X)[:, 0, :] + (r * c).sum(axis=-1)[:, None] * w
        return np.concatenate([gw, r.sum(axis=-1, keepdims=True)], axis=-1)


MODELS = {"logistic": LogisticRegression}


def get_model(name: str):
    """The model registered under ``name``."""
    from .._validation import check_choice

    return MODELS[check_choice(name, "model", "the config", MODELS)]()
