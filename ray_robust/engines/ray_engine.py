"""The Ray engine: worker actors hold the shards, a server actor runs Algorithm 2's loop.

This module is the trainer facade (:class:`RayTrainer`, :func:`train_ray`, :func:`ray_session`);
the actors, the round trip and the reply boundary are in :mod:`.ray_actors`, the packing and
placement rules in :mod:`.ray_placement` (their names used elsewhere are re-exported here).

Layout (issue 3):

- **Worker actors** (:class:`~.ray_actors.WorkerGroup`) each hold a contiguous group of
  logical workers' shards, a :class:`~ray_robust.data.Shards` stack put in the object store once per
  :class:`RayTrainer` (never per round). Given θ, a worker actor calls
  :func:`ray_robust.algorithm.honest_gradients`, the very function the in-process engine
  calls, and returns one reply: a single ``bytes`` object holding its statistics (JSON) and
  its logical workers' messages (raw float64), which the server reads without unpickling
  anything (the data-only boundary: :mod:`.ray_actors`). Per round only bytes travel: θ and the
  replies (by value: cheaper than a ``ray.put``), the config pickled once per run.
  Packing: ``actors="auto"`` = one actor per node, more (up to one per CPU, at most m) only
  for data large enough to pay for their per-call cost (:func:`~.ray_placement.actor_count`),
  ``"per-worker"`` = one actor per logical worker (the paper's picture), or an int. Computing
  a shard's gradient does not depend on which other shards share its stack (every reduction
  runs per shard), so every packing gives the in-process engine's θ bit for bit.
- **The server actor** (:class:`~.ray_actors._ServerActor`) holds the
  :class:`~ray_robust.algorithm.Server`, the worker handles and θ, and runs
  :func:`ray_robust.algorithm.run`. It launches round t+1's worker calls as soon as θ_{t+1} is
  known, then evaluates θ_{t+1} while the workers compute (the evaluation is off the critical
  path; same θ, same messages), and waits for the replies with one ``ray.wait`` (at most
  ``round_timeout`` after the launch): a late, missing, failed or malformed reply leaves its
  workers' messages ``None``, which the server's message validation turns into rejected rows
  (screened, never aggregated). When too few valid messages remain, the aggregator's
  :class:`AggregationError` ends the run at the driver with the round number; nothing hangs.
- **Faults.** Worker actors are created with ``max_restarts``; Ray re-runs the constructor,
  which reads the shard stack from the same object ref, so a restarted worker rejoins with
  its shards.
  Rounds it misses count in ``n_rejected``.
- **Progress and checkpoints** reach the driver by polling: the server actor is threaded
  (``max_concurrency=2``); its run queues each progress row and checkpoint snapshot, which the
  driver drains every ``poll_interval`` seconds and hands to ``progress`` / ``checkpoint`` (so
  checkpoint files are written where the driver runs, not on the server actor's node).
  :meth:`RayTrainer.compute_fn` gives callers that run the loop themselves (a Tune trial) the
  same gathering, from their own process.

Resources and scheduling. Every actor asks for ``num_cpus=0``: Ray then reserves nothing, so the
engine cannot deadlock on a small machine or inside a Tune trial that already holds the CPUs
(a request of 1 CPU per actor would leave 20 per-worker actors pending forever on 2 cores).
Oversubscription is bounded instead by the packing: ``"auto"`` creates at most one worker
actor per CPU that the cluster reports. Worker actors are pinned round-robin to the alive nodes
(in node-id order) with a node-affinity strategy (:attr:`RayTrainer.placement` records where
each landed); the server actor has the default strategy. Measured on Ray 2.60 with zero-CPU
actors, ``SPREAD`` once put all actors on one node, and *soft* node affinity placed none on its
named node, so the affinity is hard: a worker actor restarts on its node after a process crash,
and if the node itself is lost its logical workers count as missing (the aggregator's f or β
must cover them).

Ray start-up. If Ray is already initialized it is used as is. Otherwise :class:`RayTrainer`
calls ``ray.init`` with ``address`` (or ``$RAY_ADDRESS``) to join a cluster, else
``address="local"`` (a new local instance, never one found in ``/tmp/ray``), the dashboard off
unless ``include_dashboard=True``, usage statistics off (``RAY_USAGE_STATS_ENABLED=0`` unless
set), token authentication left at Ray's default; it shuts Ray down in :meth:`RayTrainer.close`
only if it started it (:func:`ray_session` does the same for a block of several trainers or
a Tune study: :func:`_ensure_ray` is the one place ray_robust starts Ray). On
a cluster every node needs ``ray_robust`` importable (same Python and Ray version); the data is
read on the driver only and reaches the nodes via the object store.

Ray logs one ``core_worker.cc`` error line per trainer: "constructor arguments in the object
store and max_restarts > 0" (ray-project/ray#53727). It is harmless here: the trainer keeps the
shard refs alive until :meth:`RayTrainer.close`, so a restart always finds them.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np
import ray
from ray.exceptions import RayActorError, RayError, RayTaskError

from .._caller import warn_at_caller
from ..algorithm import DivergenceError, History, RunState, Server
from ..config import DATA_FIELDS, Config
from ..core.aggregators import AggregationError
from ..data import Problem
from .ray_actors import (  # noqa: F401 (re-exported: used by tests)
    WorkerGroup,
    _Gather,
    _server_problem,
    _ServerActor,
    _WorkerGroup,
    read_replies,
)
from .ray_placement import (  # noqa: F401 (re-exported: used by studies, benchmarks, tests)
    ACTOR_CPUS,
    AUTO_BYTES_PER_ACTOR,
    PACKINGS,
    actor_count,
    auto_actor_count,
    check_actors,
    node_strategies,
    pack_workers,
)


class ServerDiedError(RuntimeError):
    """The server actor died mid-run (its process crashed or was killed)."""


# ---- driver side -------------------------------------------------------------------------


def _ensure_ray(address: str | None, include_dashboard: bool, *,
                worker_env: Mapping[str, str] | None = None,
                configure_logging: bool = True) -> bool:
    """Initialize Ray unless it already is; True when this call started (or joined) it.

    The one place ray_robust starts Ray (:class:`RayTrainer`, :func:`ray_session`, the Tune
    studies). ``worker_env``: environment variables Ray's workers need: a new local instance
    inherits them from this process (set here), a cluster gets them as the job's runtime_env.
    ``configure_logging``: Ray's own ``configure_logging`` (the studies pass False).
    """
    if ray.is_initialized():
        return False
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    # "local": a new instance, never another user's cluster found in /tmp/ray
    target = address or os.environ.get("RAY_ADDRESS") or "local"
    env = dict(worker_env or {})
    if target == "local":
        # the instance started here inherits this environment; a job runtime_env would make
        # Ray start new workers for Tune's trials instead of using the ones it prestarts at
        # ray.init (2 trial actors ready in 3.5-8 s instead of 0.6-1 s, measured)
        os.environ.update(env)
        env = {}
    ray.init(address=target, include_dashboard=include_dashboard, log_to_driver=False,
             configure_logging=configure_logging,
             runtime_env={"env_vars": env} if env else None)
    return True


@contextlib.contextmanager
def ray_session(address: str | None = None, include_dashboard: bool = False, *,
                worker_env: Mapping[str, str] | None = None,
                configure_logging: bool = True) -> Iterator[None]:
    """Ray up for a block of several :class:`RayTrainer` (e.g. Table I's seeds) or a Tune study:
    starts it as :class:`RayTrainer` would (see :func:`_ensure_ray`), unless already up, and
    shuts it down at the end if it did."""
    started = _ensure_ray(address, include_dashboard, worker_env=worker_env,
                          configure_logging=configure_logging)
    try:
        yield
    finally:
        if started:
            ray.shutdown()


class RayTrainer:
    """Worker actors and a server actor for one problem, reused by every run on its shards.

    Creating an actor costs ≈ 0.35 s, so the runs that share a problem (e.g. Table I's 20 runs
    of one seed) share one trainer: ``trainer(config) -> History``, then :meth:`close`.
    Configs must match the problem's data (n_workers, seed, split, standardization).

    ``byzantine_payload`` (a test hook) maps a logical worker to what its actor really sends
    instead of its gradient: a value (None, a string, a wrong shape, NaN, …) or a callable
    ``f(theta, round)``.
    """

    def __init__(
        self,
        problem: Problem,
        *,
        address: str | None = None,
        actors: str | int = "auto",
        round_timeout: float = 60.0,
        max_restarts: int = 10,
        include_dashboard: bool = False,
        poll_interval: float = 0.25,
        byzantine_payload: Mapping[int, Any] | None = None,
        startup_timeout: float = 300.0,
    ):
        if not (isinstance(round_timeout, int | float) and 0 < round_timeout < 1e7):
            raise ValueError(  # inf would wait forever for a dead straggler
                f"The 'round_timeout' parameter of the Ray engine must be a finite number of "
                f"seconds in (0, 1e7). Got {round_timeout!r} instead."
            )
        if not (isinstance(max_restarts, int) and max_restarts >= -1):
            raise ValueError(
                f"The 'max_restarts' parameter of the Ray engine must be an int ≥ -1 (-1: "
                f"unlimited). Got {max_restarts!r} instead."
            )
        m = problem.shards.n_workers
        bad = [i for i in (byzantine_payload or {}) if not (isinstance(i, int) and 0 <= i < m)]
        if bad:
            raise ValueError(
                f"The 'byzantine_payload' parameter of the Ray engine must map logical workers "
                f"in [0, {m}) to payloads. Got keys {bad!r}."
            )
        actors = check_actors(actors, m)
        self.problem = problem
        self.poll_interval = poll_interval
        self._data_key: dict | None = None
        self._workers: list[Any] = []
        self._server = None
        self.round_timeout = float(round_timeout)
        self._started_ray = _ensure_ray(address, include_dashboard)
        try:
            self.groups = pack_workers(m, actor_count(actors, m, problem.shards.X.nbytes))
            payload = dict(byzantine_payload or {})
            # One put per group, kept alive here: restarted actors re-read the same refs.
            self._shard_refs = [ray.put(problem.shards.subset(g)) for g in self.groups]
            nodes = node_strategies(len(self.groups))
            self._workers = [
                _WorkerGroup.options(
                    num_cpus=ACTOR_CPUS, scheduling_strategy=strategy, max_restarts=max_restarts,
                ).remote([ref], g, {i: payload[i] for i in g if i in payload})
                for ref, g, strategy in zip(self._shard_refs, self.groups, nodes, strict=True)
            ]
            self._server = _ServerActor.options(num_cpus=ACTOR_CPUS, max_concurrency=2).remote(
                ray.put(_server_problem(problem)), self._workers, self.groups,
                float(round_timeout),
            )
            refs = [w.ping.remote() for w in self._workers] + [self._server.ping.remote()]
            ready, _ = ray.wait(refs, num_returns=len(refs), timeout=startup_timeout)
            if len(ready) < len(refs):
                raise RuntimeError(
                    f"Only {len(ready)} of the {len(refs)} Ray actors (worker actors and the "
                    f"server) started within {startup_timeout:g} s; check the cluster's "
                    f"resources (ray status)."
                )
            *pings, self._server_node = ray.get(refs)
            self.placement: list[dict] = pings
        except BaseException:
            self.close()
            raise

    @property
    def worker_actors(self) -> list[Any]:
        """The worker actor handles, one per group of :attr:`groups` (e.g. to kill one)."""
        return list(self._workers)

    def refresh_placement(self) -> list[dict]:
        """Ask every live worker actor where it runs now (node id, pid); updates placement."""
        out = []
        for w, g in zip(self._workers, self.groups, strict=True):
            try:
                out.append(ray.get(w.ping.remote(), timeout=30))
            except (RayError, TimeoutError):
                out.append(dict(workers=g, node_id=None, pid=None))
        self.placement = out
        return out

    def _check(self, config: Config) -> None:
        m = self.problem.shards.n_workers
        if config.n_workers != m:
            raise ValueError(
                f"The config asks for n_workers = {config.n_workers} but this RayTrainer holds "
                f"{m} shards; make a RayTrainer for a problem with n_workers = "
                f"{config.n_workers}."
            )
        # the runs of one RayTrainer must agree on the problem (its actors hold its shards)
        key = dict(zip(DATA_FIELDS, config.data_key(), strict=True))
        if self._data_key is None:
            self._data_key = key
        elif key != self._data_key:
            diff = ", ".join(f"{k} = {key[k]!r} (trainer: {self._data_key[k]!r})"
                             for k in key if key[k] != self._data_key.get(k))
            raise ValueError(
                f"This RayTrainer holds the shards of another problem: the config has {diff}; "
                f"make a new RayTrainer from load_problem(config)."
            )

    def __call__(
        self,
        config: Config,
        *,
        progress: Callable[[dict], None] | None = None,
        progress_every: int = 50,
        checkpoint: Callable[[RunState], None] | None = None,
        checkpoint_every: int = 0,
        state: RunState | None = None,
    ) -> History:
        """One run on the worker actors, from ``state`` if given (a resumed run).

        ``progress(row)`` every ``progress_every`` rounds and ``checkpoint(state)`` every
        ``checkpoint_every`` rounds and at the end are called here, on the driver, as the
        server actor's events arrive (polled every ``poll_interval`` seconds).
        """
        if self._server is None:
            raise RuntimeError("This RayTrainer is closed; make a new one.")
        self._check(config)
        Server(config, self.problem)  # config × problem errors raise here, not remotely
        if checkpoint is None:
            checkpoint_every = 0
        fut = self._server.train.remote(
            config, progress_every if progress else 0, checkpoint_every, state
        )
        try:
            if progress is not None or checkpoint_every:
                while True:
                    done, _ = ray.wait([fut], timeout=self.poll_interval)
                    for kind, payload in ray.get(self._server.poll.remote()):
                        if kind == "progress" and progress is not None:
                            progress(payload)
                        elif kind == "checkpoint" and checkpoint is not None:
                            checkpoint(payload)
                    if done:
                        break
            hist, caught = ray.get(fut)
            for category, message in caught:  # as the in-process engine would have warned
                warn_at_caller(message, category)  # at the user's call, as in-process
            return hist
        except RayTaskError as exc:
            if isinstance(exc.cause, AggregationError | DivergenceError):
                raise type(exc.cause)(str(exc.cause)) from None
            raise
        except RayActorError as exc:
            raise ServerDiedError(
                f"The Ray engine's server actor died during the run "
                f"({type(exc).__name__}: {str(exc).splitlines()[0]}); make a new RayTrainer "
                f"and resume from the last checkpoint, if the run wrote any."
            ) from None

    def compute_fn(self, config: Config) -> Callable[[np.ndarray, int], tuple[Any, dict]]:
        """``compute(theta, t)`` (with ``launch``) that gathers from the worker actors in *this*
        process.

        For callers that run :func:`ray_robust.algorithm.run` themselves (e.g. a Tune trial,
        which must report from its own process); the server actor is then not used.
        """
        if self._server is None:
            raise RuntimeError("This RayTrainer is closed; make a new one.")
        self._check(config)
        return _Gather(self._workers, self.groups, self.round_timeout).compute_fn(config)

    def round_seconds(self) -> np.ndarray:
        """Wall time of each round of the last run, measured in the server actor."""
        return np.asarray(ray.get(self._server.round_seconds.remote()))

    def time_noop(self, config: Config, rounds: int = 100) -> np.ndarray:
        """Seconds per no-op round trip from the server actor to the same worker actors."""
        return np.asarray(ray.get(self._server.time_noop.remote(config, rounds)))

    def close(self) -> None:
        """Kill the actors; shut Ray down if this trainer started it. Idempotent."""
        for actor in [*self._workers, self._server]:
            if actor is not None:
                try:
                    ray.kill(actor, no_restart=True)
                except Exception:  # already dead, or Ray already shut down
                    pass
        self._workers, self._server = [], None
        self._shard_refs = []
        if self._started_ray:
            self._started_ray = False
            ray.shutdown()

    def __enter__(self) -> RayTrainer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def train_ray(
    config: Config,
    problem: Problem,
    *,
    progress: Callable[[dict], None] | None = None,
    progress_every: int = 50,
    checkpoint: Callable[[RunState], None] | None = None,
    checkpoint_every: int = 0,
    state: RunState | None = None,
    **options,
) -> History:
    """One run on the Ray engine: a :class:`RayTrainer` (``options``) used once, then closed."""
    with RayTrainer(problem, **options) as trainer:
        return trainer(config, progress=progress, progress_every=progress_every,
                       checkpoint=checkpoint, checkpoint_every=checkpoint_every, state=state)
