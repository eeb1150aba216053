"""Checkpoints of a training run: the config and the RunState (θ, round, RNG states, history).

A checkpoint is one run-state record (:mod:`ray_robust.run_state`: atomic, checksummed,
validated on reading), ``checkpoint.json``, in a folder; a run that writes checkpoints holds
the folder's lock, ``.checkpoint.lock``, so two runs (or a ``--resume`` of a run still going)
never interleave their checkpoints. Floats round-trip exactly through JSON, so a resumed run
ends with the same θ, bit for bit, as an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from .algorithm import RunState
from .config import Config
from .run_state import RecordError, hold_lock, read_record, write_json_atomic, write_record

CHECKPOINT_FILE = "checkpoint.json"
LOCK_FILE = ".checkpoint.lock"
KIND = "checkpoint"

__all__ = ["CHECKPOINT_FILE", "load_checkpoint", "lock_checkpoint_dir", "save_checkpoint",
           "write_json_atomic"]


def save_checkpoint(folder: str | os.PathLike, config: Config, state: RunState) -> Path:
    """Write ``config`` and ``state`` to ``folder/checkpoint.json`` atomically."""
    return write_record(Path(folder) / CHECKPOINT_FILE, kind=KIND, config=config, state=state)


def load_checkpoint(folder: str | os.PathLike) -> tuple[Config, RunState]:
    """Read what :func:`save_checkpoint` wrote; a clear error when there is none or it is bad."""
    path = Path(folder) / CHECKPOINT_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"No checkpoint at {path}. Pass the folder given as --checkpoint-dir to a run."
        )
    try:
        config, state = read_record(path, kind=KIND)
    except RecordError as exc:
        raise ValueError(f"{path} is not a valid ray_robust checkpoint: {exc.why}.") from None
    if config is None:
        raise ValueError(f"{path} is not a valid ray_robust checkpoint: it holds no config.")
    return config, state


@contextlib.contextmanager
def lock_checkpoint_dir(folder: str | os.PathLike) -> Iterator[Path]:
    """Hold ``folder``'s checkpoint lock for a run (see the module docstring)."""
    folder = Path(folder)
    with hold_lock(folder / LOCK_FILE, f"the checkpoint folder {folder}",
                   "wait for that run to end (or stop it), then resume from the folder, or "
                   "give another --checkpoint-dir."):
        yield folder
