"""The run-state store: one file format and one reader for training checkpoints and the
studies' per-trial progress records.

A record is one JSON file holding ``{"format", "kind", "owner", "config", "state", "sha256"}``:
``kind`` says what wrote it (``"checkpoint"`` or ``"trial"``), ``owner`` whose it is (a trial's
grid values; None for a checkpoint), ``config`` the run's :class:`Config` (flat dict), ``state``
its :class:`RunState` snapshot (θ, round, RNG states, history rows), and ``sha256`` a checksum
of the canonical JSON of the rest.

Guarantees. Writes are atomic (a temporary file beside the target, fsync, ``os.replace``): a
crash leaves the old record or the new one, never a part; a killed writer's temporary file is
removed by the next writer in that folder. Files are created ``0600`` and folders ``0700``
(less when the umask asks for less). Floats round-trip exactly through JSON, so a resumed run
ends bit for bit where an uninterrupted one does. The reader checks the checksum, then every
field's type and range (θ finite floats of one length, the round an int in [0, rounds], a
known RNG with an integer state, rows of numbers), and refuses anything else with one clear
error.

What the checksum does and does not protect against: it detects accidental corruption and
hand edits (a flipped digit of θ, an edited metric, a truncated copy) — a record that fails it
is never resumed. It is not a signature: someone who can write the file can also recompute
the checksum, so the store trusts whoever can write its folder (as it trusts the code itself).

:func:`hold_lock` (in :mod:`ray_robust._files`, with the atomic writers) keeps two processes
from writing one folder (a training checkpoint folder,
a study): an advisory ``flock``, released when the process ends, even by SIGKILL.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Mapping
from numbers import Integral, Real
from pathlib import Path
from typing import Any

import numpy as np

from ._files import hold_lock, make_private_dir, write_json_atomic
from .algorithm import RunState
from .config import Config

__all__ = ["FORMAT", "RecordError", "hold_lock", "make_private_dir", "read_record",
           "state_from_snapshot", "write_json_atomic", "write_record"]

FORMAT = 2
#: the bit generators numpy can restore a state of (what ``np.random.default_rng`` uses)
_BIT_GENERATORS = ("PCG64", "PCG64DXSM", "MT19937", "Philox", "SFC64")


class RecordError(ValueError):
    """A run-state record that cannot be trusted (corrupt, edited, another run's)."""

    def __init__(self, where: str, why: str):
        self.where, self.why = where, why
        super().__init__(f"{where}: {why}")


# ---- records: one writer, one reader ---------------------------------------------------------
def _canonical(payload: Mapping[str, Any]) -> str:
    return json.dumps(payload, sort_keys=True, separators=(",", ":"))


def _checksum(payload: Mapping[str, Any]) -> str:
    return hashlib.sha256(_canonical(payload).encode()).hexdigest()


def write_record(target: str | os.PathLike, *, kind: str, state: RunState,
                 config: Config | None = None, owner: Any = None) -> Path:
    """Write a run-state record (see the module docstring) atomically to ``target``."""
    body = {"format": FORMAT, "kind": kind, "owner": owner,
            "config": None if config is None else config.to_dict(), "state": state.to_dict()}
    return write_json_atomic(target, {**body, "sha256": _checksum(body)})


def read_record(path: str | os.PathLike, *, kind: str, owner: Any = None,
                config: Config | None = None) -> tuple[Config | None, RunState]:
    """Read what :func:`write_record` wrote, or raise :class:`RecordError` saying why not.

    ``owner`` must equal the record's; ``config`` (when the caller knows the run's config, as
    a study trial does) must equal the record's. Returns the record's config (None for a
    record written without one) and its validated :class:`RunState`.
    """
    path = Path(path)
    try:
        payload = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise RecordError(str(path), f"is not readable JSON ({type(exc).__name__})") from None
    if not isinstance(payload, dict):
        raise RecordError(str(path), f"holds a {type(payload).__name__}, not a record")
    if payload.get("format") != FORMAT or payload.get("kind") != kind:
        raise RecordError(
            str(path), f"is not a {kind} record of format {FORMAT} (it says format "
            f"{str(payload.get('format'))[:20]}, kind {str(payload.get('kind'))[:20]}; records "
            f"of earlier versions carry no checksum: start the run again)")
    body = {k: v for k, v in payload.items() if k != "sha256"}
    if payload.get("sha256") != _checksum(body):
        raise RecordError(str(path), "fails its checksum: it was edited or corrupted")
    if set(body) != {"format", "kind", "owner", "config", "state"}:
        raise RecordError(str(path), f"has unexpected fields {sorted(set(body))}")
    if body["owner"] != owner:
        raise RecordError(str(path), "belongs to another run")
    stored = None
    if body["config"] is not None:
        if not isinstance(body["config"], dict):
            raise RecordError(str(path), "its config is not a mapping")
        try:
            stored = Config.from_dict(body["config"])
        except ValueError as exc:
            raise RecordError(str(path), f"its config is invalid ({exc})") from None
    if config is not None and stored is not None and stored != config:
        raise RecordError(str(path), "was written by a run with another config")
    run_config = config or stored
    return stored, state_from_snapshot(body["state"], run_config, where=str(path))


def _is_int(value: object) -> bool:
    return isinstance(value, Integral) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool)


def _is_finite(value: object) -> bool:
    """A finite number that a float64 holds (a JSON integer like 10**400 does not)."""
    try:
        return _is_number(value) and math.isfinite(float(value))
    except OverflowError:
        return False


def state_from_snapshot(snapshot: object, config: Config | None, *,
                        where: str = "the snapshot") -> RunState:
    """A :class:`RunState` from ``RunState.to_dict()``'s output, every field checked."""
    def bad(why: str) -> RecordError:
        return RecordError(where, why)

    if not isinstance(snapshot, dict):
        raise bad("its state is not a mapping")
    theta = snapshot.get("theta")
    if (not isinstance(theta, list) or not theta
            or not all(_is_finite(v) for v in theta)):
        raise bad("θ is not a non-empty list of finite numbers")
    rnd = snapshot.get("round")
    rounds = None if config is None else config.rounds
    if not _is_int(rnd) or rnd < 0 or (rounds is not None and rnd > rounds):
        raise bad(f"the round {str(rnd)[:20]} is not an integer in [0, {rounds or 'T'}]")
    rng = snapshot.get("attack_rng")
    if (not isinstance(rng, dict) or rng.get("bit_generator") not in _BIT_GENERATORS
            or not isinstance(rng.get("state"), dict)):
        raise bad("the attack RNG state is not a numpy bit-generator state")
    rows = snapshot.get("rows", [])
    if not isinstance(rows, list) or not all(
            isinstance(r, dict) and all(isinstance(k, str) and (v is None or _is_number(v)
                                                                or isinstance(v, str | bool))
                                        for k, v in r.items()) for r in rows):
        raise bad("its history rows are not mappings of numbers")
    if any(not _is_int(r.get("round")) or not 0 < r["round"] <= rnd for r in rows):
        raise bad("a history row's round is outside [1, the record's round]")
    totals = snapshot.get("totals", {})
    if not isinstance(totals, dict) or not all(_is_number(v) for v in totals.values()):
        raise bad("its running totals are not numbers")
    agg = snapshot.get("aggregator_state")
    if agg is not None and (not isinstance(agg, list) or len(agg) != len(theta)
                            or not all(_is_finite(v) for v in agg)):
        raise bad("the aggregator's state is not a finite vector of θ's length")
    warned = snapshot.get("warned", [])
    if not isinstance(warned, list) or not all(isinstance(w, str) for w in warned):
        raise bad("its given-warnings list is not a list of names")
    try:
        state = RunState.from_dict(snapshot)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise bad(f"the RNG state does not load ({type(exc).__name__})") from None
    state.theta = np.asarray(state.theta, dtype=np.float64)
    return state
