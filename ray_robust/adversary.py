"""The simulated adversary of Sec. IV/VII, in one place: who is byzantine and what it does.

An experiment simulates its byzantine workers; nothing here would run in a deployment. The
adversary draws round(αm) byzantine workers from the seed (:func:`byzantine_mask`) and acts at
two places, each the only place where it can act:

- **Message attacks** (aggressive, ALIE, sign flip, NaN, crash, ...; :mod:`.core.attacks`)
  are omniscient: each round they see every honest message and choose the byzantine ones.
  Only the server holds every message, so :meth:`Adversary.forge` runs there, in
  :meth:`ray_robust.algorithm.Server.step` between message validation and aggregation,
  overwriting the byzantine rows. The byzantine workers still compute their honest gradient
  like everyone: the attacks that start from it (sign flip, the faults) receive it as ``own``.
- **Data attacks** (label flip) change what the byzantine workers train on, and that must
  happen where the data is. A byzantine worker's message is the gradient of its shard with
  flipped labels, and with WRM (Algorithm 2, lines 5–6) that gradient is taken at each
  sample's worst-case perturbation z*, itself found by an ascent on the flipped label's
  loss: it cannot be derived from the honest gradient the server receives. The server never
  holds the shards (on Ray the worker actors do), so :meth:`Adversary.poison` is applied
  worker side, in :func:`ray_robust.algorithm.honest_gradients`, the one call both engines
  make; at the server, label flip then passes the byzantine workers' own messages through.
  The flipped labels come from one stream per worker (:meth:`SeedStreams.label_flip`), so
  every grouping of shards into Ray actors flips the same labels.

The message attack draws from ``RunState.attack_rng`` (the ``attack`` seed stream), carried in
checkpoints; the byzantine set and the flipped labels are functions of the seed alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .config import Config
from .core.attacks import ATTACKS, DATA_ATTACKS, USES_OWN, flip_labels
from .data import Shards
from .seeds import SeedStreams


def byzantine_mask(config: Config) -> np.ndarray:
    """The ``(m,)`` mask of byzantine workers: round(αm) of them, drawn from the seed."""
    m, k = config.n_workers, config.n_byzantine
    byz = np.zeros(m, dtype=bool)
    if k:
        rng = np.random.default_rng(SeedStreams(config.seed).byzantine)
        byz[rng.choice(m, size=k, replace=False)] = True
    return byz


@dataclass(frozen=True, eq=False)
class Adversary:
    """The configured attack: the byzantine workers, their data poisoning, their messages."""

    #: 'none' or a name in :data:`~ray_robust.core.attacks.ATTACKS`
    attack: str
    #: the attack's intensity (``Config.effective_attack_scale``); None when attack is 'none'
    scale: float | None
    #: the ``(m,)`` mask of byzantine workers
    byzantine: np.ndarray
    seeds: SeedStreams

    @classmethod
    def from_config(cls, config: Config) -> Adversary:
        scale = None if config.attack == "none" else config.effective_attack_scale
        return cls(config.attack, scale, byzantine_mask(config), SeedStreams(config.seed))

    @property
    def n_byzantine(self) -> int:
        return int(self.byzantine.sum())

    @property
    def poisons_data(self) -> bool:
        """Whether the byzantine workers' shards are altered (a data attack)."""
        return self.attack in DATA_ATTACKS and self.n_byzantine > 0

    @property
    def forges_messages(self) -> bool:
        """Whether the server overwrites the byzantine workers' messages each round."""
        return self.attack != "none" and self.n_byzantine > 0

    def poison(self, model, shards: Shards) -> Shards:
        """Worker side: the shards with the byzantine workers' labels flipped (label flip).

        A fraction ``scale`` (default 1) of each byzantine shard's real samples is flipped by
        ``model.flip_labels``, drawn from the stream of (seed, worker index): any stack of
        shards, whatever its grouping, gets the same labels. Other attacks: ``shards`` as is.
        """
        if not self.poisons_data:
            return shards
        byz = self.byzantine[shards.worker_ids]
        if not byz.any():
            return shards
        y = shards.y.copy()
        for i in np.flatnonzero(byz):
            rng = np.random.default_rng(self.seeds.label_flip(int(shards.worker_ids[i])))
            y[i] = flip_labels(model, shards.y[i], shards.weights[i], self.scale, rng)
        return Shards(shards.X, y, shards.weights, shards.workers)

    def forge(
        self, grads: np.ndarray, rejected: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        """Server side: the validated ``(m, p)`` messages with the byzantine rows replaced.

        The attack sees the honest rows that arrived (``~byzantine & ~rejected``); a byzantine
        row it makes non-finite counts as rejected, any other byzantine row as valid. When no
        honest message arrived there is nothing to attack with, and the byzantine rows count as
        lost (they must not pass for honest ones). Updates ``grads`` in place; draws from
        ``rng``. Returns ``(grads, rejected)``.
        """
        if not self.forges_messages:
            return grads, rejected
        byz = self.byzantine
        honest = grads[~byz & ~rejected]
        if not len(honest):
            grads[byz] = np.nan
            return grads, rejected | byz
        attack = ATTACKS[self.attack][0]
        own = {"own": grads[byz].copy()} if self.attack in USES_OWN else {}
        grads[byz] = attack(honest, self.n_byzantine, rng, self.scale, **own)
        rejected = rejected & ~byz
        bad = ~np.isfinite(grads).all(axis=1)
        grads[bad] = np.nan
        return grads, rejected | bad


def poison_shards(config: Config, model, shards: Shards) -> Shards:
    """The shards as ``config``'s adversary leaves them (label flip: byzantine labels
    flipped; any other attack: unchanged). See :meth:`Adversary.poison`."""
    if config.attack not in DATA_ATTACKS or not config.n_byzantine:
        return shards
    return Adversary.from_config(config).poison(model, shards)
