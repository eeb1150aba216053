"""The typed, validated configuration of one training run (Algorithm 2 or a baseline).

One declaration per parameter: each field of :class:`Config` is a :func:`param` entry that names
its default, its constraint (type, range, choices), its group and its one-line doc, and the
model/aggregator it applies to. That table (:data:`PARAMS`) drives the validation and the stored
(normalized) value, the CLI's flags and types, the JSON schema of the YAML files
(:func:`json_schema`), the generated reference ``docs/config.md`` (:func:`reference_markdown`)
and the generated invalid-value test. Checks that tie several fields together live in
:meth:`Config._check_together`. Warnings for settings outside the paper's guarantees come from
one method, :meth:`Config.guarantee_warnings`, given once per run by :func:`ray_robust.train`
and the CLI (never by the constructor).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from ._validation import (
    Boolean,
    Choice,
    Constraint,
    Integer,
    Optional,
    Real,
    Text,
    bounded_repr,
    check_choice,
)
from .core.aggregators import AGGREGATORS, PRECONDITIONS, n_to_screen
from .core.attacks import ATTACKS
from .core.models import MODELS
from .core.schedule import Schedule, parse_schedule, schedule_spec
from .core.shift import NORMS
from .data import SHARDINGS, STANDARDIZE, label_position

#: The four algorithms of Table I as (server aggregator, honest workers run WRM).
ALGORITHMS: dict[str, tuple[str, bool]] = {
    "erm": ("mean", False),
    "nbs": ("nbs", False),
    "dro": ("mean", True),
    "alg2": ("nbs", True),
}
ALGORITHM_LABELS = {"erm": "ERM", "nbs": "NBS", "dro": "DRO", "alg2": "Alg. 2"}

#: The parameter groups, in the order of the docs and ``--help``. A YAML file or a dict may
#: give a group as a nested mapping (``server: {aggregator: krum, f: 3}``) or flat keys.
GROUPS: dict[str, str] = {
    "problem": "model and data",
    "worker": "honest workers: the WRM perturbation (Algorithm 2, lines 4–6)",
    "server": "server: aggregation and the step (Algorithm 2, lines 9–11)",
    "adversary": "the simulated byzantine workers",
    "evaluation": "evaluation: the test-time shift and how often to measure",
}

#: the attacks whose ``attack_scale`` is a probability or a fraction
_PROBABILITY_ATTACKS = ("nan", "inf", "crash", "label_flip")
#: aggregators that take ``f``, the faults they tolerate
_F_RULES = tuple(name for name, (_, kw) in AGGREGATORS.items() if "f" in kw)


class GuaranteeWarning(UserWarning):
    """A legitimate configuration that the paper's convergence guarantee does not cover."""


class ScheduleSpec(Constraint):
    """An ε schedule in any spelling :func:`~ray_robust.core.schedule.parse_schedule` takes."""

    def check(self, value: object, name: str, owner: str) -> Schedule:
        return parse_schedule(value)

    def describe(self) -> str:
        return "an ε schedule ('two-stage:LARGE,SMALL,SWITCH', 'constant:EPS', a mapping)"

    def schema(self) -> dict[str, Any]:
        return {"anyOf": [{"type": "string"}, {"type": "number", "exclusiveMinimum": 0},
                          {"type": "object"}]}

    def invalid(self) -> list[object]:
        return ["two-stage:0.1", "sometimes", -1.0, [0.1]]


@dataclass(frozen=True)
class Param:
    """One entry of the parameter table: what a :class:`Config` field accepts and means."""

    constraint: Constraint
    group: str
    doc: str
    #: ``{"aggregator": (...)}`` / ``{"model": (...)}``: the settings this field acts in
    applies_to: Mapping[str, tuple[str, ...]] | None = None
    #: a non-default value outside ``applies_to`` is an error (else it is documented only)
    strict: bool = False
    #: the field shapes the training problem (split, scaling, shards): runs that agree on
    #: every such field share one :class:`~ray_robust.data.Problem` (:meth:`Config.data_key`)
    defines_data: bool = False
    name: str = ""


def param(default: Any, constraint: Constraint, group: str, doc: str, *,
          applies_to: Mapping[str, tuple[str, ...]] | None = None, strict: bool = False,
          defines_data: bool = False, compare: bool = True) -> Any:
    """A :class:`Config` field declared with its constraint: one entry of the table."""
    if group not in GROUPS:
        raise ValueError(f"unknown parameter group {group!r}; one of {list(GROUPS)}")
    return field(default=default, compare=compare,
                 metadata={"param": Param(constraint, group, doc, applies_to, strict,
                                           defines_data)})


@dataclass(frozen=True)
class Config:
    """One run. Defaults are the paper's Sec. VII setting for Algorithm 2 without an attack.

    Build from keywords, or with :meth:`from_dict` (flat keys or group sections; it also
    takes ``algorithm='erm' | 'nbs' | 'dro' | 'alg2'`` as a shorthand for ``aggregator`` +
    ``wrm``). Every value is checked against its :func:`param` entry and stored normalized.
    """

    # ---- problem: model and data -----------------------------------------------------------
    model: str = param("logistic", Choice(lambda: MODELS), "problem", "model name")
    hidden: int = param(16, Integer(low=1), "problem", "hidden units of the 'mlp' model",
                        applies_to={"model": ("mlp",)})
    n_classes: int = param(2, Integer(low=2), "problem",
                           "classes K of the 'softmax' model (labels 0, …, K − 1)",
                           applies_to={"model": ("softmax",)})
    n_workers: int = param(20, Integer(low=1), "problem", "m, the number of workers",
                           defines_data=True)
    sharding: str = param(
        "iid", Choice(SHARDINGS), "problem",
        "training data over workers: 'iid', 'dirichlet' (label skew), 'sorted' (one label per "
        "worker) or 'quantity' (uneven sizes)", defines_data=True)
    dirichlet_alpha: float = param(
        1.0, Real(0, low_open=True), "problem",
        "Dirichlet concentration of 'dirichlet'/'quantity' sharding; smaller = more skewed",
        applies_to={"sharding": ("dirichlet", "quantity")}, defines_data=True)
    train_fraction: float = param(
        0.8, Real(0, 1, low_open=True, high_open=True), "problem",
        "share of the data used for training (stratified; the paper's percentages were lost)",
        defines_data=True)
    standardize: str = param("zscore", Choice(STANDARDIZE), "problem",
                             "feature scaling with training statistics: 'zscore' or 'none'",
                             defines_data=True)
    seed: int = param(0, Integer(low=0), "problem",
                      "seeds the split, the shards, θ₀, the byzantine set and the attack's "
                      "randomness", defines_data=True)
    init_scale: float = param(0.01, Real(0), "problem",
                              "θ₀ ~ N(0, init_scale²), shared by all algorithms for a seed")
    data_path: str | None = param(
        None, Optional(Text()), "problem",
        "Spambase file or folder; None = $RAY_ROBUST_DATA_DIR, the cache, or a download (with "
        "label_column: your data file, by extension .csv, .npy, .npz or .parquet; relative "
        "in a study: to the study file's folder, else the working directory)",
        defines_data=True, compare=False)
    label_column: str | None = param(
        None, Optional(Text()), "problem",
        "train on your own data file (data_path): the label column's name, or '#N' for the "
        "column at 0-based position N ('#-1': the last; for headerless CSV and .npy files; "
        "quote it in YAML and the shell); the other columns are the features. None = Spambase",
        defines_data=True)

    # ---- worker: WRM ---------------------------------------------------------------------
    wrm: bool = param(True, Boolean(), "worker",
                      "honest workers perturb their samples by WRM before the gradient (DRO, "
                      "Algorithm 2)")
    lam: float = param(3.0, Real(0, 1e100, low_open=True), "worker",
                       "λ, the WRM penalty on ‖z − x‖² (at most 1e100: 2λ must not overflow)")
    eta_z: float | None = param(0.05, Optional(Real(0, low_open=True)), "worker",
                                "WRM ascent step; None = 1/(2λ), the Sec. VI-D step "
                                "2/(L_g + λ_g)")
    t_z: int = param(10, Integer(low=0), "worker",
                     "T_z, WRM ascent steps per sample and round (ignored when epsilon or its "
                     "schedule is set)")
    epsilon: float | None = param(
        None, Optional(Real(0, low_open=True)), "worker",
        "certified WRM precision: each worker ascends until every sample's bound ‖∇g‖/λ_g on "
        "‖z − z*‖ is ≤ epsilon (Sec. VI-D), at most t_z_max steps; None = fixed t_z steps")
    epsilon_schedule: Schedule | str | None = param(
        None, Optional(ScheduleSpec()), "worker",
        "ε per round instead of one epsilon: 'two-stage:LARGE,SMALL,SWITCH' (Sec. VI-D: LARGE "
        "for the first SWITCH·T rounds), 'constant:EPS', a mapping, or a callable round -> ε")
    t_z_max: int = param(1000, Integer(low=1), "worker",
                         "cap on the certified ascent's steps per round (reported when hit)")

    # ---- server: aggregation and the step ------------------------------------------------
    aggregator: str = param(
        "nbs", Choice(AGGREGATORS), "server",
        "server rule: 'mean' (ERM, DRO), 'nbs' (NBS, Algorithm 2), or 'median', "
        "'trimmed_mean', 'krum', 'multi_krum', 'geometric_median', 'centered_clipping', "
        "'bulyan'")
    beta: float = param(0.15, Real(0, 1, high_open=True), "server",
                        "β, the NBS screening fraction: NBS drops round(βm) inputs (ties round "
                        "up)", applies_to={"aggregator": ("nbs",)})
    f: int | None = param(None, Optional(Integer(low=0)), "server",
                          "faults the rule tolerates; None = the byzantine count round(αm)",
                          applies_to={"aggregator": _F_RULES})
    clip_tau: float = param(0.1, Real(0, low_open=True), "server",
                            "τ, the radius of 'centered_clipping'",
                            applies_to={"aggregator": ("centered_clipping",)})
    clip_iters: int = param(1, Integer(low=1), "server",
                            "clipping iterations per round of 'centered_clipping'",
                            applies_to={"aggregator": ("centered_clipping",)})
    weighted: bool = param(False, Boolean(), "server",
                           "'mean' and 'nbs' average by shard sizes (known to the server) "
                           "instead of one vote each",
                           applies_to={"aggregator": ("mean", "nbs")}, strict=True)
    eta: float = param(1.0, Real(0, low_open=True), "server", "η, the server's step size")
    rounds: int = param(300, Integer(low=1), "server", "T, training rounds")

    # ---- adversary -----------------------------------------------------------------------
    alpha: float = param(0.0, Real(0, 1, high_open=True), "adversary",
                         "α, the byzantine fraction: round(αm) workers (chosen at random, "
                         "seeded) are byzantine")
    attack: str = param(
        "none", Choice(lambda: ["none", *ATTACKS]), "adversary",
        "what byzantine workers send: 'none' (honest messages) or an attack ('aggressive', "
        "'intelligent', 'counterexample', 'alie', 'ipm', 'sign_flip', 'gaussian', 'mimic', "
        "'nan', 'inf', 'crash', 'label_flip')")
    attack_scale: float | None = param(
        None, Optional(Real()), "adversary",
        "attack intensity; None = the attack's default (aggressive 10, intelligent 0.8, ALIE "
        "the paper's z, IPM ε = 0.1, ...; for nan/inf/crash a probability in [0, 1], "
        "label_flip a fraction)")

    # ---- evaluation ----------------------------------------------------------------------
    shift_norm: str = param("none", Choice(lambda: ["none", *NORMS]), "evaluation",
                            "test-time worst-case shift: 'none', 'l1', 'l2' or 'linf'")
    shift_eps: float = param(0.0, Real(0), "evaluation",
                             "ε, the shift budget in that norm (on standardized features)")
    eval_every: int = param(1, Integer(low=1), "evaluation",
                            "evaluate train loss and test errors every this many rounds (and "
                            "at the end)")

    def __post_init__(self) -> None:
        for name, spec in PARAMS.items():  # each value checked once, and stored as checked
            object.__setattr__(self, name,
                               spec.constraint.check(getattr(self, name), name, "the config"))
        self._check_together()

    def _check_together(self) -> None:
        """The checks that tie several fields together (each value is valid on its own)."""
        owner = "the config"
        for name, spec in PARAMS.items():
            if spec.strict and spec.applies_to and getattr(self, name) != _DEFAULTS[name]:
                for key, allowed in spec.applies_to.items():
                    if getattr(self, key) not in allowed:
                        raise ValueError(
                            f"The '{name}' parameter of {owner} applies to {key} in "
                            f"{list(allowed)} only. Got {name}={getattr(self, name)!r} with "
                            f"{key}={getattr(self, key)!r}; set {name}={_DEFAULTS[name]!r}."
                        )
        if self.label_column is not None and self.data_path is None:
            raise ValueError(
                f"The 'label_column' parameter of {owner} needs data_path, the data file to "
                f"read. Got label_column={self.label_column!r}, data_path={self.data_path!r}."
            )
        if self.label_column is not None:
            try:
                label_position(self.label_column)
            except ValueError as exc:
                raise ValueError(f"The 'label_column' parameter of {owner}: {exc}") from None
        if self.epsilon is not None and self.epsilon_schedule is not None:
            raise ValueError(
                "The 'epsilon_schedule' parameter of the config must be None when 'epsilon' is "
                f"set (epsilon = {self.epsilon!r}). Got {self.epsilon_schedule!r} instead; "
                "give one of the two."
            )
        if self.shift_eps > 0 and self.shift_norm == "none":
            raise ValueError(
                f"The 'shift_eps' parameter of {owner} needs a shift norm: got shift_eps = "
                f"{self.shift_eps:g} with shift_norm = 'none'. Set shift_norm to 'l1', 'l2' or "
                "'linf', or shift_eps to 0."
            )
        if self.attack_scale is not None and self.attack in _PROBABILITY_ATTACKS:
            Real(0, 1).check(self.attack_scale, "attack_scale", f"{owner} (attack "
                                                                f"{self.attack!r})")
        m = self.n_workers
        if self.n_byzantine >= m:
            raise ValueError(
                f"The 'alpha' parameter of the config must leave at least one honest worker: "
                f"round(αm) = {self.n_byzantine} of the m = {m} workers would be byzantine. "
                f"Got {self.alpha!r} instead; use alpha < {(m - 0.5) / m:.4g}."
            )
        if self.aggregator == "nbs" and n_to_screen(self.beta, m) >= m:
            raise ValueError(
                f"The 'beta' parameter of the config must leave NBS at least one of the "
                f"{m} inputs. Got {self.beta!r} instead."
            )
        if self.aggregator in PRECONDITIONS:
            from .core.aggregators import check_precondition

            check_precondition(self.aggregator, m, self.n_tolerated)

    def data_key(self) -> tuple:
        """The values of the fields that define the training problem (``defines_data``):
        runs with equal keys share one :class:`~ray_robust.data.Problem`."""
        return tuple(getattr(self, name) for name in DATA_FIELDS)

    # ---- the paper's guarantees ----------------------------------------------------------
    def guarantee_warnings(self) -> list[str]:
        """Why this (valid) run lies outside the paper's guarantees; empty when it does not.

        Theorem 1 needs β ≥ α; Theorems 2–3 need 2α + β < 1 (C_α < 1); the fixed WRM step
        needs η_z·λ < 1; a rule told to tolerate fewer faults than there are byzantine
        workers is outside its own guarantee.
        """
        out = []
        if self.f is not None and self.aggregator in PRECONDITIONS and self.f < self.n_byzantine:
            out.append(
                f"f = {self.f} < αm = {self.n_byzantine}: {self.aggregator} is told to tolerate "
                "fewer faults than there are byzantine workers.")
        a, b = self.n_byzantine / self.n_workers, self.n_screened / self.n_workers
        if self.aggregator == "nbs" and self.n_byzantine > 0:
            if self.n_screened < self.n_byzantine:
                out.append(
                    f"β·m = {self.n_screened} < α·m = {self.n_byzantine}: NBS cannot screen "
                    "every byzantine worker; Theorem 1 (β ≥ α) does not cover this run.")
            if 2 * a + b >= 1:
                out.append(
                    f"2α + β = {2 * a + b:.3g} ≥ 1: outside the guarantee of Theorems 2–3 "
                    "(C_α = 2α/(1 − β) < 1); NBS breaks down at α = 1/3.")
        if self.wrm and self.eta_z is not None and self.eta_z * self.lam >= 1:
            out.append(
                f"η_z·λ = {self.eta_z * self.lam:.3g} ≥ 1: the fixed-step WRM ascent would "
                f"diverge; using the Sec. VI-D step 1/(2λ) = {1 / (2 * self.lam):.4g} instead.")
        return out

    def warn_outside_guarantee(self, stacklevel: int = 2) -> None:
        """Give each of :meth:`guarantee_warnings` as a :class:`GuaranteeWarning`
        (``stacklevel`` as in :func:`warnings.warn`, counted from the caller; frames of
        ray_robust above it are skipped too, so the warning names the user's call)."""
        from ._caller import warn_at_caller

        for message in self.guarantee_warnings():
            warn_at_caller(message, GuaranteeWarning, stacklevel=stacklevel + 1)

    # ---- derived quantities -------------------------------------------------------------
    @property
    def n_byzantine(self) -> int:
        """αm rounded to the nearest integer (halves up)."""
        return n_to_screen(self.alpha, self.n_workers)

    @property
    def n_screened(self) -> int:
        """βm rounded to the nearest integer (halves up): what NBS drops."""
        return n_to_screen(self.beta, self.n_workers)

    def epsilon_at(self, round_index: int) -> float | None:
        """The certified ε of round t (from ``epsilon`` or ``epsilon_schedule``); None = fixed
        T_z steps."""
        if self.epsilon_schedule is not None:
            return self.epsilon_schedule(round_index, self.rounds)
        return None if self.epsilon is None else float(self.epsilon)

    @property
    def n_tolerated(self) -> int:
        """f, the faults the aggregator tolerates: ``f``, or the byzantine count when None."""
        return self.n_byzantine if self.f is None else int(self.f)

    def model_options(self) -> dict[str, Any]:
        """The model's constructor options: ``get_model(cfg.model, **cfg.model_options())``."""
        return {"hidden": self.hidden, "n_classes": self.n_classes}

    def aggregator_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of the configured aggregator (``f`` resolved)."""
        return {name: self.n_tolerated if name == "f" else getattr(self, name)
                for name in AGGREGATORS[self.aggregator][1]}

    @property
    def step_z(self) -> float:
        """The WRM step actually used (η_z, or 1/(2λ) when unset or unstable)."""
        if self.eta_z is None or self.eta_z * self.lam >= 1:
            return 1.0 / (2.0 * self.lam)
        return float(self.eta_z)

    @property
    def effective_attack_scale(self) -> float:
        """The attack's intensity: ``attack_scale``, or the attack's default (0 for 'none')."""
        if self.attack_scale is not None:
            return self.attack_scale
        return 0.0 if self.attack == "none" else ATTACKS[self.attack][1]

    @property
    def algorithm(self) -> str | None:
        """'erm', 'nbs', 'dro' or 'alg2' when (aggregator, wrm) is one of Table I's four."""
        for name, pair in ALGORITHMS.items():
            if pair == (self.aggregator, self.wrm):
                return name
        return None

    # ---- construction ------------------------------------------------------------------
    @classmethod
    def field_names(cls) -> list[str]:
        return list(PARAMS)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> Config:
        """Build from a mapping (YAML, CLI, Tune): flat keys, or group sections such as
        ``{"server": {"aggregator": "krum"}}`` (:data:`GROUPS`); unknown keys raise a
        ``ValueError`` that lists the valid ones."""
        if not isinstance(values, Mapping):
            raise ValueError(f"A config must be a mapping of parameters, not "
                             f"{type(values).__name__}.")
        values = flatten_groups(values)
        algo = values.pop("algorithm", None)
        if algo is not None:
            check_choice(algo, "algorithm", "the config", ALGORITHMS)
            for key, implied in zip(("aggregator", "wrm"), ALGORITHMS[algo], strict=True):
                if key in values and values[key] != implied:
                    raise ValueError(
                        f"The 'algorithm' parameter of the config ({algo!r}) means {key} = "
                        f"{implied!r}, but {key} = {bounded_repr(values[key])} is also given. "
                        f"Give one of the two.")
                values[key] = implied
        unknown = sorted(set(values) - set(PARAMS), key=str)
        if unknown:
            raise ValueError(
                f"Unknown config parameter(s) {unknown}. Valid ones: "
                f"{['algorithm', *PARAMS]}."
            )
        return cls(**values)

    def replace(self, **changes: Any) -> Config:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["epsilon_schedule"] = schedule_spec(self.epsilon_schedule)
        return out


#: The parameter table: field name → its :class:`Param` (constraint, group, doc, scope).
PARAMS: dict[str, Param] = {
    f.name: dataclasses.replace(f.metadata["param"], name=f.name) for f in fields(Config)
}
_DEFAULTS: dict[str, Any] = {f.name: f.default for f in fields(Config)}
#: the fields that define the training problem (split, scaling, shards)
DATA_FIELDS: tuple[str, ...] = tuple(n for n, spec in PARAMS.items() if spec.defines_data)


def flatten_groups(values: Mapping[str, Any]) -> dict[str, Any]:
    """Flat keys from a mapping that may nest parameters under their group's name."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        if key in GROUPS and isinstance(value, Mapping):
            for name, inner in value.items():
                spec = PARAMS.get(name)
                if spec is not None and spec.group != key:
                    raise ValueError(
                        f"The config parameter '{name}' belongs to the '{spec.group}' group, "
                        f"not '{key}'; move it there or give it as a flat key.")
                if name in out:
                    raise ValueError(f"The config parameter '{name}' is given twice.")
                out[name] = inner
        else:
            if key in out:
                raise ValueError(f"The config parameter '{key}' is given twice.")
            out[key] = value
    return out


def default(name: str) -> Any:
    """The default value of config parameter ``name``."""
    return _DEFAULTS[name]


def json_schema() -> dict[str, Any]:
    """The JSON schema (draft 2020-12) of a run-config YAML file's flat form, from the table."""
    props: dict[str, Any] = {"algorithm": {"type": "string", "enum": sorted(ALGORITHMS),
                                           "description": "shorthand for aggregator + wrm"}}
    for name, spec in PARAMS.items():
        default_value = _DEFAULTS[name]
        props[name] = {**spec.constraint.schema(), "description": spec.doc,
                       "default": schedule_spec(default_value)}
    return {"$schema": "https://json-schema.org/draft/2020-12/schema",
            "title": "ray_robust run config", "type": "object",
            "additionalProperties": False, "properties": props}


def reference_markdown() -> str:
    """``docs/config.md``: every parameter by group, generated from the table."""
    lines = ["# Run-config parameters", "",
             "Generated from the parameter table in `ray_robust/config.py` "
             "(`ray-robust config --docs > docs/config.md`; a test checks it is current).",
             "Give them as YAML keys, `Config(...)` keywords, or `--flag-name` on the CLI; a",
             "YAML file may also nest them under their group's name.", "",
             "`algorithm: erm | nbs | dro | alg2` is a shorthand for `aggregator` + `wrm`."]
    for group, title in GROUPS.items():
        lines += ["", f"## `{group}`: {title}", "",
                  "| parameter | default | accepts | meaning |", "|---|---|---|---|"]
        for name, spec in PARAMS.items():
            if spec.group != group:
                continue
            doc = spec.doc
            if spec.applies_to:
                scope = "; ".join(f"{k} in {list(v)}" for k, v in spec.applies_to.items())
                doc += f" (acts when {scope})"
            accepts = spec.constraint.describe().replace("|", "\\|")
            lines.append(f"| `{name}` | `{_DEFAULTS[name]!r}` | {accepts} | {doc} |")
    return "\n".join(lines) + "\n"


def config_template() -> str:
    """A run-config YAML file holding every parameter at its default, grouped, with its doc
    as a comment: ``ray-robust config > my_run.yaml``, edit, ``train --config my_run.yaml``."""
    import yaml

    lines = ["# ray_robust run config (every parameter at its default; delete what you keep).",
             "# Flat keys work too; `algorithm: alg2` is shorthand for aggregator + wrm."]
    for group, title in GROUPS.items():
        lines += ["", f"{group}:  # {title}"]
        for name, spec in PARAMS.items():
            if spec.group == group:
                value = yaml.safe_dump(schedule_spec(_DEFAULTS[name]),
                                       default_flow_style=True).strip()
                value = value.removesuffix("\n...").removesuffix("...").strip()
                lines.append(f"  {name}: {value}  # {spec.doc}")
    return "\n".join(lines) + "\n"
