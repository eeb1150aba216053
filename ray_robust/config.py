"""The typed, validated configuration of one training run (Algorithm 2 or a baseline)."""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass, field, fields
from typing import Any

from ._validation import check_choice, check_int, check_real
from .core.aggregators import AGGREGATORS, PRECONDITIONS, n_to_screen
from .core.attacks import ATTACKS
from .core.models import MODELS
from .core.shift import NORMS
from .data import SHARDINGS, STANDARDIZE
from .schedule import Schedule, parse_schedule, schedule_spec

#: The four algorithms of Table I as (server aggregator, honest workers run WRM).
ALGORITHMS: dict[str, tuple[str, bool]] = {
    "erm": ("mean", False),
    "nbs": ("nbs", False),
    "dro": ("mean", True),
    "alg2": ("nbs", True),
}
ALGORITHM_LABELS = {"erm": "ERM", "nbs": "NBS", "dro": "DRO", "alg2": "Alg. 2"}


class GuaranteeWarning(UserWarning):
    """A legitimate configuration that the paper's convergence guarantee does not cover."""


@dataclass(frozen=True)
class Config:
    """One run. Defaults are the paper's Sec. VII setting for Algorithm 2 without an attack.

    Build from keywords, or with :meth:`from_dict` (which also takes ``algorithm='erm' | 'nbs'
    | 'dro' | 'alg2'`` as a shorthand for ``aggregator`` + ``wrm``).
    """

    aggregator: str = "nbs"
    """server rule: 'mean' (ERM, DRO), 'nbs' (NBS, Algorithm 2), or 'median', 'trimmed_mean',
    'krum', 'multi_krum', 'geometric_median', 'centered_clipping', 'bulyan'"""
    wrm: bool = True
    """honest workers perturb their samples by WRM before the gradient (DRO, Algorithm 2)"""
    n_workers: int = 20
    """m, the number of workers"""
    alpha: float = 0.0
    """α, the byzantine fraction: round(αm) workers (chosen at random, seeded) are byzantine"""
    beta: float = 0.15
    """β, the NBS screening fraction: NBS drops round(βm) inputs (ties round up)"""
    attack: str = "none"
    """what byzantine workers send: 'none' (honest messages) or an attack ('aggressive',
    'intelligent', 'counterexample', 'alie', 'ipm', 'sign_flip', 'gaussian', 'mimic', 'nan',
    'inf', 'crash', 'label_flip')"""
    attack_scale: float | None = None
    """attack intensity; None = the attack's default (aggressive 10, intelligent 0.8, ALIE the
    paper's z, IPM ε = 0.1, ...; for nan/inf/crash a probability, label_flip a fraction)"""
    lam: float = 3.0
    """λ, the WRM penalty on ‖z − x‖²"""
    eta_z: float | None = 0.05
    """WRM ascent step; None = 1/(2λ), the Sec. VI-D step 2/(L_g + λ_g)"""
    t_z: int = 10
    """T_z, WRM ascent steps per sample and round (ignored when epsilon or its schedule is set)"""
    epsilon: float | None = None
    """certified WRM precision: each worker ascends until every sample's bound ‖∇g‖/λ_g on
    ‖z − z*‖ is ≤ epsilon (Sec. VI-D), at most t_z_max steps; None = fixed t_z steps"""
    epsilon_schedule: Schedule | str | None = None
    """ε per round instead of one epsilon: 'two-stage:LARGE,SMALL,SWITCH' (Sec. VI-D: LARGE
    for the first SWITCH·T rounds), 'constant:EPS', a mapping, or a callable round -> ε"""
    t_z_max: int = 1000
    """cap on the certified ascent's steps per round (reported when hit)"""
    eta: float = 1.0
    """η, the server's step size"""
    rounds: int = 300
    """T, training rounds"""
    shift_norm: str = "none"
    """test-time worst-case shift: 'none', 'l1', 'l2' or 'linf'"""
    shift_eps: float = 0.0
    """ε, the shift budget in that norm (on standardized features)"""
    model: str = "logistic"
    """model name"""
    train_fraction: float = 0.8
    """share of Spambase used for training (stratified; the paper's percentages were lost)"""
    standardize: str = "zscore"
    """feature scaling with training statistics: 'zscore' or 'none'"""
    seed: int = 0
    """seeds the split, the shards, θ₀, the byzantine set and the attack's randomness"""
    eval_every: int = 1
    """evaluate train loss and test errors every this many rounds (and at the end)"""
    init_scale: float = 0.01
    """θ₀ ~ N(0, init_scale²), shared by all algorithms for a seed"""
    f: int | None = None
    """faults the rule tolerates ('trimmed_mean', 'krum', 'multi_krum', 'bulyan'); None = the
    byzantine count round(αm)"""
    clip_tau: float = 0.1
    """τ, the radius of 'centered_clipping'"""
    clip_iters: int = 1
    """clipping iterations per round of 'centered_clipping'"""
    weighted: bool = False
    """'mean' and 'nbs' average by shard sizes (known to the server) instead of one vote each"""
    hidden: int = 16
    """hidden units of the 'mlp' model"""
    n_classes: int = 2
    """classes K of the 'softmax' model (labels 0, …, K − 1)"""
    sharding: str = "iid"
    """training data over workers: 'iid', 'dirichlet' (label skew), 'sorted' (one label per
    worker) or 'quantity' (uneven sizes)"""
    dirichlet_alpha: float = 1.0
    """Dirichlet concentration of 'dirichlet'/'quantity' sharding; smaller = more skewed"""
    data_path: str | None = field(default=None, compare=False)
    """Spambase file or folder; None = $RAY_ROBUST_DATA_DIR, the cache, or a download (with
    label_column: your CSV file)"""
    label_column: str | None = None
    """train on your own CSV (data_path, with a header row): the label column's name; the other
    columns are the features. None = Spambase"""

    def __post_init__(self) -> None:
        owner = "the config"
        check_choice(self.aggregator, "aggregator", owner, AGGREGATORS)
        if not isinstance(self.wrm, bool):
            raise ValueError(f"The 'wrm' parameter of {owner} must be a bool. Got {self.wrm!r}.")
        check_choice(self.attack, "attack", owner, ["none", *ATTACKS])
        check_choice(self.shift_norm, "shift_norm", owner, ["none", *NORMS])
        check_choice(self.model, "model", owner, MODELS)
        check_choice(self.sharding, "sharding", owner, SHARDINGS)
        check_real(self.dirichlet_alpha, "dirichlet_alpha", owner, low=0, low_open=True)
        check_int(self.hidden, "hidden", owner, low=1)
        check_int(self.n_classes, "n_classes", owner, low=2)
        check_real(self.clip_tau, "clip_tau", owner, low=0, low_open=True)
        check_int(self.clip_iters, "clip_iters", owner, low=1)
        if not isinstance(self.weighted, bool):
            raise ValueError(
                f"The 'weighted' parameter of {owner} must be a bool. Got {self.weighted!r}."
            )
        if self.weighted and self.aggregator not in ("mean", "nbs"):
            raise ValueError(
                f"The 'weighted' parameter of {owner} applies to 'mean' and 'nbs' only. Got "
                f"weighted=True with aggregator={self.aggregator!r}; set weighted=False."
            )
        if self.f is not None:
            check_int(self.f, "f", owner, low=0)
        if self.label_column is not None and (not isinstance(self.label_column, str)
                                              or self.data_path is None):
            raise ValueError(
                f"The 'label_column' parameter of {owner} needs data_path, the CSV file to read "
                f"(and must be a column name). Got label_column={self.label_column!r}, "
                f"data_path={self.data_path!r}."
            )
        check_choice(self.standardize, "standardize", owner, STANDARDIZE)
        m = check_int(self.n_workers, "n_workers", owner, low=1)
        check_real(self.alpha, "alpha", owner, low=0, high=1, high_open=True)
        check_real(self.beta, "beta", owner, low=0, high=1, high_open=True)
        check_real(self.lam, "lam", owner, low=0, low_open=True)
        check_int(self.t_z, "t_z", owner, low=0)
        if self.epsilon is not None:
            check_real(self.epsilon, "epsilon", owner, low=0, low_open=True)
        object.__setattr__(self, "epsilon_schedule", parse_schedule(self.epsilon_schedule))
        if self.epsilon is not None and self.epsilon_schedule is not None:
            raise ValueError(
                "The 'epsilon_schedule' parameter of the config must be None when 'epsilon' is "
                f"set (epsilon = {self.epsilon!r}). Got {self.epsilon_schedule!r} instead; "
                "give one of the two."
            )
        check_int(self.t_z_max, "t_z_max", owner, low=1)
        check_real(self.eta, "eta", owner, low=0, low_open=True)
        check_int(self.rounds, "rounds", owner, low=1)
        check_real(self.shift_eps, "shift_eps", owner, low=0)
        check_real(self.train_fraction, "train_fraction", owner, low=0, high=1,
                   low_open=True, high_open=True)
        check_int(self.seed, "seed", owner, low=0)
        check_int(self.eval_every, "eval_every", owner, low=1)
        check_real(self.init_scale, "init_scale", owner, low=0)
        if self.attack_scale is not None:
            if self.attack in ("nan", "inf", "crash", "label_flip"):  # a probability / fraction
                check_real(self.attack_scale, "attack_scale", owner, low=0, high=1)
            else:
                check_real(self.attack_scale, "attack_scale", owner)
        if self.eta_z is not None:
            check_real(self.eta_z, "eta_z", owner, low=0, low_open=True)
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
        self._warn_outside_guarantee()

    def _warn_outside_guarantee(self) -> None:
        if self.f is not None and self.aggregator in PRECONDITIONS and self.f < self.n_byzantine:
            warnings.warn(
                f"f = {self.f} < αm = {self.n_byzantine}: {self.aggregator} is told to tolerate "
                "fewer faults than there are byzantine workers.",
                GuaranteeWarning, stacklevel=3,
            )
        a, b = self.n_byzantine / self.n_workers, self.n_screened / self.n_workers
        if self.aggregator == "nbs" and self.n_byzantine > 0:
            if self.n_screened < self.n_byzantine:
                warnings.warn(
                    f"β·m = {self.n_screened} < α·m = {self.n_byzantine}: NBS cannot screen every "
                    "byzantine worker; Theorem 1 (β ≥ α) does not cover this run.",
                    GuaranteeWarning, stacklevel=3,
                )
            if 2 * a + b >= 1:
                warnings.warn(
                    f"2α + β = {2 * a + b:.3g} ≥ 1: outside the guarantee of Theorems 2–3 "
                    "(C_α = 2α/(1 − β) < 1); NBS breaks down at α = 1/3.",
                    GuaranteeWarning, stacklevel=3,
                )
        if self.wrm and self.eta_z is not None and self.eta_z * self.lam >= 1:
            warnings.warn(
                f"η_z·λ = {self.eta_z * self.lam:.3g} ≥ 1: the fixed-step WRM ascent would "
                f"diverge; using the Sec. VI-D step 1/(2λ) = {1 / (2 * self.lam):.4g} instead.",
                GuaranteeWarning, stacklevel=3,
            )

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
        return ATTACKS[self.attack][1] if self.attack_scale is None else self.attack_scale

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
        return [f.name for f in fields(cls)]

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Config:
        """Build from a flat mapping (YAML, CLI, Tune); unknown keys raise a ``ValueError``."""
        values = dict(values)
        algo = values.pop("algorithm", None)
        if algo is not None:
            check_choice(algo, "algorithm", "the config", ALGORITHMS)
            values.setdefault("aggregator", ALGORITHMS[algo][0])
            values.setdefault("wrm", ALGORITHMS[algo][1])
        unknown = sorted(set(values) - set(cls.field_names()))
        if unknown:
            raise ValueError(
                f"Unknown config parameter(s) {unknown}. Valid ones: "
                f"{['algorithm', *cls.field_names()]}."
            )
        return cls(**values)

    def replace(self, **changes: Any) -> Config:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["epsilon_schedule"] = schedule_spec(self.epsilon_schedule)
        return out
