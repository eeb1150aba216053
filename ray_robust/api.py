"""The public entry points: :func:`load_problem` and :func:`train`."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .algorithm import History
from .config import Config
from .data import Problem, load_spambase, prepare

ENGINES = ("local", "ray")


def load_problem(config: Config) -> Problem:
    """Spambase split, standardized and sharded as ``config`` says (seeded by ``config.seed``).

    Runs that differ only in algorithm, attack or shift share one problem: build it once.
    """
    X, y = load_spambase(config.data_path)
    data_seq = np.random.SeedSequence(config.seed).spawn(4)[0]
    return prepare(
        X, y, n_workers=config.n_workers, train_fraction=config.train_fraction,
        standardize=config.standardize, seed=data_seq,
    )


def train(
    config: Config | dict,
    *,
    engine: str = "local",
    problem: Problem | None = None,
    progress: Callable[[dict], None] | None = None,
    progress_every: int = 50,
    **engine_options,
) -> History:
    """Run Algorithm 2 (or a baseline) as ``config`` says and return its :class:`History`.

    ``engine='local'`` computes all workers in-process (the reference); ``engine='ray'`` runs
    each worker as a Ray actor. Same config and seed → the same θ, bit for bit, on both.
    """
    if isinstance(config, dict):
        config = Config.from_dict(config)
    if engine not in ENGINES:
        raise ValueError(f"The 'engine' parameter must be one of {list(ENGINES)}. Got {engine!r}.")
    if problem is None:
        problem = load_problem(config)
    if engine == "local":
        if engine_options:
            raise ValueError(
                f"Options {sorted(engine_options)} only apply to engine='ray'."
            )
        from .engines.local import train_local

        return train_local(config, problem, progress=progress, progress_every=progress_every)
    from .engines.ray_engine import train_ray  # imported lazily: `import ray` costs ~1 s

    return train_ray(config, problem, progress=progress, progress_every=progress_every,
                     **engine_options)
