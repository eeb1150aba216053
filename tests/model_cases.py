"""Random model cases shared by the model and fast-path tests."""

from __future__ import annotations

import numpy as np

from ray_robust.core.models import LeastSquares, SoftmaxRegression


def random_case(model, rng: np.random.Generator, *, k: int, n: int, d: int,
                theta_scale: float = 1.0, uneven: bool = False):
    """(model, θ, X, y, weights) for k shards of n samples in d features, labels of the
    model's kind; ``uneven``: random sample weights and two padded rows in shard 0 (else 1/n)."""
    X = rng.normal(size=(k, n, d))
    if isinstance(model, SoftmaxRegression):
        y = rng.integers(0, model.n_classes, size=(k, n)).astype(float)
    elif isinstance(model, LeastSquares):
        y = rng.normal(size=(k, n))
    else:
        y = rng.integers(0, 2, size=(k, n)).astype(float)
    theta = rng.normal(scale=theta_scale, size=model.n_params(d))
    if not uneven:
        return model, theta, X, y, np.full((k, n), 1.0 / n)
    weights = rng.uniform(0.1, 1.0, size=(k, n))
    weights[0, -2:] = 0.0  # padding of an uneven shard
    weights /= weights.sum(axis=1, keepdims=True)
    return model, theta, X, y, weights
