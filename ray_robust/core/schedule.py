"""ε schedules for the certified WRM ascent (Sec. VI-D's two-stage strategy).

The paper recommends a large ε early (the byzantine error term C_α‖∇F‖ dominates, precise
perturbations buy nothing) and a small ε late (L_θz·ε + σ dominates near the solution). A
schedule maps the round index t ∈ [0, T) and the run length T to the ε of that round; honest
workers receive t with every call (``honest_gradients``), so both engines follow it.

Spellings accepted by :func:`parse_schedule` (and so by ``Config(epsilon_schedule=...)``, the
CLI's ``--epsilon-schedule`` and YAML):

- ``"two-stage:0.1,0.001,0.5"``: ε = 0.1 for the first half of the rounds, then 0.001;
- ``"constant:0.01"`` (or a number): the same ε every round;
- a mapping ``{"kind": "two-stage", "large": 0.1, "small": 0.001, "switch": 0.5}`` or
  ``{"kind": "constant", "epsilon": 0.01}`` (``kind`` may be left out);
- a :class:`TwoStage` / :class:`Constant`, or any callable ``round -> ε``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from numbers import Real
from typing import Any

from .._validation import check_real

_OWNER = "the config"
_FORMS = (
    "'two-stage:LARGE,SMALL,SWITCH' (e.g. 'two-stage:0.1,0.001,0.5'), 'constant:EPS', a "
    "mapping {kind: two-stage, large:, small:, switch:}, or a callable round -> ε"
)


def _fail(value: object, why: str = "") -> ValueError:
    extra = f" ({why})" if why else ""
    return ValueError(
        f"The 'epsilon_schedule' parameter of {_OWNER} must be {_FORMS}. Got {value!r} "
        f"instead{extra}."
    )


@dataclass(frozen=True)
class Constant:
    """ε every round."""

    epsilon: float

    def __post_init__(self) -> None:
        check_real(self.epsilon, "epsilon", "the constant ε schedule", low=0, low_open=True)

    def __call__(self, round_index: int, rounds: int) -> float:
        return float(self.epsilon)

    @property
    def spec(self) -> str:
        return f"constant:{self.epsilon!r}"  # repr: round-trips exactly (checkpoints, YAML)


@dataclass(frozen=True)
class TwoStage:
    """Sec. VI-D: ε = ``large`` for rounds t < switch·T, then ``small`` (large ≥ small > 0)."""

    large: float
    small: float
    switch: float = 0.5

    def __post_init__(self) -> None:
        owner = "the two-stage ε schedule"
        check_real(self.large, "large", owner, low=0, low_open=True)
        check_real(self.small, "small", owner, low=0, low_open=True)
        check_real(self.switch, "switch", owner, low=0, high=1)
        if self.small > self.large:
            raise ValueError(
                f"The 'small' parameter of the two-stage ε schedule must be <= large = "
                f"{self.large:g} (large ε first, small ε last). Got {self.small!r} instead."
            )

    def __call__(self, round_index: int, rounds: int) -> float:
        return float(self.large if round_index < self.switch * rounds else self.small)

    @property
    def spec(self) -> str:
        return f"two-stage:{self.large!r},{self.small!r},{self.switch!r}"


@dataclass(frozen=True)
class FromCallable:
    """Any callable ``round -> ε`` (the run length is not passed to it)."""

    fn: Callable[[int], float]

    def __call__(self, round_index: int, rounds: int) -> float:
        eps = self.fn(round_index)
        return check_real(eps, "epsilon", f"the ε schedule at round {round_index}", low=0,
                          low_open=True)


Schedule = Constant | TwoStage | FromCallable


def _numbers(text: str, value: object, n_min: int, n_max: int) -> list[float]:
    parts = [p.strip() for p in text.split(",")]
    if not n_min <= len(parts) <= n_max:
        raise _fail(value, f"expected {n_min}–{n_max} numbers after the colon")
    try:
        return [float(p) for p in parts]
    except ValueError:
        raise _fail(value, "not a number") from None


def parse_schedule(value: Any) -> Schedule | None:
    """A :data:`Schedule` from any accepted spelling (see the module docstring); None → None."""
    if value is None or isinstance(value, Constant | TwoStage | FromCallable):
        return value
    try:
        if isinstance(value, Real) and not isinstance(value, bool):
            return Constant(float(value))
        if isinstance(value, str):
            kind, _, rest = value.strip().partition(":")
            kind = kind.strip().lower().replace("_", "-")
            if kind in ("two-stage", "twostage") and rest:
                return TwoStage(*_numbers(rest, value, 2, 3))
            if kind == "constant" and rest:
                return Constant(*_numbers(rest, value, 1, 1))
            raise _fail(value)
        if isinstance(value, Mapping):
            values = dict(value)
            kind = str(values.pop("kind", values.pop("type", ""))).lower().replace("_", "-")
            if not kind:
                kind = "constant" if set(values) == {"epsilon"} else "two-stage"
            if kind == "constant" and set(values) == {"epsilon"}:
                return Constant(values["epsilon"])
            if kind == "two-stage" and {"large", "small"} <= set(values) <= {
                "large", "small", "switch"
            }:
                return TwoStage(**values)
            raise _fail(value)
        if callable(value):
            return FromCallable(value)
    except ValueError as exc:
        if "epsilon_schedule" in str(exc):
            raise
        raise _fail(value, str(exc).rstrip(".")) from None
    except TypeError:
        raise _fail(value) from None
    raise _fail(value)


def schedule_spec(schedule: Schedule | None) -> Any:
    """A YAML/JSON-able spelling of ``schedule`` (its compact string; callables stay as is)."""
    return getattr(schedule, "spec", schedule)
