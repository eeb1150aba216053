"""Checkpoints of a training run: the config and the RunState (θ, round, RNG states, history).

A checkpoint is one JSON file, ``checkpoint.json``, in a folder. It is written atomically
(a temporary file, fsync, then ``os.replace``), so a crash while writing leaves the previous
checkpoint intact and never one that loads wrong. Floats round-trip exactly through JSON, so a
resumed run ends with the same θ, bit for bit, as an uninterrupted one.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

from .algorithm import RunState
from .config import Config

CHECKPOINT_FILE = "checkpoint.json"
FORMAT = 1


def save_checkpoint(folder: str | os.PathLike, config: Config, state: RunState) -> Path:
    """Write ``config`` and ``state`` to ``folder/checkpoint.json`` atomically."""
    payload = {"format": FORMAT, "config": config.to_dict(), "state": state.to_dict()}
    return write_json_atomic(Path(folder) / CHECKPOINT_FILE, payload)


def write_json_atomic(target: str | os.PathLike, payload: object,
                      indent: int | None = None) -> Path:
    """Write ``payload`` as JSON to ``target`` so that a reader (or a crash) sees the old file
    or the new one, never a part: a temporary file beside it, fsync, then ``os.replace``."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.{os.getpid()}.{threading.get_ident()}.tmp"
    try:
        with open(tmp, "w") as fh:
            json.dump(payload, fh, indent=indent)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return target


def load_checkpoint(folder: str | os.PathLike) -> tuple[Config, RunState]:
    """Read what :func:`save_checkpoint` wrote; a clear error when there is none or it is bad."""
    path = Path(folder) / CHECKPOINT_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"No checkpoint at {path}. Pass the folder given as --checkpoint-dir to a run."
        )
    try:
        payload = json.loads(path.read_text())
        if payload.get("format") != FORMAT:
            raise ValueError(f"unknown format {payload.get('format')!r}")
        return Config.from_dict(payload["config"]), RunState.from_dict(payload["state"])
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{path} is not a valid ray_robust checkpoint ({exc}).") from None
