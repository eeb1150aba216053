"""The Ray engine: worker actors hold the shards, a server actor runs Algorithm 2's loop.

Layout (issue 3):

- **Worker actors** (:class:`_WorkerGroup`) each hold a contiguous group of logical workers'
  shards, a :class:`~ray_robust.data.Shards` stack put in the object store once per
  :class:`RayTrainer` (never per round). Given θ, a worker actor calls
  :func:`ray_robust.algorithm.honest_gradients`, the very function the in-process engine
  calls, and returns one message per logical worker. Per round only bytes travel: θ and the
  replies' gradient stacks as raw float64 bytes (by value: cheaper than a ``ray.put``), the
  config pickled once per run (see :class:`_Gather`).
  Packing: ``actors="auto"`` = one actor per node, more (up to one per CPU, at most m) only
  for data large enough to pay for their per-call cost (:func:`auto_actor_count`),
  ``"per-worker"`` = one actor per logical worker (the paper's picture), or an int. Computing
  a shard's gradient does not depend on which other shards share its stack (every reduction
  runs per shard), so every packing gives the in-process engine's θ bit for bit.
- **The server actor** (:class:`_ServerActor`) holds the :class:`~ray_robust.algorithm.Server`,
  the worker handles and θ, and runs :func:`ray_robust.algorithm.run`. It launches round
  t+1's worker calls as soon as θ_{t+1} is known, then evaluates θ_{t+1} while the workers
  compute (the evaluation is off the critical path; same θ, same messages), and gathers them
  with one ``ray.get`` (at most ``round_timeout`` after the launch); after a
  failure or the timeout, ``ray.wait`` sorts out what is ready and each future is read under
  ``try/except RayError``: a late, missing or failed message is ``None``, which the
  server's message validation turns into a rejected row (screened, never aggregated). When too
  few valid messages remain, the aggregator's :class:`AggregationError` ends the run at the
  driver with the round number; nothing hangs.
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

import collections
import contextlib
import copy
import dataclasses
import os
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import ray
from ray import cloudpickle
from ray.exceptions import RayActorError, RayError, RayTaskError

from ..algorithm import (
    DivergenceError,
    History,
    RunState,
    Server,
    honest_gradients,
    merge_worker_info,
    run,
)
from ..config import Config
from ..core.aggregators import AggregationError
from ..core.models import get_model
from ..data import Problem, Shards

PACKINGS = ("auto", "per-worker")
#: CPUs each actor (worker or server) asks Ray for. 0: nothing is reserved (see above), so a
#: caller that reserves resources for the engine (e.g. a Tune trial's placement group) needs
#: no bundle for the actors: a bundle of only zeros is invalid in Ray.
ACTOR_CPUS = 0
#: Config fields that :func:`ray_robust.api.load_problem` reads besides n_workers: the runs of
#: one RayTrainer must agree on them (its actors hold that problem's shards).
DATA_FIELDS = ("seed", "train_fraction", "standardize", "sharding", "dirichlet_alpha",
               "label_column")


class ServerDiedError(RuntimeError):
    """The server actor died mid-run (its process crashed or was killed)."""


# ---- actors ------------------------------------------------------------------------------


@ray.remote
class _WorkerGroup:
    """Logical workers ``workers`` (contiguous) with their shards; Algorithm 2, lines 4–7."""

    def __init__(
        self,
        shards_ref: list[ray.ObjectRef],
        workers: Sequence[int],
        byzantine_payload: Mapping[int, Any] | None = None,
    ):
        # The shard stack is read from the object ref the actor was created with, also when Ray
        # restarts the actor (the driver keeps the ref alive). Nested in a list, the ref is
        # fetched here rather than resolved by Ray, so a restart re-reads it explicitly.
        self.shards: Shards = ray.get(shards_ref[0])
        self.workers = list(workers)
        # Test hook: logical worker → what it sends instead (a value, or f(theta, round)).
        self.payload = {self.workers.index(i): v for i, v in (byzantine_payload or {}).items()}
        self._models: dict[tuple, Any] = {}
        self._config_blob = b""
        self._config: Config | None = None
        self._model: Any = None

    def ping(self) -> dict:
        ctx = ray.get_runtime_context()
        return dict(workers=self.workers, node_id=ctx.get_node_id(), pid=os.getpid())

    def _setup(self, config_blob: bytes) -> tuple[Config, Any]:
        """The run's config and model, unpickled only when the blob changes (a new run)."""
        if config_blob != self._config_blob:
            config = cloudpickle.loads(config_blob)
            key = (config.model, *config.model_options().values())
            if key not in self._models:
                self._models[key] = get_model(config.model, **config.model_options())
            self._config, self._model = config, self._models[key]
            self._config_blob = config_blob
        return self._config, self._model

    def compute(self, config_blob: bytes, theta: bytes | np.ndarray, t: int) -> tuple[Any, dict]:
        """The group's messages (Algorithm 2, lines 4–7): the ``(k, p)`` float64 stack as
        bytes, or a list of messages when the test hook is set; and the worker info."""
        config, model = self._setup(config_blob)
        theta = _as_theta(theta)
        grads, info = honest_gradients(config, model, theta, self.shards, t)
        if not self.payload:
            return grads.tobytes(), info
        messages: list[Any] = list(grads)
        for j, value in self.payload.items():
            messages[j] = value(theta, t) if callable(value) else value
        return messages, info

    def noop(self, config_blob: bytes, theta: bytes | np.ndarray, t: int) -> tuple[bytes, dict]:
        """Same messages in and out as :meth:`compute`, no work: Ray's own round-trip cost."""
        return bytes(len(self.workers) * _as_theta(theta).nbytes), {}


def _as_theta(theta: bytes | np.ndarray) -> np.ndarray:
    """θ as sent to a worker actor: raw float64 bytes (cheaper for Ray than an array), or
    the array itself when θ is not float64."""
    return np.frombuffer(theta, dtype=np.float64) if isinstance(theta, bytes) else theta


def _decode(reply: Any, k: int, p: int | None) -> Any:
    """A worker reply ``(bytes, info)`` of k·p float64 as ``((k, p) array, info)``; any other
    reply unchanged (a bytes stack of the wrong length becomes None: a malformed reply)."""
    if isinstance(reply, tuple) and len(reply) == 2 and isinstance(reply[0], bytes):
        if p is None or len(reply[0]) != 8 * k * p:
            return None
        return np.frombuffer(reply[0], dtype=np.float64).reshape(k, p), reply[1]
    return reply


def _theta_message(theta: np.ndarray) -> bytes | np.ndarray:
    """The inverse of :func:`_as_theta`: the same bits, as bytes when θ is float64."""
    if theta.dtype == np.float64:
        return np.ascontiguousarray(theta).tobytes()
    return theta


class _Gather:
    """One round trip to the worker actors (the actor layer only schedules and collects).

    Calls ``method(config, θ, t)`` on every worker actor, waits at most ``round_timeout``
    seconds, and returns the m messages and the merged worker info. A late, missing or failed
    message is None (the server rejects it); :attr:`last_error` says why the last one was.
    An actor still busy with a late call gets no new call (an actor runs one call at a time:
    queueing behind the straggler would make it late again); its workers count as missing
    until that call ends, and its late answer is dropped.

    Per round Ray carries only bytes and an int: the config is pickled once per run
    (:meth:`compute_fn`; an actor unpickles it when the bytes change), θ and each reply's
    gradient stack travel as raw float64 bytes, the same bits as the arrays. Ray serializes
    bytes without pickling: at paper scale (P1) this cut ≈ 0.4 ms of a 2.8–3.4 ms round.
    """

    def __init__(self, workers: Sequence[Any], groups: Sequence[Sequence[int]],
                 round_timeout: float):
        self.workers = list(workers)
        self.groups = [list(g) for g in groups]
        self.m = sum(len(g) for g in self.groups)
        self.round_timeout = round_timeout
        self.last_error = ""
        self._busy: dict[int, Any] = {}  # actor index → its late call's ref
        self._refs: list[Any] = []  # the launched round's refs (None: a busy actor)
        self._t0 = 0.0
        self._pending: tuple | None = None  # (method, config, θ bytes, t) launched, uncollected

    def launch(self, method: str, config_blob: bytes, theta: np.ndarray, t: int) -> None:
        """Start a round: ``method(config_blob, θ, t)`` on every worker actor not busy with a
        late call. :meth:`collect` gathers it; ``round_timeout`` counts from here."""
        if self._pending is not None:  # launched, never collected (its run ended early)
            self._drop_pending()
        self.last_error = ""
        if self._busy:
            finished, _ = ray.wait(list(self._busy.values()), num_returns=len(self._busy),
                                   timeout=0)
            done_late = set(finished)
            self._busy = {i: r for i, r in self._busy.items() if r not in done_late}
        msg = _theta_message(theta)
        self._t0 = time.perf_counter()
        self._refs = [None if i in self._busy else getattr(w, method).remote(config_blob, msg, t)
                      for i, w in enumerate(self.workers)]
        self._pending = (method, config_blob, msg, t)

    def collect(self, p: int) -> tuple[Any, dict]:
        """The launched round's m messages (p floats each) and merged info."""
        refs, self._pending = self._refs, None
        try:
            if self._busy:
                raise ray.exceptions.GetTimeoutError("an actor is still busy")
            left = max(0.0, self.round_timeout - (time.perf_counter() - self._t0))
            results = ray.get(refs, timeout=left)  # the common case: one call
        except RayError:  # a failed worker, or GetTimeoutError: sort the futures one by one
            left = max(0.0, self.round_timeout - (time.perf_counter() - self._t0))
            sent = [r for r in refs if r is not None]
            ready, _ = ray.wait(sent, num_returns=len(sent), timeout=left)
            done = set(ready)
            results = []
            for i, ref in enumerate(refs):
                if ref is None:
                    results.append(None)
                    self.last_error = "a worker actor is still busy with a late call"
                    continue
                if ref not in done:
                    results.append(None)
                    self._busy[i] = ref
                    self.last_error = f"no answer within round_timeout = {self.round_timeout} s"
                    continue
                try:
                    results.append(ray.get(ref))
                except RayError as exc:  # dead, restarting, or raising worker: a missing message
                    results.append(None)
                    self.last_error = f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
        return self._assemble(results, p)

    def __call__(self, method: str, config_blob: bytes, theta: np.ndarray, t: int):
        """One round: collects the round :meth:`launch` started if it was this very call
        (same method, config, θ bits and t), else launches it first."""
        if self._pending != (method, config_blob, _theta_message(theta), t):
            self.launch(method, config_blob, theta, t)
        return self.collect(theta.size)

    def _drop_pending(self) -> None:
        """Let an abandoned launch finish (at most round_timeout) so the next round's calls do
        not queue behind it; an actor still running it then counts as busy with a late call."""
        refs = [r for r in self._refs if r is not None]
        self._pending = None
        left = max(0.0, self.round_timeout - (time.perf_counter() - self._t0))
        done = set(ray.wait(refs, num_returns=len(refs), timeout=left)[0]) if refs else set()
        self._busy.update({i: r for i, r in enumerate(self._refs)
                           if r is not None and r not in done})

    def _assemble(self, results: list, p: int | None = None) -> tuple[Any, dict]:
        """The m messages and the merged info from the actors' replies (None: no reply).
        A reply's gradient stack sent as bytes (k·p float64) is read back as a ``(k, p)``
        array; anything malformed leaves that actor's messages None."""
        results = [_decode(r, len(g), p) for r, g in zip(results, self.groups, strict=True)]
        if all(
            isinstance(r, tuple) and len(r) == 2 and isinstance(r[0], np.ndarray)
            and r[0].ndim == 2 and r[0].dtype == np.float64 and len(r[0]) == len(g)
            and r[0].shape[1] == results[0][0].shape[1] and isinstance(r[1], dict)
            for r, g in zip(results, self.groups, strict=True)
        ):  # every actor answered with a plain (k, p) stack: the fast path
            return np.concatenate([r[0] for r in results]), merge_worker_info(
                [r[1] for r in results]
            )
        messages: list[Any] = [None] * self.m
        infos = []
        for r, group in zip(results, self.groups, strict=True):
            if r is None:
                continue
            try:
                msgs, info = r
                msgs = list(msgs)
            except (TypeError, ValueError):
                continue
            if len(msgs) != len(group):
                continue
            for i, msg in zip(group, msgs, strict=True):
                messages[i] = msg
            if isinstance(info, dict):
                infos.append(info)
        return messages, merge_worker_info(infos)

    def compute_fn(self, config: Config, starts: list[float] | None = None) -> _Rounds:
        """``compute(theta, t)`` (with ``launch``) for :func:`ray_robust.algorithm.run`."""
        return _Rounds(self, cloudpickle.dumps(config), starts)

    def with_clear_error(self, exc: AggregationError) -> AggregationError:
        """The server's error (which names the round) plus the last worker error seen."""
        why = f"; last worker error: {self.last_error}" if self.last_error else ""
        return AggregationError(f"{exc} Too few worker messages arrived valid{why}.")


class _Rounds:
    """``compute(θ, t)`` for :func:`ray_robust.algorithm.run` over a :class:`_Gather`, with
    ``launch(θ, t)``: ``run`` calls it as soon as θ_{t+1} is known, so the worker actors compute
    round t+1 while the server evaluates round t (same θ, same messages: only the wall time
    changes). ``starts`` (optional) records when each round's collection began."""

    def __init__(self, gather: _Gather, config_blob: bytes, starts: list[float] | None = None):
        self.gather, self.blob, self.starts = gather, config_blob, starts

    def __call__(self, theta: np.ndarray, t: int) -> tuple[Any, dict]:
        if self.starts is not None:
            self.starts.append(time.perf_counter())
        return self.gather("compute", self.blob, theta, t)

    def launch(self, theta: np.ndarray, t: int) -> None:
        self.gather.launch("compute", self.blob, theta, t)


@ray.remote
class _ServerActor:
    """Algorithm 2's server: θ, the worker handles, and :func:`ray_robust.algorithm.run`."""

    def __init__(
        self,
        problem: Problem,
        workers: Sequence[Any],
        groups: Sequence[Sequence[int]],
        round_timeout: float,
    ):
        self.problem = problem
        self.gather = _Gather(workers, groups, round_timeout)
        self._events: collections.deque = collections.deque()
        self._round_starts: list[float] = []

    def ping(self) -> str:
        return ray.get_runtime_context().get_node_id()

    def train(
        self,
        config: Config,
        progress_every: int,
        checkpoint_every: int = 0,
        state: RunState | None = None,
    ) -> tuple[History, list[tuple[type[Warning], str]]]:
        """One run of Algorithm 2 (or a baseline) over the worker actors.

        Progress rows and checkpoint snapshots (copies of the :class:`RunState`) are queued
        as ``("progress", row)`` / ``("checkpoint", state)`` events for :meth:`poll`. Returns
        the history and the warnings the run raised here (the driver re-issues them).
        """
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")  # the driver's filters decide what is shown
            hist = self._train(config, progress_every, checkpoint_every, state)
        return hist, [(w.category, str(w.message)) for w in caught]

    def _train(self, config, progress_every, checkpoint_every, state) -> History:
        server = Server(config, self.problem)
        state = server.initial_state() if state is None else state
        self._events.clear()
        self._round_starts = []
        self.gather.last_error = ""
        compute = self.gather.compute_fn(config, starts=self._round_starts)
        try:
            return run(
                server, compute, state=state, progress_every=max(progress_every, 1),
                progress=(lambda row: self._events.append(("progress", row)))
                if progress_every > 0 else None,
                checkpoint=lambda st: self._events.append(("checkpoint", copy.deepcopy(st))),
                checkpoint_every=checkpoint_every,
            )
        except AggregationError as exc:
            raise self.gather.with_clear_error(exc) from None

    def poll(self) -> list[tuple[str, Any]]:
        """The events queued since the last poll, oldest first."""
        events = []
        while self._events:
            events.append(self._events.popleft())
        return events

    def round_seconds(self) -> list[float]:
        """Wall time of each completed round of the last run (round trip + server step)."""
        return list(np.diff(self._round_starts))

    def time_noop(self, config: Config, rounds: int) -> list[float]:
        """Seconds per no-op round trip to the same worker actors (for benchmarks)."""
        theta = np.zeros(Server(config, self.problem).p)
        blob = cloudpickle.dumps(config)
        out = []
        for t in range(rounds):
            t0 = time.perf_counter()
            self.gather("noop", blob, theta, t)
            out.append(time.perf_counter() - t0)
        return out


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


def _check_actors(actors: str | int, m: int) -> str | int:
    """The ``actors`` parameter, validated before Ray starts ('4' from the CLI → 4)."""
    if isinstance(actors, str) and actors.isdigit():
        actors = int(actors)
    if actors in PACKINGS or (
        isinstance(actors, int) and not isinstance(actors, bool) and 1 <= actors <= m
    ):
        return actors
    raise ValueError(
        f"The 'actors' parameter of the Ray engine must be 'auto', 'per-worker' or an int "
        f"in [1, {m}]. Got {actors!r} instead."
    )


#: ``actors="auto"`` adds a worker actor per this many bytes of shard features (beyond one per
#: node). Each actor costs ≈ 0.3–0.4 ms of call submission per round; on Spambase (1.7 MiB) one
#: actor's round was 41 % faster than two's, on 7 MiB 50 % (2 cores, under load). Measured again
#: on a quiet 2-core machine (Alg. 2, m = 20, two actors' round ÷ one's): 1.09 / 0.87 / 0.94 /
#: 0.86 / 0.78 at 10 / 13 / 16 / 21 / 31 MiB when the server evaluates only at T, but 1.30 /
#: 1.36 / 1.30 / 1.06 / 1.18 (and 1.15 at 61 and 122 MiB) when it evaluates every round
#: (``eval_every=1``, the default): its pass over the data then competes with the second actor
#: for a core. The packing is fixed before a config is known, so 32 MiB is the compromise.
AUTO_BYTES_PER_ACTOR = 32 * 2**20


def auto_actor_count(m: int, cpus: int, nodes: int, feature_bytes: int) -> int:
    """How many worker actors ``actors="auto"`` creates: one per node at least (so every node
    works), one per CPU at most, and in between one per :data:`AUTO_BYTES_PER_ACTOR` of data
    (small data is faster on fewer actors: the per-call cost outweighs the split work)."""
    by_size = -(-int(feature_bytes) // AUTO_BYTES_PER_ACTOR)
    return max(1, min(m, max(cpus, 1), max(nodes, by_size)))


def _packing(actors: str | int, m: int, feature_bytes: int) -> list[list[int]]:
    """Contiguous groups of the m logical workers, one per worker actor."""
    if actors == "per-worker":
        n = m
    elif actors == "auto":
        alive = sum(1 for node in ray.nodes() if node.get("Alive"))
        n = auto_actor_count(m, int(ray.cluster_resources().get("CPU", 1)), alive, feature_bytes)
    else:
        n = int(actors)
    return [g.tolist() for g in np.array_split(np.arange(m), n)]



def _spread_strategies(n: int) -> list:
    """n node-affinity strategies, round-robin over the alive nodes in node-id order."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    nodes = sorted(n_["NodeID"] for n_ in ray.nodes() if n_.get("Alive"))
    if not nodes:
        return ["SPREAD"] * n
    return [NodeAffinitySchedulingStrategy(nodes[i % len(nodes)], soft=False) for i in range(n)]


def _server_problem(problem: Problem) -> Problem:
    """The problem as the server actor needs it: the train and test sets (evaluation) and the
    shards' labels and weights (their sizes), without the shards' features, which only the
    worker actors read: one copy of the training data less in the object store."""
    sh = problem.shards
    return dataclasses.replace(problem, shards=Shards(sh.X[:, :, :0], sh.y, sh.weights,
                                                      sh.workers))


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
        if not (isinstance(round_timeout, int | float) and round_timeout > 0):
            raise ValueError(
                f"The 'round_timeout' parameter of the Ray engine must be a number of seconds "
                f"> 0. Got {round_timeout!r} instead."
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
        actors = _check_actors(actors, m)
        self.problem = problem
        self.poll_interval = poll_interval
        self._data_key: dict | None = None
        self._workers: list[Any] = []
        self._server = None
        self.round_timeout = float(round_timeout)
        self._started_ray = _ensure_ray(address, include_dashboard)
        try:
            self.groups = _packing(actors, m, problem.shards.X.nbytes)
            payload = dict(byzantine_payload or {})
            # One put per group, kept alive here: restarted actors re-read the same refs.
            self._shard_refs = [ray.put(problem.shards.subset(g)) for g in self.groups]
            nodes = _spread_strategies(len(self.groups))
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
        key = {name: getattr(config, name) for name in DATA_FIELDS if hasattr(config, name)}
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
                warnings.warn(message, category, stacklevel=2)
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
