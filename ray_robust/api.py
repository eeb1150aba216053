"""The public entry points: :func:`load_problem` and :func:`train`."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ._validation import check_int
from .algorithm import History, RunState
from .checkpoint import load_checkpoint, lock_checkpoint_dir, save_checkpoint
from .config import Config
from .data import Problem, check_model_labels, encode_labels, load_spambase, load_table, prepare
from .engines import ENGINES
from .fitted import FittedModel
from .seeds import SeedStreams


def check_output_dir(folder: str | os.PathLike, name: str) -> Path:
    """The folder a run will write to, checked before any work starts: it is a folder (or can
    be created) and writable. One clear ``ValueError`` otherwise."""
    path = Path(folder).expanduser()
    if any(len(part.encode()) > 255 for part in path.parts) or len(str(path).encode()) > 4000:
        raise ValueError(f"The '{name}' parameter names a path whose name is too long for the "
                         "file system (a part over 255 bytes); give a shorter one.")
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if path.exists() and not path.is_dir():
        raise ValueError(f"The '{name}' parameter names {path}, which is a file, not a folder; "
                         "give a folder (it is created if missing).")
    if not probe.is_dir():
        raise ValueError(f"The '{name}' parameter names {path}, under the file {probe}; give "
                         "a folder path.")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ValueError(f"The '{name}' parameter names {path}, but {probe} is not writable; "
                         "give a folder you can write to.")
    return path


def load_problem(config: Config) -> Problem:
    """Spambase split, standardized and sharded as ``config`` says (seeded by ``config.seed``).

    With ``config.label_column`` the data is the user's CSV at ``config.data_path`` instead;
    its labels may be any two values (−1/+1, 1/2, strings) for the binary models, or K values
    for softmax: they are encoded (:func:`ray_robust.data.encode_labels`), and the encoding,
    the feature names and the standardization are kept on the problem (and so in the
    trained model, ``History.model``). Runs that differ only in algorithm, attack or shift
    share one problem: build it once.
    """
    names = None
    if config.label_column is not None:
        X, y, columns = load_table(config.data_path, label=config.label_column, with_names=True)
        if not all(isinstance(c, int | np.integer) for c in columns):  # else positional
            names = tuple(str(c) for c in columns)
        where = f"the column {config.label_column!r} of {config.data_path}"
    else:
        X, y = load_spambase(config.data_path)
        where = "Spambase's labels"
    y, labels = encode_labels(y, config.model, n_classes=config.n_classes, where=where)
    problem = prepare(
        X, y, n_workers=config.n_workers, train_fraction=config.train_fraction,
        standardize=config.standardize, seed=SeedStreams(config.seed).data,
        sharding=config.sharding, dirichlet_alpha=config.dirichlet_alpha,
    )
    return dataclasses.replace(problem, feature_names=names, labels=labels)


def train(
    config: Config | dict,
    *,
    engine: str = "local",
    problem: Problem | None = None,
    progress: Callable[[dict], None] | None = None,
    progress_every: int = 50,
    checkpoint_dir: str | os.PathLike | None = None,
    checkpoint_every: int = 50,
    state: RunState | None = None,
    **engine_options,
) -> History:
    """Run Algorithm 2 (or a baseline) as ``config`` says and return its :class:`History`.

    ``engine='local'`` computes all workers in-process (the reference); ``engine='ray'`` runs
    each worker as a Ray actor. Same config and seed → the same θ, bit for bit, on both.
    With ``checkpoint_dir``, the run writes a checkpoint there every ``checkpoint_every``
    rounds and at the end; :func:`resume` continues it.
    """
    if isinstance(config, dict):
        config = Config.from_dict(config)
    if state is None:  # once per run: a resumed run gave them when it started
        config.warn_outside_guarantee(stacklevel=2)
    if engine not in ENGINES:
        raise ValueError(f"The 'engine' parameter must be one of {list(ENGINES)}. Got {engine!r}.")
    check_int(progress_every, "progress_every", "train", low=1)
    if checkpoint_dir is not None:
        check_int(checkpoint_every, "checkpoint_every", "train", low=1)
        if callable(config.epsilon_schedule) and not hasattr(config.epsilon_schedule, "spec"):
            raise ValueError(
                "A run with a Python callable as 'epsilon_schedule' cannot be checkpointed (a "
                "checkpoint is JSON). Use a 'two-stage:…' or 'constant:…' schedule, or drop "
                "checkpoint_dir."
            )
        folder = check_output_dir(checkpoint_dir, "checkpoint_dir")
        engine_options.update(checkpoint=lambda s: save_checkpoint(folder, config, s),
                              checkpoint_every=checkpoint_every)
        with lock_checkpoint_dir(folder):
            return _train(config, problem, engine, progress, progress_every, checkpoint_dir,
                          state, engine_options)
    return _train(config, problem, engine, progress, progress_every, None, state,
                  engine_options)


def _train(config: Config, problem: Problem | None, engine: str, progress, progress_every: int,
           checkpoint_dir, state: RunState | None, engine_options: dict) -> History:
    if problem is None:
        problem = load_problem(config)
    for labels in (problem.y_train, problem.y_test):  # −1/+1 would train, silently, to chance
        check_model_labels(labels, config.model)
    hist = _run_engine(config, problem, engine, progress, progress_every, checkpoint_dir, state,
                       engine_options)
    hist.model = FittedModel.from_problem(config, problem, hist.theta)
    return hist


def _run_engine(config: Config, problem: Problem, engine: str, progress, progress_every: int,
                checkpoint_dir, state: RunState | None, engine_options: dict) -> History:
    if state is not None:
        engine_options["state"] = state
    if engine == "local":
        unknown = set(engine_options) - {"checkpoint", "checkpoint_every", "state"}
        if unknown:
            raise ValueError(f"Options {sorted(unknown)} only apply to engine='ray'.")
        from .engines.local import train_local

        return train_local(config, problem, progress=progress, progress_every=progress_every,
                           **engine_options)
    from .engines.ray_engine import ServerDiedError, train_ray  # lazily: `import ray` ~1 s

    try:
        return train_ray(config, problem, progress=progress, progress_every=progress_every,
                         **engine_options)
    except ServerDiedError as exc:
        if checkpoint_dir is None:
            raise
        raise ServerDiedError(
            f"{exc} The last checkpoint is in {checkpoint_dir}: continue with "
            f"resume({str(checkpoint_dir)!r}, engine='ray') or `ray-robust train --resume "
            f"{checkpoint_dir} --engine ray`."
        ) from None


def resume(checkpoint_dir: str | os.PathLike, **train_kwargs) -> History:
    """Continue the run whose checkpoint is in ``checkpoint_dir`` (it keeps checkpointing there).

    The result is bit-identical to the run never having stopped: θ, the round, every RNG state
    and the history so far come from the checkpoint.
    """
    config, state = load_checkpoint(checkpoint_dir)
    train_kwargs.setdefault("checkpoint_dir", checkpoint_dir)
    return train(config, state=state, **train_kwargs)
