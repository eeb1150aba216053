"""One error form for every parameter check (in the spirit of scikit-learn's validation).

Every violation reads: "The 'beta' parameter of NBS must be a float in [0, 1). Got 1.2 instead."
"""

from __future__ import annotations

import math
import reprlib
from collections.abc import Iterable
from numbers import Integral
from numbers import Real as RealNumber
from pathlib import Path
from typing import Any

import numpy as np


def _fail(name: str, owner: str, expected: str, value: object, hint: str = "") -> ValueError:
    msg = (f"The '{name}' parameter of {owner} must be {expected}. Got {bounded_repr(value)} "
           "instead.")
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
    if isinstance(value, bool) or not isinstance(value, RealNumber):
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


#: the most YAML nodes a document may expand to (aliases counted at every use): a run config
#: or a study has hundreds; a "billion laughs" alias bomb has billions
MAX_YAML_NODES = 100_000

_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxlist, _REPR.maxtuple, _REPR.maxdict = 3, 6, 6, 6
_REPR.maxset, _REPR.maxstring, _REPR.maxother, _REPR.maxlong = 6, 80, 80, 40


def bounded_repr(value: object) -> str:
    """``repr(value)`` cut to a bounded size and cost (an echoed value may be an alias bomb,
    a huge array or an object whose ``__repr__`` raises)."""
    try:
        text = _REPR.repr(value)
    except Exception:  # a hostile __repr__: name the type only
        return f"<{type(value).__name__}>"
    return text if len(text) <= 200 else text[:197] + "..."


def _yaml_loader():
    """A safe loader that refuses duplicate keys and reads YAML 1.2 floats (``1e-3``)."""
    import re

    import yaml

    class Loader(yaml.SafeLoader):
        pass

    def construct_mapping(loader, node, deep=False):
        seen: set = set()
        for key_node, _ in node.value:
            key = loader.construct_object(key_node, deep=True)
            try:
                dup = key in seen
                seen.add(key)
            except TypeError:  # an unhashable key: the default constructor reports it
                continue
            if dup:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {bounded_repr(key)}", key_node.start_mark)
        return yaml.SafeLoader.construct_mapping(loader, node, deep)

    Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, construct_mapping)
    Loader.add_implicit_resolver(  # YAML 1.1 reads 1e-3 (no dot) as a string; 1.2 as a float
        "tag:yaml.org,2002:float",
        re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
        list("-+0123456789"))
    return Loader


def _expanded_size(value: object, limit: int) -> int:
    """How many nodes ``value`` has when every shared (aliased) part is counted at each use;
    counted once per distinct object, so an alias bomb costs linear time to measure."""
    memo: dict[int, int] = {}

    def size(v: object) -> int:
        key = id(v)
        if key in memo:
            return memo[key]
        if isinstance(v, dict):
            n = 1 + sum(size(k) + size(x) for k, x in v.items())
        elif isinstance(v, list | tuple | set):
            n = 1 + sum(size(x) for x in v)
        else:
            n = 1
        memo[key] = n = min(n, limit + 1)
        return n

    return size(value)


def load_yaml_mapping(path: str | Path, kind: str, expected: str) -> dict[str, Any]:
    """Read a YAML file that must hold a mapping; one clear error for a missing file
    (``FileNotFoundError``), malformed YAML, a duplicate key, a document that expands past
    :data:`MAX_YAML_NODES` nodes, or another top-level type (``ValueError``).

    ``kind`` names the file ("config", "study"); ``expected`` says what the mapping holds.
    """
    import yaml

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"No {kind} file at {p}.")
    try:
        values = yaml.load(p.read_text(), Loader=_yaml_loader())  # a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise ValueError(f"The {kind} file {p} is not valid YAML: {exc}".replace("\n", " ")) \
            from None
    except UnicodeDecodeError:
        raise ValueError(f"The {kind} file {p} is not UTF-8 text.") from None
    if _expanded_size(values, MAX_YAML_NODES) > MAX_YAML_NODES:
        raise ValueError(
            f"The {kind} file {p} expands to more than {MAX_YAML_NODES:,} YAML nodes (aliases "
            "counted at each use): refused as an alias bomb. Write the values out.")
    if not isinstance(values, dict):
        raise ValueError(f"The {kind} file {p} must hold a mapping {expected}, not "
                         f"{type(values).__name__}.")
    return values


# ---- declarative constraints: one object per kind of value ----------------------------------
# A constraint checks a value and returns what is stored (normalized: a numpy scalar becomes a
# Python float/int), parses the CLI's text, describes itself for errors, ``--help`` and the
# docs, gives its JSON-schema fragment, and names values it must refuse (the generated
# invalid-value test walks them). scikit-learn's ``_param_validation`` is the model.


class Constraint:
    """Base of the declarative constraints (see :class:`Real`, :class:`Integer`, ...)."""

    def check(self, value: object, name: str, owner: str) -> Any:
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError

    def parse_text(self, text: str) -> Any:
        return text

    def schema(self) -> dict[str, Any]:
        raise NotImplementedError

    def invalid(self) -> list[object]:
        """Values this constraint must refuse (for the generated invalid-value test)."""
        return [object()]


class Real(Constraint):
    """A finite real number in an interval; stored as a Python ``float``."""

    def __init__(self, low: float | None = None, high: float | None = None, *,
                 low_open: bool = False, high_open: bool = False):
        self.low, self.high, self.low_open, self.high_open = low, high, low_open, high_open

    def check(self, value: object, name: str, owner: str) -> float:
        return check_real(value, name, owner, low=self.low, high=self.high,
                          low_open=self.low_open, high_open=self.high_open)

    def describe(self) -> str:
        lo = "-inf" if self.low is None else f"{self.low:g}"
        hi = "inf" if self.high is None else f"{self.high:g}"
        lb = "(" if self.low_open or self.low is None else "["
        hb = ")" if self.high_open or self.high is None else "]"
        return f"a real number in {lb}{lo}, {hi}{hb}"

    def parse_text(self, text: str) -> float:
        return float(text)

    def schema(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "number"}
        if self.low is not None:
            out["exclusiveMinimum" if self.low_open else "minimum"] = self.low
        if self.high is not None:
            out["exclusiveMaximum" if self.high_open else "maximum"] = self.high
        return out

    def invalid(self) -> list[object]:
        bad: list[object] = ["0.5", True, float("nan"), float("inf")]
        if self.low is not None:
            bad.append(self.low if self.low_open else self.low - max(1.0, abs(self.low)))
        if self.high is not None:
            bad.append(self.high if self.high_open else self.high + max(1.0, abs(self.high)))
        return bad


class Integer(Constraint):
    """An integer ``>= low``; stored as a Python ``int``."""

    def __init__(self, low: int | None = None):
        self.low = low

    def check(self, value: object, name: str, owner: str) -> int:
        return check_int(value, name, owner, low=self.low)

    def describe(self) -> str:
        return "an integer" + (f" >= {self.low}" if self.low is not None else "")

    def parse_text(self, text: str) -> int:
        return int(text)

    def schema(self) -> dict[str, Any]:
        return {"type": "integer", **({} if self.low is None else {"minimum": self.low})}

    def invalid(self) -> list[object]:
        return [2.5, "3", True, *([] if self.low is None else [self.low - 1])]


class Choice(Constraint):
    """One of a set of names; ``options`` may be a callable (a registry read when checked)."""

    def __init__(self, options: Iterable[str] | Any):
        self._options = options

    @property
    def options(self) -> list[str]:
        opts = self._options() if callable(self._options) else self._options
        return list(opts)

    def check(self, value: object, name: str, owner: str) -> str:
        return check_choice(value, name, owner, self.options)

    def describe(self) -> str:
        return f"one of {sorted(self.options)}"

    def schema(self) -> dict[str, Any]:
        return {"type": "string", "enum": sorted(self.options)}

    def invalid(self) -> list[object]:
        return ["no-such-name", 3, None]


class Boolean(Constraint):
    """``True`` or ``False`` (numpy booleans become Python ones; 0/1 and strings are refused)."""

    def check(self, value: object, name: str, owner: str) -> bool:
        if isinstance(value, np.bool_):
            value = bool(value)
        if not isinstance(value, bool):
            raise _fail(name, owner, "a bool", value)
        return value

    def describe(self) -> str:
        return "a bool"

    def parse_text(self, text: str) -> bool:
        low = text.lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"expected true or false, got {text!r}")

    def schema(self) -> dict[str, Any]:
        return {"type": "boolean"}

    def invalid(self) -> list[object]:
        return ["yes", 1, None]


class Text(Constraint):
    """A non-empty string (a path or a column name)."""

    def check(self, value: object, name: str, owner: str) -> str:
        if isinstance(value, Path):
            value = str(value)
        if not isinstance(value, str) or not value:
            raise _fail(name, owner, "a non-empty string", value)
        return value

    def describe(self) -> str:
        return "a string"

    def schema(self) -> dict[str, Any]:
        return {"type": "string", "minLength": 1}

    def invalid(self) -> list[object]:
        return [3, "", ["a"]]


class Optional(Constraint):
    """``None`` (meaning what the field's doc says) or a value of ``inner``."""

    def __init__(self, inner: Constraint):
        self.inner = inner

    def check(self, value: object, name: str, owner: str) -> Any:
        return None if value is None else self.inner.check(value, name, owner)

    def describe(self) -> str:
        return f"None or {self.inner.describe()}"

    def parse_text(self, text: str) -> Any:
        return None if text.lower() in ("none", "null") else self.inner.parse_text(text)

    def schema(self) -> dict[str, Any]:
        return {"anyOf": [{"type": "null"}, self.inner.schema()]}

    def invalid(self) -> list[object]:
        return [v for v in self.inner.invalid() if v is not None]
