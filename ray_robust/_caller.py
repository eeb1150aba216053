"""Warnings that point at the user's call, not at a line of ray_robust."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

_PACKAGE = str(Path(__file__).resolve().parent)


def _inside(frame) -> bool:
    """True for a frame of ray_robust: its files, and the code it generates (a dataclass's
    ``__init__`` is compiled from ``<string>`` in the defining module's globals)."""
    name = frame.f_globals.get("__name__") or ""
    return (name == "ray_robust" or name.startswith("ray_robust.")
            or frame.f_code.co_filename.startswith(_PACKAGE))


def warn_at_caller(message: str, category: type[Warning], stacklevel: int = 2) -> None:
    """:func:`warnings.warn` attributed to the first frame outside ray_robust at or above
    ``stacklevel`` (as in :func:`warnings.warn`, counted from the caller of this function): the
    user's line that called into the library. All frames inside (the CLI): the outermost."""
    frame, level = sys._getframe(1), 2
    while level < stacklevel + 1 and frame.f_back is not None:
        frame, level = frame.f_back, level + 1
    while _inside(frame) and frame.f_back is not None:
        frame, level = frame.f_back, level + 1
    warnings.warn(message, category, stacklevel=level)
