"""Algorithm 2 (and its baselines) as one engine-independent loop.

The server side lives here once: the simulated omniscient adversary, message validation,
aggregation, the step θ ← θ − η·G, and the round's metrics. An engine only supplies
``compute(theta, round) -> (messages, info)``: the m workers' messages (honest workers' local
gradients, Algorithm 2 lines 4–7) and a dict of worker-side statistics for the round's metrics
(merged over workers with :func:`merge_worker_info`). The in-process engine computes them with
numpy in one call, the Ray engine gathers them from worker actors.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ._caller import warn_at_caller
from .adversary import Adversary, poison_shards
from .adversary import byzantine_mask as byzantine_mask  # re-exported: it lived here
from .config import Config, GuaranteeWarning
from .core.aggregators import AggregationError
from .core.models import get_model
from .core.rules import Rule, build_rule
from .core.shift import error_rate
from .core.wrm import local_gradients, local_gradients_certified
from .data import Problem, Shards
from .messages import count_overflowed, validate_messages  # also importable from here
from .seeds import SeedStreams

if TYPE_CHECKING:
    from .fitted import FittedModel

METRICS = (
    "round", "train_loss", "test_error", "test_error_shifted", "grad_norm", "n_screened",
    "n_rejected",
)


class DivergenceError(ValueError):
    """The run diverged: most workers' gradients overflowed (the step size η is too large).

    A ``ValueError`` (a bad parameter value, eta): the CLI prints it in one line, status 2.
    """


@dataclass
class RunState:
    """Everything needed to continue a run: θ, the next round, the attack RNG, the history."""

    theta: np.ndarray
    round: int
    attack_rng: np.random.Generator
    rows: list[dict] = field(default_factory=list)
    #: running sums over every round, evaluated or not (e.g. ``wrm_steps``: total ascent steps)
    totals: dict = field(default_factory=dict)
    #: a stateful aggregator's state (centered clipping: the previous centre), else None
    aggregator_state: np.ndarray | None = None
    #: the once-per-run warnings already given (kept in checkpoints: a resumed run is quiet)
    warned: set[str] = field(default_factory=set)

    def to_dict(self) -> dict:
        """A JSON-able snapshot (θ, round, the attack RNG's bit-generator state, the rows)."""
        return {"theta": [float(v) for v in self.theta], "round": int(self.round),
                "attack_rng": self.attack_rng.bit_generator.state,
                "rows": [dict(r) for r in self.rows], "totals": dict(self.totals),
                "aggregator_state": (None if self.aggregator_state is None
                                     else [float(v) for v in self.aggregator_state]),
                "warned": sorted(self.warned)}

    @classmethod
    def from_dict(cls, snapshot: dict) -> RunState:
        """Inverse of :meth:`to_dict`: the run continues exactly where the snapshot stopped."""
        rng_state = snapshot["attack_rng"]
        bit_generator = getattr(np.random, rng_state["bit_generator"])()
        bit_generator.state = rng_state
        return cls(np.asarray(snapshot["theta"], dtype=np.float64), int(snapshot["round"]),
                   np.random.Generator(bit_generator), [dict(r) for r in snapshot["rows"]],
                   totals=dict(snapshot.get("totals", {})),
                   aggregator_state=(None if snapshot.get("aggregator_state") is None else
                                     np.asarray(snapshot["aggregator_state"], dtype=np.float64)),
                   warned=set(snapshot.get("warned", ())))


@dataclass
class History:
    """The result of :func:`run`: per-round metrics, the final θ, and what was run."""

    metrics: pd.DataFrame
    theta: np.ndarray
    config: Config
    byzantine: np.ndarray
    seconds: float = 0.0
    #: θ with the preprocessing it was trained with, for raw new data (set by ``train``)
    model: FittedModel | None = None

    @property
    def final(self) -> dict[str, float]:
        """The last evaluated round's metrics."""
        return self.metrics.iloc[-1].to_dict()


#: L_zz/2 above this multiple of λ means θ diverged: the concavity warning says so instead of
#: advising a λ (a DRO baseline under attack once read "raise lam above 2.08e+24")
DIVERGED_LZZ_OVER_LAM = 1e6


def _warn_once(
    state: RunState, key: str, message: str, category: type[Warning], depth: int = 1
) -> None:
    """Warn unless this run (``state``) has already given warning ``key``, pointing at the
    user's call into the library (at least the caller of Server.step: ``depth`` is the calls
    between the warning's method and step)."""
    if key not in state.warned:
        state.warned.add(key)
        warn_at_caller(message, category, stacklevel=3 + depth)


def build_rule_for(config: Config, shard_sizes: np.ndarray | None = None) -> Rule:
    """The aggregation rule ``config`` asks for, built once for its m workers.

    Hyperparameters from ``config.aggregator_kwargs()`` (f resolved to ``config.n_tolerated``);
    with ``config.weighted``, the mean/NBS weights are ``shard_sizes``, the (m,) shard sizes.
    """
    kwargs = config.aggregator_kwargs()
    if config.weighted:
        if shard_sizes is None:
            raise ValueError(
                "A config with weighted=True averages by shard sizes: pass shard_sizes, e.g. "
                "problem.shards.sizes."
            )
        kwargs["weights"] = np.asarray(shard_sizes).astype(np.float64)
    return build_rule(config.aggregator, n_inputs=config.n_workers, **kwargs)


def check_fits_in_memory(config: Config, p: int) -> None:
    """A clear error, before any allocation, when one round's m messages of p float64 (the
    server's stack, its copy, and the rule's work arrays: about 4 such stacks) cannot fit in
    this machine's memory (e.g. an MLP with hidden = 10⁹)."""
    need = 4 * 8 * p * (config.n_workers + 1)
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not on this platform: do not guess
        return
    if need > total:
        raise ValueError(
            f"The model '{config.model}' has {p:,} parameters: one round's {config.n_workers} "
            f"messages need about {need / 2**30:,.1f} GiB, more than this machine's "
            f"{total / 2**30:,.1f} GiB. Use a smaller model (e.g. hidden) or fewer workers."
        )


class Server:
    """Algorithm 2's server for one config: attack, validate, aggregate, step, evaluate."""

    def __init__(self, config: Config, problem: Problem):
        self.config = config
        self.problem = problem
        self.model = get_model(config.model, **config.model_options())
        m, d = config.n_workers, problem.X_train.shape[1]
        if problem.shards.n_workers != m:
            raise ValueError(
                f"The problem has {problem.shards.n_workers} shards but the config asks for "
                f"n_workers = {m}; prepare the problem with the same n_workers."
            )
        self.p = self.model.n_params(d)
        check_fits_in_memory(config, self.p)
        if config.model == "softmax":
            labels = np.concatenate([problem.y_train, problem.y_test])
            if labels.min() < 0 or labels.max() >= config.n_classes or np.any(labels % 1):
                raise ValueError(
                    f"The softmax model needs labels in 0, …, n_classes − 1 = "
                    f"{config.n_classes - 1}. Got labels in [{labels.min():g}, "
                    f"{labels.max():g}]; set n_classes to the number of classes."
                )
        self.seeds = SeedStreams(config.seed)
        self.adversary = Adversary.from_config(config)
        self.byzantine = self.adversary.byzantine
        self.rule = build_rule_for(config, problem.shards.sizes)

    def check_state(self, state: RunState) -> RunState:
        """``state`` if it can continue this run (θ of this model's p entries, a round within
        T), else one clear ``ValueError`` (a checkpoint of another model or data)."""
        if np.shape(state.theta) != (self.p,):
            raise ValueError(
                f"The run state holds θ of shape {np.shape(state.theta)}, but this run's model "
                f"'{self.config.model}' has p = {self.p} parameters: it belongs to another "
                "model or data set. Resume it with its own config and data.")
        if not 0 <= state.round <= self.config.rounds:
            raise ValueError(f"The run state is at round {state.round}, outside [0, "
                             f"{self.config.rounds}] of this run.")
        return state

    def initial_state(self) -> RunState:
        theta0 = self.model.init(
            self.problem.X_train.shape[1], np.random.default_rng(self.seeds.init),
            self.config.init_scale,
        )
        return RunState(theta0, 0, np.random.default_rng(self.seeds.attack),
                        aggregator_state=self.rule.init_state(self.p))

    def step(
        self, state: RunState, messages: Sequence[Any] | np.ndarray, info: dict | None = None,
        *, updated: Callable[[], None] | None = None,
    ) -> dict | None:
        """One round's server side (Algorithm 2, lines 9–11); updates ``state`` in place.

        Returns the round's metrics row when this round is evaluated, else None. ``updated()``
        is called once θ_{t+1} and the round counter are final, before the evaluation.
        """
        m = self.config.n_workers
        grads, rejected = validate_messages(messages, self.p, m=m)  # the m messages, (m, p)
        grads, rejected = self.adversary.forge(grads, rejected, state.attack_rng)  # byzantine
        G, rule_state, agg = self._aggregate(state, grads, messages)  # G = NBS(g_1, …, g_m)
        if info and "wrm_samples" in info:
            info = self._certified_info(state, info)
        g_norm = self._step_theta(state, G, rule_state, messages)  # θ_{t+1} = θ_t − ηG
        state.round += 1
        if updated is not None:
            updated()
        if state.round % self.config.eval_every and state.round != self.config.rounds:
            return None
        return self._record(state, g_norm, agg["n_screened"], int(rejected.sum()), info)

    def _aggregate(
        self, state: RunState, grads: np.ndarray, messages: Sequence[Any] | np.ndarray
    ) -> tuple[np.ndarray, Any, dict]:
        """The rule's (G, next state, info) on the validated messages; too few valid ones
        end the run (a :class:`DivergenceError` when most of them overflowed)."""
        with np.errstate(over="ignore", invalid="ignore"):  # overflow is checked in the step
            try:
                return self.rule(grads, state.aggregator_state)
            except AggregationError as exc:
                self._check_diverged(state, messages)
                raise AggregationError(
                    f"Round {state.round + 1} of {self.config.rounds}: {exc}"
                ) from None

    def _step_theta(
        self, state: RunState, G: np.ndarray, rule_state: Any,
        messages: Sequence[Any] | np.ndarray,
    ) -> float:
        """θ ← θ − ηG and the rule's new state, unless ‖G‖ or θ overflows: that step is
        refused (θ and the rule's state kept, counted in ``steps_refused``). Returns ‖G‖."""
        with np.errstate(over="ignore", invalid="ignore"):
            g_norm = float(np.linalg.norm(G))
            theta = state.theta - self.config.eta * G
        if np.isfinite(g_norm) and np.isfinite(theta).all():
            state.theta, state.aggregator_state = theta, rule_state
        else:
            self._check_diverged(state, messages)
            self._refuse_step(state)
        return g_norm

    def _record(
        self, state: RunState, g_norm: float, n_screened: int, n_rejected: int,
        info: dict | None,
    ) -> dict:
        """Evaluate θ_{t+1} and append the round's metrics row to ``state.rows``."""
        cfg = self.config
        if cfg.wrm and cfg.epsilon_at(state.round - 1) is None:
            self._check_concave(state)
        row = self.evaluate(state.theta)
        row.update(round=state.round, grad_norm=g_norm, n_screened=n_screened,
                   n_rejected=n_rejected)
        if "steps_refused" in state.totals:
            row["steps_refused"] = state.totals["steps_refused"]
        row.update(info or {})
        state.rows.append(row)
        return row

    def _check_diverged(self, state: RunState, messages: Sequence[Any] | np.ndarray) -> None:
        """Raise :class:`DivergenceError` when most messages overflowed: byzantine workers are
        a minority, so an overflowing majority means the honest gradients blew up."""
        m, cfg = self.config.n_workers, self.config
        n = count_overflowed(messages, self.p)
        if 2 * n > m:
            with np.errstate(over="ignore", invalid="ignore"):
                norm = float(np.linalg.norm(state.theta))
            raise DivergenceError(
                f"Round {state.round + 1} of {cfg.rounds}: the run diverged: {n} of {m} "
                f"workers' gradients overflowed (‖θ‖ = {norm:.3g}). The step size is too large "
                f"for this problem: use a smaller eta (now {cfg.eta:g}), e.g. {cfg.eta / 10:g}."
            )

    def _check_concave(self, state: RunState) -> None:
        """Warn once per run when λ ≤ L_zz/2 at the current θ: the WRM subproblem g(z) is then
        not provably strongly concave (λ_g = 2λ − L_zz ≤ 0, Sec. VI-D), so the fixed T_z-step
        ascent has no guarantee. Checked on evaluated rounds, as θ (hence L_zz) changes."""
        if "concave" in state.warned:
            return
        lam, l_zz = self.config.lam, self.model.lipschitz_xx(state.theta)
        if l_zz / 2 > DIVERGED_LZZ_OVER_LAM * lam:  # no λ to advise: θ itself ran away
            with np.errstate(over="ignore", invalid="ignore"):
                norm = float(np.linalg.norm(state.theta))
            _warn_once(
                state, "concave",
                f"Round {state.round}: θ diverged: ‖θ‖ = {norm:.3g}, and L_zz/2 = "
                f"{l_zz / 2:.3g} at θ is over {DIVERGED_LZZ_OVER_LAM:g} times λ = {lam:g}, so "
                f"the WRM subproblem is not concave and the run is outside every guarantee of "
                f"the paper. Raising lam does not help: the run itself ran away (byzantine workers "
                f"against a rule without screening, or too large a step size eta = "
                f"{self.config.eta:g}) (warned once per run).",
                GuaranteeWarning, depth=2,  # step → _record → _check_concave
            )
        elif 2 * lam <= l_zz:
            _warn_once(
                state, "concave",
                f"Round {state.round}: λ = {lam:g} ≤ L_zz/2 = {l_zz / 2:.4g} at the current θ: "
                f"the WRM subproblem g(z) = f(θ; z) − λ‖z − x‖² is not provably strongly "
                f"concave (λ_g = 2λ − L_zz ≤ 0, Sec. VI-D), so its T_z-step ascent may not "
                f"converge. Raise lam above {l_zz / 2:.4g} (warned once per run).",
                GuaranteeWarning, depth=2,  # step → _record → _check_concave
            )

    def _refuse_step(self, state: RunState) -> None:
        """Count a refused step (``steps_refused`` in the metrics from then on); warn once."""
        state.totals["steps_refused"] = state.totals.get("steps_refused", 0) + 1
        _warn_once(
            state, "refused",
            f"Round {state.round + 1}: the aggregate G overflows (‖G‖ or θ − ηG is not "
            f"finite: a huge message reached the '{self.config.aggregator}' rule); the step "
            "is refused and θ kept. Counted in the metrics' steps_refused (warned once per "
            "run).", RuntimeWarning, depth=2,  # step → _step_theta → _refuse_step
        )

    def _certified_info(self, state: RunState, info: dict) -> dict:
        """Round statistics of the certified ascent: ε, mean certificate, running step total;
        warns once per run when the cap was hit or no certificate exists (λ_g ≤ 0)."""
        cfg, t = self.config, state.round
        eps = cfg.epsilon_at(t)
        state.totals["wrm_steps"] = state.totals.get("wrm_steps", 0) + info["wrm_steps"]
        info = dict(info)
        cert_sum = math.fsum(info.pop("wrm_certificate_sums", ()))
        info.update(epsilon=eps, wrm_steps_total=state.totals["wrm_steps"],
                    wrm_certificate_sum=cert_sum,
                    wrm_certificate_mean=cert_sum / max(info["wrm_samples"], 1))
        if info.get("wrm_uncertified") and "uncertified" not in state.warned:
            l_zz = self.model.lipschitz_xx(state.theta)
            fix = (f"Raise lam above L_zz/2 = {l_zz / 2:.4g} or give t_z instead of epsilon"
                   if l_zz / 2 <= DIVERGED_LZZ_OVER_LAM * cfg.lam else
                   f"θ diverged (L_zz/2 is over {DIVERGED_LZZ_OVER_LAM:g} times λ): raising lam "
                   f"does not help; the run itself ran away")
            _warn_once(
                state, "uncertified",
                f"Certified ε: no certificate at round {t}: λ_g = 2λ − L_zz = "
                f"{2 * cfg.lam:g} − {l_zz:.4g} ≤ 0, so g(z) is not provably strongly concave; "
                f"the ascent ran the cap t_z_max = {cfg.t_z_max} steps. {fix} (warned once "
                f"per run).",
                GuaranteeWarning,
            )
        if info.get("wrm_capped"):
            _warn_once(
                state, "capped",
                f"Certified ε: {info['wrm_capped']} shard(s) hit t_z_max = {cfg.t_z_max} at "
                f"round {t} with certificate {info['wrm_certificate_max']:.3g} > ε = {eps:g}; "
                "raise t_z_max or ε, or use the step eta_z = None = 2/(L_g + λ_g) "
                "(warned once per run).",
                GuaranteeWarning,
            )
        return info

    def evaluate(self, theta: np.ndarray) -> dict[str, float]:
        """Train loss (clean), test error (clean) and test error under the configured shift."""
        pb, cfg, model = self.problem, self.config, self.model
        norm = None if cfg.shift_norm == "none" else cfg.shift_norm
        return {
            "train_loss": float(model.loss(theta, pb.X_train, pb.y_train).mean()),
            "test_error": error_rate(model, theta, pb.X_test, pb.y_test),
            "test_error_shifted": error_rate(model, theta, pb.X_test, pb.y_test, norm,
                                             cfg.shift_eps),
        }

    def history(self, state: RunState, seconds: float = 0.0) -> History:
        extra = dict.fromkeys(k for row in state.rows for k in row if k not in METRICS)
        df = pd.DataFrame(state.rows, columns=[*METRICS, *extra])
        if "steps_refused" in df:  # rows before the first refusal lack the key
            df["steps_refused"] = df["steps_refused"].fillna(0).astype(int)
        return History(df, state.theta.copy(), self.config, np.flatnonzero(self.byzantine), seconds)


def honest_gradients(
    config: Config, model, theta: np.ndarray, shards: Shards, round_index: int
) -> tuple[np.ndarray, dict]:
    """Algorithm 2, lines 5–6 for a stack of shards: the one call both engines make.

    Returns the ``(k, p)`` local gradients and a dict of worker-side statistics (empty when
    there is nothing to report), merged over actors with :func:`merge_worker_info`.
    Under a data attack (label flip) the byzantine workers' shards are poisoned here, where
    the data is (:mod:`ray_robust.adversary` says why), so every engine computes the same
    messages.
    """
    shards = poison_shards(config, model, shards)
    eps = config.epsilon_at(round_index) if config.wrm else None
    if eps is not None:  # certified ε (Sec. VI-D); the stopping rule is decided per shard
        return local_gradients_certified(
            model, theta, shards.X, shards.y, shards.weights,
            lam=config.lam, eta_z=config.step_z, epsilon=eps, t_z_max=config.t_z_max,
        )
    grads = local_gradients(
        model, theta, shards.X, shards.y, shards.weights,
        wrm=config.wrm, lam=config.lam, eta_z=config.step_z, t_z=config.t_z,
    )
    return grads, {}


def merge_worker_info(infos: Sequence[dict]) -> dict:
    """Combine the statistics dicts of several worker groups (sums; ``*_max`` keys: maxima;
    tuples of per-shard values are concatenated). Anything that does not combine (a malformed
    reply) is dropped, never raised."""
    out: dict = {}
    for info in infos:
        if not isinstance(info, dict):
            continue
        for key, value in info.items():
            try:
                if key not in out:
                    out[key] = value
                elif key.endswith("_max"):
                    out[key] = max(out[key], value)
                else:
                    out[key] = out[key] + value
            except TypeError:
                continue
    return out


def run(
    server: Server,
    compute: Callable[[np.ndarray, int], tuple[Sequence[Any] | np.ndarray, dict]],
    *,
    state: RunState | None = None,
    progress: Callable[[dict], None] | None = None,
    progress_every: int = 50,
    checkpoint: Callable[[RunState], None] | None = None,
    checkpoint_every: int = 0,
) -> History:
    """Algorithm 2's loop: for t < T, messages = compute(θ_t, t); θ_{t+1} = server step.

    ``state`` continues a run (e.g. from a checkpoint); ``checkpoint(state)`` is called every
    ``checkpoint_every`` rounds and at the end. When ``compute`` has a ``launch(theta, t)``
    method (the Ray engine), it is called as soon as θ_{t+1} is known, before the server
    evaluates it: the workers compute round t+1 meanwhile, and ``compute(θ_{t+1}, t + 1)`` then
    collects their messages.
    """
    state = server.initial_state() if state is None else server.check_state(state)
    t0 = time.perf_counter()
    rounds = server.config.rounds
    launch = getattr(compute, "launch", None)

    def updated() -> None:
        if state.round < rounds:
            launch(state.theta, state.round)

    while state.round < rounds:
        messages, info = compute(state.theta, state.round)
        row = server.step(state, messages, info, updated=updated if launch else None)
        if progress is not None and row is not None and (
            state.round % progress_every == 0 or state.round == rounds
        ):
            progress(row)
        if checkpoint is not None and checkpoint_every and (
            state.round % checkpoint_every == 0 or state.round == rounds
        ):
            checkpoint(state)
    return server.history(state, time.perf_counter() - t0)
