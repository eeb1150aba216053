"""Byzantine attacks: the omniscient adversary of Sec. IV/VII replaces the byzantine messages.

An attack is a pure function ``attack(honest, n_byzantine, rng, scale) -> (n_byzantine, p)`` of
the honest workers' messages (``honest``, shape ``(h, p)``) and its own seeded RNG stream.
g denotes the true global gradient, the average of the honest messages.
"""

from __future__ import annotations

import numpy as np


def _global_gradient(honest: np.ndarray) -> np.ndarray:
    return honest.mean(axis=0)


def aggressive(honest: np.ndarray, n_byzantine: int, rng: np.random.Generator, scale: float):
    """Sec. VII's aggressive attack: every byzantine worker sends −scale·g (paper: scale = 10)."""
    g = _global_gradient(honest)
    return np.tile(-scale * g, (n_byzantine, 1))


def intelligent(honest: np.ndarray, n_byzantine: int, rng: np.random.Generator, scale: float):
    """Sec. VII's intelligent attack: scale·‖g‖·h, h a random unit Gaussian direction drawn
    independently per byzantine worker and round (paper: scale = 0.8)."""
    g = _global_gradient(honest)
    h = rng.standard_normal((n_byzantine, honest.shape[1]))
    h /= np.linalg.norm(h, axis=1, keepdims=True)
    return scale * np.linalg.norm(g) * h


def counterexample(honest: np.ndarray, n_byzantine: int, rng: np.random.Generator, scale: float):
    """Sec. VI-C: all byzantine workers send −scale·g_min, g_min the smallest-norm honest
    message (paper: scale = 1). Passes the norm screen, so NBS fails once α ≥ 1/3."""
    g_min = honest[np.argmin(np.linalg.norm(honest, axis=1))]
    return np.tile(-scale * g_min, (n_byzantine, 1))


#: name → (function, default intensity ``scale``)
ATTACKS = {
    "aggressive": (aggressive, 10.0),
    "intelligent": (intelligent, 0.8),
    "counterexample": (counterexample, 1.0),
}
