"""One error form for every parameter check (in the spirit of scikit-learn's validation).

Every violation reads: "The 'beta' parameter of NBS must be a float in [0, 1). Got 1.2 instead."
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from numbers import Integral, Real
from pathlib import Path
from typing import Any


def _fail(name: str, owner: str, expected: str, value: object, hint: str = "") -> ValueError:
    msg = f"The '{name}' parameter of {owner} must be {expected}. Got {value!r} instead."
    return ValueError(msg + (f" {hint}" if hint else ""))


def check_real(
    value: object,
    name: str,
    owner: str,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """Return ``value`` as a float, raising one clear ``ValueError`` if it is out of range."""
    lo_br, hi_br = ("(" if low_open else "["), (")" if high_open else "]")
    lo_s = "-inf" if low is None else f"{low:g}"
    hi_s = "inf" if high is None else f"{high:g}"
    expected = f"a finite real number in {lo_br}{lo_s}, {hi_s}{hi_br}"
    if isinstance(value, bool) or not isinstance(value, Real):
        raise _fail(name, owner, expected, value)
    v = float(value)
    if not math.isfinite(v):
        raise _fail(name, owner, expected, value)
    if low is not None and (v < low or (low_open and v == low)):
        raise _fail(name, owner, expected, value)
    if high is not None and (v > high or (high_open and v == high)):
        raise _fail(name, owner, expected, value)
    return v


def check_int(value: object, name: str, owner: str, *, low: int | None = None) -> int:
    """Return ``value`` as an int (>= ``low``), raising one clear ``ValueError`` otherwise."""
    expected = "an integer" + (f" >= {low}" if low is not None else "")
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise _fail(name, owner, expected, value)
    v = int(value)
    if low is not None and v < low:
        raise _fail(name, owner, expected, value)
    return v


def check_choice(value: object, name: str, owner: str, choices: Iterable[str]) -> str:
    """Return ``value`` if it is one of ``choices`` (the error lists the valid ones)."""
    valid = sorted(choices)
    if not isinstance(value, str) or value not in valid:
        raise _fail(name, owner, f"one of {valid}", value)
    return value


def load_yaml_mapping(path: str | Path, kind: str, expected: str) -> dict[str, Any]:
    """Read a YAML file that must hold a mapping; one clear error for a missing file
    (``FileNotFoundError``), malformed YAML or another top-level type (``ValueError``).

    ``kind`` names the file ("config", "study"); ``expected`` says what the mapping holds.
    """
    import yaml

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"No {kind} file at {p}.")
    try:
        values = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        raise ValueError(f"The {kind} file {p} is not valid YAML: {exc}".replace("\n", " ")) \
            from None
    if not isinstance(values, dict):
        raise ValueError(f"The {kind} file {p} must hold a mapping {expected}, not "
                         f"{type(values).__name__}.")
    return values
