"""The Ray engine's actors: worker groups, the server, and one round trip between them.

- :class:`WorkerGroup` (remote: :data:`_WorkerGroup`) holds a contiguous group of logical
  workers' shards and computes their messages with
  :func:`ray_robust.algorithm.honest_gradients`, the in-process engine's function.
- :class:`_Gather` launches a round on every worker actor and collects the replies within
  ``round_timeout``; :class:`_Rounds` is its ``compute(θ, t)`` for
  :func:`ray_robust.algorithm.run`.
- :class:`_ServerActor` holds the :class:`~ray_robust.algorithm.Server` and runs that loop.

**The reply boundary (data only).** A worker actor replies with ONE ``bytes`` object in
:func:`ray_robust.messages.encode_reply`'s format: a fixed header, its statistics as JSON
(numbers and lists of numbers) and the ``(k, p)`` float64 stack. The server reads each reply with
:func:`read_replies`, from Ray's core worker *without deserializing it*: a value Ray stored as
raw bytes (Ray serializes a ``bytes`` return without pickling) is copied out; any other value (a
pickled object, whose ``__reduce__`` would run on unpickling, an ndarray subclass, a tuple, an
exception the call raised) is never unpickled, only named by its Ray metadata. The bytes are then
decoded by :func:`ray_robust.messages.decode_reply` (exact lengths, ``np.frombuffer``, JSON
checked for numbers); anything else makes that group's messages rejected rows, and the run goes
on. No method of anything a worker sent is called.

What remains trusted: Ray itself and every member of the cluster. A process that can join the
cluster can submit code to Ray (tasks, actors, ``ray.get_actor``) and so run it on any node,
the server's included; the boundary protects the server from a worker's *replies*, not from a
compromised cluster member. The worker actors' ``ping`` answers (node id, pid, read by the
driver for :attr:`~ray_robust.engines.ray_engine.RayTrainer.placement`) and the server actor's
own results (History, events, read by the driver) go through ordinary ``ray.get``.
:func:`read_replies` uses Ray's private core-worker API (``get_objects``, Ray 2.60); a Ray
without it is a clear error, never a silent fall back to unpickling.
"""

from __future__ import annotations

import collections
import copy
import dataclasses
import os
import time
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import ray
from ray import cloudpickle
from ray.exceptions import RayError

from ..algorithm import History, RunState, Server, honest_gradients, merge_worker_info, run
from ..config import Config
from ..core.aggregators import AggregationError
from ..core.models import get_model
from ..data import Problem, Shards
from ..messages import decode_reply, encode_reply, validate_messages


class WorkerGroup:
    """Logical workers ``workers`` (contiguous) with their shards; Algorithm 2, lines 4–7.

    Used as the actor :data:`_WorkerGroup`; the plain class is importable for tests that make
    other actors from it.
    """

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

    def compute(self, config_blob: bytes, theta: bytes | np.ndarray, t: int) -> bytes:
        """The group's messages (Algorithm 2, lines 4–7) and statistics as one reply
        (:func:`ray_robust.messages.encode_reply`). With the test hook, the hooked workers'
        values go through the server's own validation here: what is not p valid floats
        travels as a row of NaN, which the server rejects."""
        config, model = self._setup(config_blob)
        theta = _as_theta(theta)
        grads, info = honest_gradients(config, model, theta, self.shards, t)
        if self.payload:
            messages: list[Any] = list(grads)
            for j, value in self.payload.items():
                messages[j] = value(theta, t) if callable(value) else value
            grads, _ = validate_messages(messages, theta.size)
        return encode_reply(grads, info)

    def noop(self, config_blob: bytes, theta: bytes | np.ndarray, t: int) -> bytes:
        """A reply of the same size as :meth:`compute`'s, no work: Ray's own round-trip cost."""
        return encode_reply(np.zeros((len(self.workers), _as_theta(theta).size)), {})


_WorkerGroup = ray.remote(WorkerGroup)


def _as_theta(theta: bytes | np.ndarray) -> np.ndarray:
    """θ as sent to a worker actor: raw float64 bytes (cheaper for Ray than an array), or
    the array itself when θ is not float64."""
    return np.frombuffer(theta, dtype=np.float64) if isinstance(theta, bytes) else theta


def _theta_message(theta: np.ndarray) -> bytes | np.ndarray:
    """The inverse of :func:`_as_theta`: the same bits, as bytes when θ is float64."""
    if theta.dtype == np.float64:
        return np.ascontiguousarray(theta).tobytes()
    return theta


def _ray_error_name(code: int) -> str:
    """A Ray error type (object metadata) as the name of Ray's exception: ACTOR_DIED →
    ActorDiedError."""
    from ray.core.generated.common_pb2 import ErrorType

    try:
        name = ErrorType.Name(code)
    except ValueError:
        return f"Ray error type {code}"
    if name == "TASK_EXECUTION_EXCEPTION":
        return ("the worker actor's call raised an exception (not deserialized here: see the "
                "worker actor's log)")
    return "".join(w.capitalize() for w in name.split("_")) + "Error"


def _core_worker() -> Any:
    try:
        core = ray._private.worker.global_worker.core_worker
        core.get_objects  # noqa: B018 (the private API read_replies needs)
    except AttributeError:
        raise RuntimeError(
            f"This Ray ({ray.__version__}) lacks the core worker's get_objects, which the Ray "
            "engine needs to read worker replies without unpickling them; use Ray 2.60."
        ) from None
    return core


def read_replies(refs: Sequence[ray.ObjectRef], timeout: float = 10.0) -> list[bytes | str]:
    """The values of ``refs`` (ready ones: after ``ray.wait``), each the ``bytes`` its actor
    returned or a str saying why not (a Ray error, or a value that is not bytes), read from
    Ray's core worker **without deserializing**: nothing a worker sent is unpickled."""
    from ray._private.ray_constants import OBJECT_METADATA_TYPE_RAW

    core, ms = _core_worker(), max(1, int(timeout * 1000))
    objects = list(core.get_objects(list(refs), ms)) if refs else []
    out: list[bytes | str] = []
    for ref, obj in zip(refs, objects, strict=True):
        data, metadata = obj[0], obj[1]
        if metadata is None:  # Ray stops a batched get at the first error: fetch this one alone
            data, metadata = core.get_objects([ref], ms)[0][:2]
        kind = (metadata or b"").split(b",")[0]
        if kind == OBJECT_METADATA_TYPE_RAW:
            out.append(b"" if data is None else data.to_pybytes())
        elif kind.isdigit():
            out.append(_ray_error_name(int(kind)))
        else:
            out.append(f"the worker actor's reply is not bytes (Ray metadata {kind[:20]!r}); "
                       "it was not deserialized")
    return out


class _Gather:
    """One round trip to the worker actors (the actor layer only schedules and collects).

    Calls ``method(config, θ, t)`` on every worker actor, waits at most ``round_timeout``
    seconds, and returns the m messages and the merged worker info. A late, missing or failed
    message is None (the server rejects it); :attr:`last_error` says why the last one was.
    An actor still busy with a late call gets no new call (an actor runs one call at a time:
    queueing behind the straggler would make it late again); its workers count as missing
    until that call ends, and its late answer is dropped.

    Per round Ray carries only bytes and an int: the config is pickled once per run
    (:meth:`compute_fn`; an actor unpickles it when the bytes change), θ travels as raw float64
    bytes and each reply is one ``bytes`` object (:func:`ray_robust.messages.encode_reply`),
    read by :func:`read_replies` without unpickling. Ray serializes bytes without pickling: at
    paper scale (P1) this cut ≈ 0.4 ms of a 2.8–3.4 ms round.
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
        sent = [r for r in refs if r is not None]
        left = max(0.0, self.round_timeout - (time.perf_counter() - self._t0))
        ready = ray.wait(sent, num_returns=len(sent), timeout=left)[0] if sent else []
        try:
            values = dict(zip(ready, read_replies(ready), strict=True))
        except RayError as exc:  # reading the ready values failed (e.g. a lost object)
            values = dict.fromkeys(ready, f"{type(exc).__name__}: {str(exc).splitlines()[0]}")
        results: list[bytes | None] = []
        for i, ref in enumerate(refs):
            value: bytes | str
            if ref is None:
                value = "a worker actor is still busy with a late call"
            elif ref not in values:
                self._busy[i] = ref
                value = f"no answer within round_timeout = {self.round_timeout} s"
            else:  # bytes, or why not (dead, restarting or raising worker, not bytes)
                value = values[ref]
            if isinstance(value, str):
                self.last_error = value
                results.append(None)
            else:
                results.append(value)
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

    def _assemble(self, results: Sequence[bytes | None], p: int) -> tuple[Any, dict]:
        """The m messages and the merged info from the actors' replies (None: no reply), each
        decoded by :func:`ray_robust.messages.decode_reply` into its group's ``(k, p)`` stack;
        a missing or malformed reply leaves its workers' messages None (rejected rows)."""
        decoded = [None if r is None else decode_reply(r, len(g), p)
                   for r, g in zip(results, self.groups, strict=True)]
        if all(d is not None for d in decoded):  # every actor answered: the fast path
            return np.concatenate([d[0] for d in decoded]), merge_worker_info(
                [d[1] for d in decoded]
            )
        messages: list[Any] = [None] * self.m
        infos = []
        for r, d, group in zip(results, decoded, self.groups, strict=True):
            if d is None:
                if r is not None:
                    self.last_error = ("a worker actor's reply is malformed (not one bytes "
                                       "object of its k·p floats and statistics)")
                continue
            for i, row in zip(group, d[0], strict=True):
                messages[i] = row
            infos.append(d[1])
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


def _server_problem(problem: Problem) -> Problem:
    """The problem as the server actor needs it: the train and test sets (evaluation) and the
    shards' labels and weights (their sizes), without the shards' features, which only the
    worker actors read: one copy of the training data less in the object store."""
    sh = problem.shards
    return dataclasses.replace(problem, shards=Shards(sh.X[:, :, :0], sh.y, sh.weights,
                                                      sh.workers))
