"""Files the project writes: atomic, private (0600 files, 0700 folders, less if the umask
asks), a killed writer's leftovers removed, and folders locked against a second writer.

Used by the run-state store (:mod:`ray_robust.run_state`), the studies and saved models
(:mod:`ray_robust.fitted`); depends on nothing else in the package.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

_HOST = socket.gethostname().replace(".", "_").replace("@", "_")


def _tmp_name(target: Path) -> Path:
    return target.parent / (f".{target.name}.{os.getpid()}.{threading.get_ident()}@{_HOST}"
                            ".tmp")


def remove_stale_tmp(folder: Path, name: str) -> None:
    """Delete the temporary files of ``name`` left in ``folder`` by killed writers (a writer
    of this host whose process no longer exists); another live writer's file, and any file of
    another host (a shared folder on NFS), is left alone."""
    for tmp in folder.glob(f".{glob.escape(name)}.*.tmp"):
        stem = tmp.name.removeprefix(f".{name}.").removesuffix(".tmp")
        stem, _, host = stem.partition("@")
        try:
            pid = int(stem.split(".")[0])
        except ValueError:
            continue
        if pid == os.getpid() or (host and host != _HOST):
            continue
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            tmp.unlink(missing_ok=True)
        except PermissionError:  # a live process of another user: not ours to remove
            continue


def make_private_dir(folder: str | os.PathLike) -> Path:
    """``mkdir -p`` with mode 0700 for the folders it creates (the umask may ask for less)."""
    folder = Path(folder)
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    return folder


def write_bytes_atomic(target: str | os.PathLike, payload: bytes) -> Path:
    """Write ``payload`` to ``target`` so that a reader (or a crash) sees the old file or the
    new one, never a part: a 0600 temporary file beside it, fsync, then ``os.replace``."""
    target = Path(target)
    make_private_dir(target.parent)
    remove_stale_tmp(target.parent, target.name)
    tmp = _tmp_name(target)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(payload)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return target


def write_json_atomic(target: str | os.PathLike, payload: object,
                      indent: int | None = None) -> Path:
    """:func:`write_bytes_atomic` of ``payload`` as JSON."""
    return write_bytes_atomic(target, json.dumps(payload, indent=indent).encode())


@contextlib.contextmanager
def hold_lock(lock_file: str | os.PathLike, what: str, hint: str) -> Iterator[None]:
    """Hold an exclusive advisory ``flock`` on ``lock_file`` (it records the holder's pid);
    a second holder gets one clear ``ValueError`` naming ``what``, the pid and ``hint``."""
    import fcntl

    lock_file = Path(lock_file)
    make_private_dir(lock_file.parent)
    fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o600)
    with os.fdopen(fd, "r+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            raise ValueError(
                f"Another process ({fh.read().strip() or '?'}) is using {what}: {hint}"
            ) from None
        fh.truncate(0)
        fh.write(str(os.getpid()))
        fh.flush()
        yield
