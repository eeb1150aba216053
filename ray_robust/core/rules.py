"""Aggregation rules as objects built once from their hyperparameters (in the spirit of optax).

:func:`build_rule` checks the hyperparameters once, and, given the number of inputs n, the
rule's precondition on (n, f) (Krum's n > 2f + 2, Bulyan's n ≥ 4f + 3, ...); the rule is then
called every round with the messages and the state it carries::

    rule = build_rule("centered_clipping", n_inputs=20, clip_tau=1.0)
    state = rule.init_state(p)
    G, state, info = rule(messages, state)  # G (p,); info["kept"] (m,), info["n_screened"]

``state`` is None for the stateless rules; centered clipping carries its centre. :func:`chain`
puts pre-aggregation steps (messages → messages, :mod:`ray_robust.core.preaggregation`)
before a rule: ``chain(clip(τ), build_rule("krum", f=f))``. Every rule wraps a pure function
of :mod:`ray_robust.core.aggregators` (the registry ``AGGREGATORS``), which stays callable as
it is.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .._validation import check_choice, check_int, check_real
from .aggregators import AGGREGATORS, PRECONDITIONS, Aggregation, check_precondition, n_to_screen
from .preaggregation import clipping

#: what a rule carries from one round to the next (None when it carries nothing)
State = Any
Messages = np.ndarray


def _no_state(p: int) -> None:
    return None


def _zero_centre(p: int) -> np.ndarray:
    return np.zeros(check_int(p, "p", "init_state", low=1))


#: the initial state of the rules that carry one (the others start, and stay, at None)
INITIAL_STATE: dict[str, Callable[[int], State]] = {"centered_clipping": _zero_centre}


@dataclass(frozen=True, eq=False)
class Rule:
    """An aggregation rule, hyperparameters bound: ``rule(messages, state) -> (G, state, info)``.

    ``messages``: the ``(m, p)`` array (a non-finite row is a rejected message, never part of
    G). Returns G ``(p,)``, the state for the next round, and ``info`` with ``kept`` (the
    ``(m,)`` mask of the rows that went into G) and ``n_screened`` (m − kept.sum()).
    """

    name: str
    #: the wrapped pure function, hyperparameters bound: (messages, state) → Aggregation
    aggregate: Callable[[Messages, State], Aggregation]
    #: p → the first round's state
    init: Callable[[int], State] = _no_state
    #: the number of messages the rule was built (and its precondition checked) for; None: any
    n_inputs: int | None = None
    hyperparams: Mapping[str, Any] = field(default_factory=dict)

    def init_state(self, p: int) -> State:
        """The state of the first round, for messages of p entries."""
        return self.init(p)

    def __call__(
        self, messages: Messages, state: State = None
    ) -> tuple[np.ndarray, State, dict[str, Any]]:
        if self.n_inputs is not None and len(messages) != self.n_inputs:
            raise ValueError(
                f"The rule {self.name!r} was built for n_inputs = {self.n_inputs} messages. "
                f"Got {len(messages)}; build it with n_inputs={len(messages)}."
            )
        agg = self.aggregate(messages, state)
        return agg.vector, agg.state, {"kept": agg.kept, "n_screened": agg.n_screened}


def _label(name: str) -> str:
    """The rule's name in error messages (as its pure function says it)."""
    if name in PRECONDITIONS:
        return PRECONDITIONS[name][0]
    return {"nbs": "NBS"}.get(name, f"the {name.replace('_', ' ')}")


def _check_hyperparams(name: str, n: int | None, hp: dict[str, Any]) -> dict[str, Any]:
    """The hyperparameters converted and checked (with n known: the rule's precondition)."""
    label, out = _label(name), dict(hp)
    if "f" in hp and name in PRECONDITIONS and n is not None:
        out["f"] = check_precondition(name, n, hp["f"])
    elif "f" in hp:
        out["f"] = check_int(hp["f"], "f", label, low=0)
    if "beta" in hp:
        beta = out["beta"] = check_real(hp["beta"], "beta", label, low=0.0, high=1.0,
                                        high_open=True)
        if n is not None and n_to_screen(beta, n) >= n:
            raise ValueError(
                f"The 'beta' parameter of NBS must leave at least one input: β = {beta:g} "
                f"screens all {n}. Use a smaller beta."
            )
    for key in ("clip_tau", "tol", "nu"):
        if key in hp:
            out[key] = check_real(hp[key], key, label, low=0.0, low_open=True)
    for key in ("clip_iters", "max_iter", "n_selected"):
        if key in hp and hp[key] is not None:
            out[key] = check_int(hp[key], key, label, low=1)
    if hp.get("weights") is not None:
        w = out["weights"] = np.asarray(hp["weights"], dtype=np.float64)
        if w.ndim != 1 or (n is not None and w.size != n) or not (np.isfinite(w).all()
                                                                  and (w >= 0).all()):
            raise ValueError(
                f"The 'weights' parameter of {label} must be a vector of "
                f"{n if n is not None else 'm'} finite non-negative numbers (e.g. the shard "
                f"sizes). Got shape {w.shape}."
            )
    return out


def build_rule(name: str, *, n_inputs: int | None = None, **hyperparams: Any) -> Rule:
    """The rule ``name`` of :data:`~ray_robust.core.aggregators.AGGREGATORS`, built once.

    ``hyperparams``: the keyword arguments of its pure function (``beta`` for NBS, ``f`` for
    Krum, ``clip_tau``/``clip_iters`` for centered clipping, ``weights`` for mean/NBS, ...),
    checked here. With ``n_inputs`` (the number of workers m), the rule's precondition on
    (n, f) is checked here too, in the form "The 'f' parameter of Krum must satisfy n > 2f + 2
    (Blanchard et al. 2017) with n = 6 inputs. Got 2 instead. ...", and the rule refuses any
    other number of messages.
    """
    check_choice(name, "name", "build_rule", AGGREGATORS)
    fn = AGGREGATORS[name][0]
    params = {k: v for k, v in list(inspect.signature(fn).parameters.items())[1:]
              if k != "state"}
    unknown = sorted(set(hyperparams) - set(params))
    if unknown:
        raise ValueError(
            f"Unknown hyperparameter(s) {unknown} of the rule {name!r}. Valid ones: "
            f"{sorted(params)}."
        )
    missing = [k for k, v in params.items()
               if v.default is inspect.Parameter.empty and k not in hyperparams]
    if missing:
        raise ValueError(
            f"The rule {name!r} needs the hyperparameter(s) {missing}: "
            f"build_rule({name!r}, {missing[0]}=...)."
        )
    if n_inputs is not None:
        n_inputs = check_int(n_inputs, "n_inputs", "build_rule", low=1)
    hp = _check_hyperparams(name, n_inputs, hyperparams)
    if name in INITIAL_STATE:
        def aggregate(messages: Messages, state: State) -> Aggregation:
            return fn(messages, **hp, state=state)

        return Rule(name, aggregate, INITIAL_STATE[name], n_inputs, hp)
    return Rule(name, lambda messages, state: fn(messages, **hp), _no_state, n_inputs, hp)


# ---- pre-aggregation steps and their composition with a rule ---------------------------------


@dataclass(frozen=True, eq=False)
class Step:
    """A pre-aggregation step, parameters bound: ``step(messages) -> messages``, same shape."""

    name: str
    transform: Callable[[Messages], Messages]

    def __call__(self, messages: Messages) -> Messages:
        return self.transform(messages)


def clip(tau: float) -> Step:
    """Static clipping to the radius τ (:func:`~ray_robust.core.preaggregation.clipping`)."""
    tau = check_real(tau, "tau", "clipping", low=0.0, low_open=True)
    return Step(f"clipping(tau={tau:g})", functools.partial(clipping, tau=tau))


def chain(*steps: Callable[[Messages], Messages] | Rule) -> Rule:
    """One rule that applies the pre-aggregation ``steps`` in order, then the final rule.

    ``chain(clip(τ), build_rule("krum", f=f))``: every argument but the last is a step (a
    :class:`Step`, or any function messages → messages of the same shape); the last is a
    :class:`Rule`, whose state, initial state and ``n_inputs`` the chain keeps.
    """
    if not steps or not isinstance(steps[-1], Rule):
        last = type(steps[-1]).__name__ if steps else "nothing"
        raise ValueError(
            f"chain takes pre-aggregation steps, then one rule last. Got {last} last; end the "
            "chain with a rule from build_rule."
        )
    *pre, rule = steps
    for step in pre:
        if isinstance(step, Rule) or not callable(step):
            got = f"the rule {step.name!r}" if isinstance(step, Rule) else repr(step)
            raise ValueError(
                f"chain takes one rule, last; before it only pre-aggregation steps (messages → "
                f"messages). Got {got} before the rule {rule.name!r}."
            )

    def aggregate(messages: Messages, state: State) -> Aggregation:
        for step in pre:
            messages = step(messages)
        return rule.aggregate(messages, state)

    names = [getattr(s, "name", getattr(s, "__name__", "step")) for s in pre]
    return Rule(" → ".join([*names, rule.name]), aggregate, rule.init, rule.n_inputs,
                rule.hyperparams)
