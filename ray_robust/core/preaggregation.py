"""Pre-aggregation steps: pure functions ``(m, p) messages → (m, p) messages``.

A step transforms the workers' messages before the aggregation rule sees them; compose them
with :func:`ray_robust.core.rules.chain`, e.g. ``chain(clip(τ), build_rule("krum", f=f))``.
A step keeps row i as worker i's (the rule's ``kept`` mask still names workers) and keeps a
non-finite row non-finite, so the rule still screens it.
"""

from __future__ import annotations

import numpy as np

from .._validation import check_real
from .aggregators import row_norms


def clipping(grads: np.ndarray, tau: float) -> np.ndarray:
    """Static clipping to the radius τ: g_i ← g_i · min(1, τ/‖g_i‖), row by row.

    Every message's norm is then at most τ, so no single worker can move the mean by more than
    τ/m; a message inside the ball is unchanged. The radius is fixed (static), as opposed to
    adaptive clipping (ARC: Allouah et al. 2024, "The Vital Role of Gradient Clipping in
    Byzantine-Resilient Distributed Learning", who study static clipping as a pre-aggregation
    step) or clipping around a moving centre (centered clipping, Karimireddy et al. 2021).

    Non-finite rows stay non-finite. A finite row whose norm overflows float64 (entries near
    1e308) is clipped like any other: its direction is taken after dividing by its largest
    entry. Returns a new float64 array; ``grads`` is not modified.
    """
    tau = check_real(tau, "tau", "clipping", low=0.0, low_open=True)
    out = np.array(grads, dtype=np.float64, copy=True)
    if out.ndim != 2:
        raise ValueError(
            f"clipping takes an (m, p) array of messages. Got shape {out.shape}; stack the "
            "messages as rows."
        )
    valid, norms = row_norms(out)
    overflowed = valid & np.isinf(norms)
    big = valid & (norms > tau) & ~overflowed
    out[big] *= (tau / norms[big])[:, None]
    if overflowed.any():
        u = out[overflowed] / np.abs(out[overflowed]).max(axis=1, keepdims=True)
        out[overflowed] = tau * u / np.linalg.norm(u, axis=1, keepdims=True)
    return out
