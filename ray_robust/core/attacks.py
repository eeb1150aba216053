"""Byzantine attacks: the omniscient adversary of Sec. IV/VII replaces the byzantine messages.

An attack is a pure function ``attack(honest, n_byzantine, rng, scale) -> (n_byzantine, p)`` of
the honest workers' messages (``honest``, shape ``(h, p)``) and its own seeded RNG stream.
g denotes the true global gradient, the average of the honest messages. ``scale`` is the
attack's intensity (the ``attack_scale`` config field), so a sweep can vary it.

The attacks in :data:`USES_OWN` also take ``own``, the ``(n_byzantine, p)`` messages the
byzantine workers computed honestly on their own shards (the server passes them): sign flip
negates them, the fault attacks fall back to them, and label flip sends them unchanged (its
harm is in the data: the byzantine shards' labels were flipped, see :func:`flip_labels`).
A fault (NaN, Inf, crash) becomes a NaN row at the server, i.e. a rejected message.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.special import ndtri  # Φ⁻¹; scipy.stats would cost ~0.5 s per Ray worker import


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


def alie_z(n: int, n_byzantine: int) -> float:
    """ALIE's z_max (Baruch, Baruch, Goldberg 2019): s = ⌊n/2 + 1⌋ − f, z = Φ⁻¹((n − s)/n),
    for n workers of which f are byzantine (clipped to a finite value)."""
    s = math.floor(n / 2 + 1) - n_byzantine
    return float(ndtri(min(max((n - s) / n, 1e-6), 1 - 1e-6)))


def alie(honest: np.ndarray, n_byzantine: int, rng: np.random.Generator, scale: float | None):
    """"A little is enough" (Baruch et al. 2019): every byzantine worker sends μ − z·σ, μ and
    σ the honest coordinate-wise mean and (population) standard deviation. ``scale`` is z;
    None = the paper's z_max from :func:`alie_z` with n = h + n_byzantine."""
    z = alie_z(honest.shape[0] + n_byzantine, n_byzantine) if scale is None else scale
    return np.tile(honest.mean(axis=0) - z * honest.std(axis=0), (n_byzantine, 1))


def ipm(honest: np.ndarray, n_byzantine: int, rng: np.random.Generator, scale: float):
    """Inner-product manipulation (Xie, Koyejo, Gupta 2020): every byzantine worker sends
    −ε·g, ε = ``scale`` (default 0.1: small enough to pass distance/median-based screens)."""
    return np.tile(-scale * _global_gradient(honest), (n_byzantine, 1))


def sign_flip(honest, n_byzantine, rng, scale: float, own: np.ndarray | None = None):
    """Sign flipping: each byzantine worker sends −scale·(its own honest gradient); without
    ``own``, −scale·g."""
    base = np.tile(_global_gradient(honest), (n_byzantine, 1)) if own is None else own
    return -scale * base


def gaussian(honest: np.ndarray, n_byzantine: int, rng: np.random.Generator, scale: float):
    """Gaussian noise: each byzantine worker sends an independent N(0, scale²·I) vector."""
    return scale * rng.standard_normal((n_byzantine, honest.shape[1]))


def mimic(honest: np.ndarray, n_byzantine: int, rng: np.random.Generator, scale: float):
    """Mimic (Karimireddy, He, Jaggi 2022): all byzantine workers copy one fixed honest worker
    (the first honest one), over-representing its data. Intensity: g + scale·(g_i − g), so
    scale = 1 is an exact copy and scale > 1 extrapolates away from the mean."""
    g = _global_gradient(honest)
    return np.tile(g + scale * (honest[0] - g), (n_byzantine, 1))


def _fault(value: float):
    def attack(honest, n_byzantine, rng, scale: float, own: np.ndarray | None = None):
        base = np.tile(_global_gradient(honest), (n_byzantine, 1)) if own is None else own
        out = np.array(base, dtype=np.float64, copy=True)
        out[rng.random(n_byzantine) < scale] = value
        return out

    return attack


nan = _fault(np.nan)
nan.__name__ = "nan"
nan.__doc__ = """Each byzantine worker sends a vector of NaN with probability ``scale`` per round
(default 1), else its own honest message. The server rejects such rows."""
inf = _fault(np.inf)
inf.__name__ = "inf"
inf.__doc__ = """As :func:`nan` with +Inf entries."""
crash = _fault(np.nan)
crash.__name__ = "crash"
crash.__doc__ = """Each byzantine worker sends nothing with probability ``scale`` per round (default
1): a missing message, which the server turns into a NaN row (rejected), as it does for a
worker that died."""


def label_flip(honest, n_byzantine, rng, scale: float, own: np.ndarray | None = None):
    """Label flipping, a data attack: byzantine workers send the honest gradient of their own
    shards whose labels the server flipped once before training (a fraction ``scale`` of them,
    default all; :func:`flip_labels`). Without ``own``, the honest mean (no harm)."""
    if own is None:
        return np.tile(_global_gradient(honest), (n_byzantine, 1))
    return np.array(own, dtype=np.float64, copy=True)


def flip_labels(
    model, y: np.ndarray, weights: np.ndarray, fraction: float, rng: np.random.Generator
) -> np.ndarray:
    """Labels with a fraction of the real (weight > 0) samples flipped by ``model.flip_labels``
    (binary: 1 − y; K classes: K − 1 − y; regression: −y). ``fraction`` = 1 flips all."""
    chosen = (weights > 0) & (rng.random(y.shape) < fraction)
    return np.where(chosen, model.flip_labels(y), y)


#: name → (function, default intensity ``scale``; None = computed by the attack)
ATTACKS = {
    "aggressive": (aggressive, 10.0),
    "intelligent": (intelligent, 0.8),
    "counterexample": (counterexample, 1.0),
    "alie": (alie, None),
    "ipm": (ipm, 0.1),
    "sign_flip": (sign_flip, 1.0),
    "gaussian": (gaussian, 1.0),
    "mimic": (mimic, 1.0),
    "nan": (nan, 1.0),
    "inf": (inf, 1.0),
    "crash": (crash, 1.0),
    "label_flip": (label_flip, 1.0),
}

#: attacks that take ``own=``, the byzantine workers' honestly computed messages
USES_OWN = frozenset({"sign_flip", "nan", "inf", "crash", "label_flip"})

#: data attacks: the server alters the byzantine shards before training
DATA_ATTACKS = frozenset({"label_flip"})
