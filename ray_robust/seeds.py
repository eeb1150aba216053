"""A run's independent random streams, named once.

Every random draw of a run comes from its own child of ``np.random.SeedSequence(config.seed)``,
so changing how much one consumer draws never shifts another's numbers. The child's index is
its name's entry in :data:`STREAMS`; ``SeedSequence(seed, spawn_key=(i,))`` is exactly
``SeedSequence(seed).spawn(n)[i]``. Never renumber a stream: every result would change.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: stream name → its index among the children of ``SeedSequence(seed)``
STREAMS = {"data": 0, "init": 1, "byzantine": 2, "attack": 3, "label_flip": 4}


@dataclass(frozen=True)
class SeedStreams:
    """The named streams of the run seeded by ``seed`` (``SeedStreams(config.seed).init``)."""

    seed: int

    def _child(self, name: str, *key: int) -> np.random.SeedSequence:
        return np.random.SeedSequence(self.seed, spawn_key=(STREAMS[name], *key))

    @property
    def data(self) -> np.random.SeedSequence:
        """The train/test split and the sharding (:func:`ray_robust.data.prepare` splits it
        in two)."""
        return self._child("data")

    @property
    def init(self) -> np.random.SeedSequence:
        """θ₀, the model's initial parameters."""
        return self._child("init")

    @property
    def byzantine(self) -> np.random.SeedSequence:
        """Which workers are byzantine."""
        return self._child("byzantine")

    @property
    def attack(self) -> np.random.SeedSequence:
        """The message attack's per-round draws (``RunState.attack_rng``)."""
        return self._child("attack")

    def label_flip(self, worker: int) -> np.random.SeedSequence:
        """The labels that byzantine worker ``worker`` flips (one stream per worker, so any
        grouping of shards into Ray actors flips the same labels)."""
        return self._child("label_flip", int(worker))
