"""Where the Ray engine's worker actors go: how many, which logical workers each holds, which node.

:func:`actor_count` is the one place that decides what ``actors`` means (``"auto"``,
``"per-worker"`` or an int), for :class:`~ray_robust.engines.ray_engine.RayTrainer`, the
benchmarks and a Tune trial alike. Ray is imported only by the functions that ask the running
cluster, so the rule itself is importable without Ray.
"""

from __future__ import annotations

from typing import Any

import numpy as np

PACKINGS = ("auto", "per-worker")
#: CPUs each actor (worker or server) asks Ray for. 0: nothing is reserved (see
#: :mod:`ray_robust.engines.ray_engine`), so a caller that reserves resources for the engine
#: (e.g. a Tune trial's placement group) needs no bundle for the actors: a bundle of only zeros
#: is invalid in Ray.
ACTOR_CPUS = 0
#: ``actors="auto"`` adds a worker actor per this many bytes of shard features (beyond one per
#: node). Each actor costs ≈ 0.3–0.4 ms of call submission per round; on Spambase (1.7 MiB) one
#: actor's round was 41 % faster than two's, on 7 MiB 50 % (2 cores, under load). Measured again
#: on a quiet 2-core machine (Alg. 2, m = 20, two actors' round ÷ one's): 1.09 / 0.87 / 0.94 /
#: 0.86 / 0.78 at 10 / 13 / 16 / 21 / 31 MiB when the server evaluates only at T, but 1.30 /
#: 1.36 / 1.30 / 1.06 / 1.18 (and 1.15 at 61 and 122 MiB) when it evaluates every round
#: (``eval_every=1``, the default): its pass over the data then competes with the second actor
#: for a core. The packing is fixed before a config is known, so 32 MiB is the compromise.
AUTO_BYTES_PER_ACTOR = 32 * 2**20


def check_actors(actors: str | int, m: int) -> str | int:
    """The ``actors`` parameter, validated before Ray starts ('4' from the CLI → 4)."""
    if isinstance(actors, str) and actors.isdigit():
        actors = int(actors)
    if actors in PACKINGS or (
        isinstance(actors, int) and not isinstance(actors, bool) and 1 <= actors <= m
    ):
        return actors
    raise ValueError(
        f"The 'actors' parameter of the Ray engine must be 'auto', 'per-worker' or an int "
        f"in [1, {m}]. Got {actors!r} instead."
    )


def auto_actor_count(m: int, cpus: int, nodes: int, feature_bytes: int) -> int:
    """How many worker actors ``actors="auto"`` creates: one per node at least (so every node
    works), one per CPU at most, and in between one per :data:`AUTO_BYTES_PER_ACTOR` of data
    (small data is faster on fewer actors: the per-call cost outweighs the split work)."""
    by_size = -(-int(feature_bytes) // AUTO_BYTES_PER_ACTOR)
    return max(1, min(m, max(cpus, 1), max(nodes, by_size)))


def cluster_size() -> tuple[int, int]:
    """(CPUs, alive nodes) of the running Ray cluster."""
    import ray

    alive = sum(1 for node in ray.nodes() if node.get("Alive"))
    return int(ray.cluster_resources().get("CPU", 1)), alive


def actor_count(actors: str | int, m: int, feature_bytes: int,
                resources: tuple[int, int] | None = None) -> int:
    """The number of worker actors for ``actors`` and m logical workers: ``"per-worker"`` = m,
    an int as given, ``"auto"`` = :func:`auto_actor_count` for ``resources`` = (CPUs, nodes),
    by default the running cluster's (:func:`cluster_size`)."""
    actors = check_actors(actors, m)
    if actors == "per-worker":
        return m
    if actors == "auto":
        cpus, nodes = cluster_size() if resources is None else resources
        return auto_actor_count(m, cpus, nodes, feature_bytes)
    return int(actors)


def pack_workers(m: int, n_actors: int) -> list[list[int]]:
    """Contiguous groups of the m logical workers, one per worker actor."""
    return [g.tolist() for g in np.array_split(np.arange(m), n_actors)]


def node_strategies(n: int) -> list[Any]:
    """n hard node-affinity strategies, round-robin over the alive nodes in node-id order."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    nodes = sorted(n_["NodeID"] for n_ in ray.nodes() if n_.get("Alive"))
    if not nodes:
        return ["SPREAD"] * n
    return [NodeAffinitySchedulingStrategy(nodes[i % len(nodes)], soft=False) for i in range(n)]
