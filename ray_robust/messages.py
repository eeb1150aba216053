"""The message boundary: what a worker may send the server, read as data only.

A worker's message is accepted only in two forms, both read without calling any code the worker
could have supplied:

- an array whose type is exactly :class:`numpy.ndarray` (no subclass: not a masked array, not
  ``np.matrix``, nothing with its own ``astype``, ``shape`` or ``__array__``), of a float dtype
  and shape ``(p,)``; its type, dtype and shape are read from numpy's C structure;
- a :class:`bytes` object (exactly, no subclass) of ``8·p`` bytes, read by
  :func:`numpy.frombuffer` as p little-endian float64.

Anything else (None, a list, a string, a subclass, a wrong shape or length, a non-float dtype) and
any row with NaN or Inf is a *rejected* row of NaN, which every aggregator screens out. The
functions here never raise, whatever object they are given, and never call its methods: the
container of messages is read only when it is exactly a list, tuple or ndarray (a subclass of
list or tuple is read through the base type's own iterator).

The Ray engine's worker replies (:func:`encode_reply` / :func:`decode_reply`) are one ``bytes``
object per worker actor: a fixed header, the worker statistics as JSON (numbers and lists of
numbers only) and the ``(k, p)`` gradient stack as raw float64. See
:mod:`ray_robust.engines.ray_actors` for how the server reads a reply from Ray without
unpickling it, and README.md's threat model for what remains trusted.
"""

from __future__ import annotations

import json
import struct
from typing import Any

import numpy as np

#: the wire dtype of every float vector a worker sends (native float64 on every usual machine)
WIRE_FLOAT = np.dtype("<f8")
_FLOAT_TYPES = (np.float16, np.float32, np.float64, np.longdouble)

#: a worker reply's header: magic, k (messages), p (floats each), JSON length (bytes)
REPLY_HEADER = struct.Struct("<4sIII")
REPLY_MAGIC = b"RRW1"
#: the most bytes of worker statistics (JSON) a reply may carry
MAX_INFO_BYTES = 1 << 20


def _items(messages: Any) -> list[Any] | None:
    """The messages of an exact list, tuple or ndarray (a list or tuple subclass read through
    the base type's iterator); None for any other container (never iterated)."""
    tp = type(messages)
    try:
        if tp is np.ndarray:
            return list(messages) if messages.ndim else None
        if issubclass(tp, list):
            return list(list.__iter__(messages))
        if issubclass(tp, tuple):
            return list(tuple.__iter__(messages))
    except Exception:  # e.g. an ndarray of a dtype whose items cannot be read
        return None
    return None


def as_row(msg: Any, p: int) -> np.ndarray | None:
    """``msg`` as a float64 vector of p entries (possibly non-finite) when it has one of the two
    accepted forms, else None. Calls no method of ``msg``."""
    tp = type(msg)
    try:
        if tp is np.ndarray:
            if msg.ndim != 1 or msg.shape[0] != p or msg.dtype.type not in _FLOAT_TYPES:
                return None
            with np.errstate(over="ignore", invalid="ignore"):
                return np.array(msg, dtype=np.float64, copy=True)
        if tp is bytes:
            if len(msg) != WIRE_FLOAT.itemsize * p:
                return None
            return np.frombuffer(msg, dtype=WIRE_FLOAT).astype(np.float64, copy=False)
    except Exception:  # nothing here calls user code; a numpy error still is a rejected row
        return None
    return None


def validate_messages(messages: Any, p: int, m: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Turn whatever the m workers sent into an ``(m, p)`` float64 array.

    A message is valid when :func:`as_row` accepts it (an exact ndarray of a float dtype and
    shape ``(p,)``, or 8·p bytes) and all its entries are finite. Anything else (None, a string,
    a list, a wrong shape, complex, object or bool dtype, an ndarray subclass, NaN, Inf, a
    missing message) becomes a row of NaN, which every aggregator screens out. Returns the array
    and the boolean ``(m,)`` mask of rejected messages. Never raises, for any object.

    ``m`` (optional) fixes the number of rows: extra messages are ignored, missing ones (or an
    unreadable container) are rejected rows. Without it, the rows are the container's items
    (none for a container that is not exactly a list, tuple or ndarray).

    Size limit: a message is exactly p floats (the model's parameter count). The type, dtype
    and shape are checked first, in O(1), so an oversized array is rejected before any
    arithmetic touches it (Ray has already carried it, zero-copy from the object store).
    Finite vectors of enormous norm (e.g. entries of 1e308) are *valid* messages: screening
    them is the aggregator's job (NBS, Krum, ... drop them; the mean is poisoned by them, which
    is the mean's honest behaviour), and :meth:`~ray_robust.algorithm.Server.step` refuses a
    step that would make θ non-finite.
    """
    if (
        type(messages) is np.ndarray
        and messages.dtype == np.float64
        and messages.ndim == 2
        and messages.shape[1] == p
        and (m is None or messages.shape[0] == m)
    ):
        grads = messages.copy()  # the in-process engine's honest stack: the fast path
        rejected = ~np.isfinite(grads).all(axis=1)
        grads[rejected] = np.nan
        return grads, rejected
    items = _items(messages) or []
    if m is not None:
        items = (items + [None] * m)[:m]
    grads = np.full((len(items), p), np.nan)
    rejected = np.ones(len(items), dtype=bool)
    for i, msg in enumerate(items):
        row = as_row(msg, p)
        if row is not None and np.isfinite(row).all():
            grads[i] = row
            rejected[i] = False
    return grads, rejected


def count_overflowed(messages: Any, p: int) -> int:
    """How many messages are p floats (in a form :func:`as_row` accepts) that are non-finite or
    whose norm overflows. Never raises, for any object.

    These are well-formed messages from workers whose arithmetic blew up (a diverging run), as
    opposed to missing or malformed ones. Only called on the rare failing path.
    """
    n = 0
    for msg in _items(messages) or []:
        row = as_row(msg, p)
        if row is not None:
            with np.errstate(over="ignore", invalid="ignore"):
                n += not np.isfinite(np.linalg.norm(row))
    return n


# ---- the Ray engine's worker replies -----------------------------------------------------


def _plain(value: Any) -> Any:
    """A worker statistic as JSON can carry it: an int, a float, or a list of them."""
    if isinstance(value, bool | np.bool_):
        return int(value)
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        return float(value)
    if isinstance(value, list | tuple | np.ndarray):
        return [_plain(v) for v in value]
    raise TypeError(f"A worker statistic must be a number or a list of numbers, not "
                    f"{type(value).__name__}.")


def encode_reply(grads: np.ndarray, info: dict[str, Any]) -> bytes:
    """A worker actor's reply: header, the statistics ``info`` as JSON, the ``(k, p)`` stack.

    The stack's bits are kept (float64, little-endian); ``info`` may hold only numbers and
    lists (or tuples) of numbers under string keys.
    """
    k, p = grads.shape
    text = json.dumps({str(key): _plain(v) for key, v in info.items()},
                      separators=(",", ":")).encode()
    stack = np.ascontiguousarray(grads, dtype=WIRE_FLOAT).tobytes()
    return REPLY_HEADER.pack(REPLY_MAGIC, k, p, len(text)) + text + stack


def _number(value: Any) -> bool:
    return type(value) is float or (type(value) is int and abs(value) < 2**63)


def _checked_info(info: Any) -> dict[str, Any] | None:
    """The decoded statistics when they are a dict of numbers and lists of numbers (lists
    become tuples, as the in-process engine reports them); else None."""
    if type(info) is not dict:
        return None
    out: dict[str, Any] = {}
    for key, value in info.items():
        if type(value) is list and all(_number(v) for v in value):
            out[key] = tuple(value)
        elif _number(value):
            out[key] = value
        else:
            return None
    return out


def decode_reply(reply: Any, k: int, p: int) -> tuple[np.ndarray, dict[str, Any]] | None:
    """A worker actor's reply read back: the ``(k, p)`` float64 stack and the statistics, or
    None when ``reply`` is not exactly ``bytes`` in :func:`encode_reply`'s format for these k
    and p (wrong magic, counts or lengths, statistics that are not numbers). Never raises."""
    try:
        if type(reply) is not bytes or len(reply) < REPLY_HEADER.size:
            return None
        magic, k_sent, p_sent, n_info = REPLY_HEADER.unpack_from(reply)
        stack_bytes = WIRE_FLOAT.itemsize * k * p
        if (magic != REPLY_MAGIC or (k_sent, p_sent) != (k, p) or n_info > MAX_INFO_BYTES
                or len(reply) != REPLY_HEADER.size + n_info + stack_bytes):
            return None
        start = REPLY_HEADER.size
        info = _checked_info(json.loads(reply[start:start + n_info].decode("utf-8")))
        if info is None:
            return None
        stack = np.frombuffer(reply, dtype=WIRE_FLOAT, count=k * p, offset=start + n_info)
        return stack.astype(np.float64, copy=False).reshape(k, p), info
    except (ValueError, RecursionError, struct.error):  # bad UTF-8 or JSON, deep nesting
        return None

