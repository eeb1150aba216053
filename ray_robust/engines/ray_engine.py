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

Bounded waits (issue 14). Joining a cluster (``address`` / ``$RAY_ADDRESS``) waits at most
``$RAY_ROBUST_CONNECT_TIMEOUT`` seconds (default 30) for its GCS port, then raises
:class:`ClusterUnreachableError` (Ray 2.60's own ``ray.init`` retries an unreachable GCS for
minutes: > 5 min measured, 20 GcsClient attempts of ≈ 41 s each). A GCS lost mid-run (killed,
its node down) is a :class:`ServerDiedError` at once when it is the local instance's process,
else after :data:`GCS_LOSS_GRACE_S` s unreachable, before Ray's own
60 s limit ends the driver process without a word; a local instance this process started
then leaves no process behind (:func:`_shutdown_ray`).

Ray logs one ``core_worker.cc`` error line per trainer: "constructor arguments in the object
store and max_restarts > 0" (ray-project/ray#53727). It is harmless here: the trainer keeps the
shard refs alive until :meth:`RayTrainer.close`, so a restart always finds them.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import socket
import time
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
    """The server actor died mid-run (its process crashed or was killed), or the cluster's GCS
    stopped answering during the run."""


class ClusterUnreachableError(ConnectionError, ValueError):
    """The Ray cluster to join did not answer within ``$RAY_ROBUST_CONNECT_TIMEOUT`` seconds.

    A ``ValueError`` too: the address is the caller's input (the CLI prints it as one line).
    """


#: the environment variable bounding the wait for a cluster to join (seconds)
CONNECT_TIMEOUT_ENV = "RAY_ROBUST_CONNECT_TIMEOUT"
DEFAULT_CONNECT_TIMEOUT_S = 30.0
#: a GCS unreachable this long mid-run ends the run (Ray itself ends the driver at 60 s)
GCS_LOSS_GRACE_S = 10.0
GCS_CHECK_INTERVAL_S = 1.0


# ---- driver side -------------------------------------------------------------------------


def connect_timeout() -> float:
    """``$RAY_ROBUST_CONNECT_TIMEOUT`` in seconds (default 30); a clear error if not > 0."""
    raw = os.environ.get(CONNECT_TIMEOUT_ENV)
    if raw is None or raw.strip() == "":
        return DEFAULT_CONNECT_TIMEOUT_S
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise ValueError(
            f"The environment variable {CONNECT_TIMEOUT_ENV} must be a number of seconds > 0 "
            f"(how long to wait for the Ray cluster to join). Got {raw!r}; set it e.g. to "
            f"{DEFAULT_CONNECT_TIMEOUT_S:g} or unset it."
        )
    return value


def _host_port(address: str) -> tuple[str, int] | None:
    """``host:port`` of a cluster address (``ray://`` prefix allowed, ``auto`` resolved as Ray
    does); None when it is not of that form (``ray.init`` then says what is wrong)."""
    if address == "auto":
        from ray._private.services import canonicalize_bootstrap_address

        address = canonicalize_bootstrap_address("auto") or ""  # no cluster: Ray's own error
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit():
        return None
    return host.strip("[]"), int(port)


def _reachable(host: str, port: int, timeout: float) -> bool:
    """Whether a TCP connection to ``host:port`` opens within ``timeout`` seconds."""
    try:
        with socket.create_connection((host, port), timeout=max(timeout, 0.01)):
            return True
    except OSError:
        return False


def _wait_for_cluster(address: str, timeout: float) -> float:
    """Wait until the GCS port of ``address`` accepts connections; the seconds left of
    ``timeout``. :class:`ClusterUnreachableError` when it does not within ``timeout``."""
    deadline = time.monotonic() + timeout
    hp = _host_port(address)
    if hp is None:
        return timeout
    while not _reachable(*hp, min(2.0, deadline - time.monotonic())):
        if time.monotonic() >= deadline:
            raise ClusterUnreachableError(
                f"No Ray cluster answered at {address} within {timeout:g} s. Start the cluster "
                f"(`ray start --head` on its head node), check the address (--address or "
                f"RAY_ADDRESS), or wait longer with {CONNECT_TIMEOUT_ENV}=<seconds>."
            )
        time.sleep(min(0.5, max(0.0, deadline - time.monotonic())))
    return max(1.0, deadline - time.monotonic())


def check_dashboard_installed() -> None:
    """The dashboard needs Ray's ``default`` extra (aiohttp, ...): a clear error, before Ray
    starts, when it is missing (Ray itself fails deep inside ``ray.init``)."""
    try:
        import ray.dashboard.optional_deps  # noqa: F401 (what Ray itself imports to decide)
    except ImportError as exc:
        raise ValueError(f"--dashboard needs Ray's dashboard packages ({exc}): pip install "
                         "'ray[default]', or run without --dashboard.") from None


def _ensure_ray(address: str | None, include_dashboard: bool, *,
                worker_env: Mapping[str, str] | None = None,
                configure_logging: bool = True) -> bool:
    """Initialize Ray unless it already is; True when this call started (or joined) it.

    The one place ray_robust starts Ray (:class:`RayTrainer`, :func:`ray_session`, the Tune
    studies). ``worker_env``: environment variables Ray's workers need: a new local instance
    inherits them from this process (set here), a cluster gets them as the job's runtime_env.
    ``configure_logging``: Ray's own ``configure_logging`` (the studies pass False).

    Joining a cluster is bounded by ``$RAY_ROBUST_CONNECT_TIMEOUT`` (:func:`connect_timeout`).
    Ray 2.60 has no reliable knob for it: ``ray.init`` makes up to 20 GcsClient attempts
    (``RAY_gcs_server_port_wait_time_s`` sets their count), each waiting ≈ 41 s for an
    unreachable GCS (``gcs_rpc_server_connect_timeout_s`` and the cluster-id wait, C++ settings
    read once per process). So the GCS port is first probed with plain TCP connects until the
    bound (:func:`_wait_for_cluster`), then ``ray.init`` runs with
    ``RAY_gcs_server_port_wait_time_s`` = the seconds left (fewer attempts if the port answers
    but the GCS does not). Joining starts no local process, so a failure leaves none behind.
    """
    if ray.is_initialized():
        return False
    if include_dashboard:
        check_dashboard_installed()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    # "local": a new instance, never another user's cluster found in /tmp/ray
    target = address or os.environ.get("RAY_ADDRESS") or "local"
    timeout = connect_timeout()  # checked for a local instance too: a bad value is an error
    env = dict(worker_env or {})
    if target == "local":
        # the instance started here inherits this environment; a job runtime_env would make
        # Ray start new workers for Tune's trials instead of using the ones it prestarts at
        # ray.init (2 trial actors ready in 3.5-8 s instead of 0.6-1 s, measured)
        _ENV_BEFORE.update({k: os.environ.get(k) for k in env if k not in _ENV_BEFORE})
        os.environ.update(env)
        ray.init(address=target, include_dashboard=include_dashboard, log_to_driver=False,
                 configure_logging=configure_logging)
        return True
    left = _wait_for_cluster(target, timeout)
    attempts = "RAY_gcs_server_port_wait_time_s"  # Ray's GcsClient attempts (≈ 1 s apart)
    before = os.environ.get(attempts)
    os.environ.setdefault(attempts, str(math.ceil(left)))
    try:
        ray.init(address=target, include_dashboard=include_dashboard, log_to_driver=False,
                 configure_logging=configure_logging,
                 runtime_env={"env_vars": env} if env else None)
    finally:
        if before is None:
            os.environ.pop(attempts, None)
    return True


def _local_node() -> list[Any] | None:
    """The GCS and raylet processes (Popen) of the local instance this process started; None
    when this process joined a cluster (or Ray is down)."""
    from ray._private import ray_constants

    node = getattr(ray._private.worker, "_global_node", None)
    if node is None or not node.head:
        return None
    return [info.process for kind in (ray_constants.PROCESS_TYPE_GCS_SERVER,
                                      ray_constants.PROCESS_TYPE_RAYLET)
            for info in node.all_processes.get(kind, [])]


def descendants(pid: int) -> dict[int, str]:
    """pid → start time (``/proc/PID/stat`` field 22, telling a reused pid apart) of every
    process below ``pid`` (children, their children, …); empty where there is no ``/proc``."""
    parent: dict[int, int] = {}
    start: dict[int, str] = {}
    for name in os.listdir("/proc") if os.path.isdir("/proc") else []:
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as f:
                    fields = f.read().rpartition(")")[2].split()
            except OSError:  # gone meanwhile
                continue
            parent[int(name)], start[int(name)] = int(fields[1]), fields[19]
    found, todo = {}, [pid]
    while todo:
        above = todo.pop()
        for child in [p for p, pp in parent.items() if pp == above and p not in found]:
            found[child] = start[child]
            todo.append(child)
    return found


#: the driver's environment variables before :func:`_ensure_ray` set the workers' ones for a
#: local instance (None: unset); restored when that instance is shut down
_ENV_BEFORE: dict[str, str | None] = {}


def _restore_env() -> None:
    for key, value in _ENV_BEFORE.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    _ENV_BEFORE.clear()


def _shutdown_ray() -> None:
    """``ray.shutdown()``; if this process started the instance and its GCS or raylet died,
    also end the processes below this one that Ray left running (measured on Ray 2.60: after a
    killed GCS, ``ray.shutdown`` leaves the dashboard and runtime-env agents running,
    orphaned). They are listed before the shutdown, while the raylet still holds them."""
    local = _local_node()
    crashed = local is not None and any(p.poll() is not None for p in local)
    before = descendants(os.getpid()) if crashed else {}
    ray.shutdown()
    _restore_env()
    if not before:
        return
    for pid, started in before.items():
        if _start_time(pid) == started:  # still running (re-parented), not a reused pid
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)


def _start_time(pid: int) -> str | None:
    """Field 22 of ``/proc/PID/stat`` (when the process started); None if it is gone or a
    zombie (it has exited)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rpartition(")")[2].split()
    except OSError:
        return None
    return None if fields[0] in ("Z", "X") else fields[19]


class _GcsWatch:
    """Whether the cluster's GCS still answers, checked at most every
    :data:`GCS_CHECK_INTERVAL_S` seconds: for the local instance this process started, whether
    its process runs, else a TCP connect to its port."""

    def __init__(self) -> None:
        self.address = ray.get_runtime_context().gcs_address
        local = _local_node()
        self._gcs = local[0] if local else None
        self._checked = time.monotonic()
        self._lost_since: float | None = None

    def _alive(self) -> bool:
        if self._gcs is not None:
            return self._gcs.poll() is None
        hp = _host_port(self.address)
        return hp is None or _reachable(*hp, GCS_CHECK_INTERVAL_S)

    def lost_for(self) -> float:
        """Seconds the GCS has been found unreachable (0 while it answers; ∞ once the local
        GCS process has exited: it cannot come back)."""
        if self._gcs is not None and self._gcs.poll() is not None:
            return math.inf
        now = time.monotonic()
        if now - self._checked >= GCS_CHECK_INTERVAL_S:
            self._checked = now
            if self._alive():
                self._lost_since = None
            elif self._lost_since is None:
                self._lost_since = now
        return 0.0 if self._lost_since is None else now - self._lost_since


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
            _shutdown_ray()


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
        events = progress is not None or checkpoint_every
        gcs = _GcsWatch()
        try:
            while True:  # until the run ends, the server actor dies or the GCS is lost
                done, _ = ray.wait([fut], timeout=self.poll_interval)
                for kind, payload in ray.get(self._server.poll.remote()) if events else ():
                    if kind == "progress" and progress is not None:
                        progress(payload)
                    elif kind == "checkpoint" and checkpoint is not None:
                        checkpoint(payload)
                if done:
                    break
                if gcs.lost_for() >= GCS_LOSS_GRACE_S:
                    self.close()
                    raise ServerDiedError(
                        f"The Ray cluster's GCS at {gcs.address} stopped answering during the "
                        f"run (its process exited, or it was unreachable for "
                        f"{GCS_LOSS_GRACE_S:g} s: the cluster is lost); "
                        f"restart Ray, make a new RayTrainer and resume from the last "
                        f"checkpoint, if the run wrote any."
                    )
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
            _shutdown_ray()

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
