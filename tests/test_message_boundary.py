"""The data-only message boundary (issue 14): what a worker sends is read as data, never run.

In-process: hypothesis throws arbitrary objects, hostile ndarray subclasses (their ``astype``,
``shape``, ``dtype``, ``__array__``, ``__len__``, ``__reduce__`` write a marker file), masked
arrays, pickled payloads and byte strings of every length at :func:`validate_messages`,
:func:`count_overflowed`, :func:`decode_reply` and :meth:`Server.step`: nothing raises, rows are
finite or NaN-rejected, θ stays finite, and the marker file never appears.

Over Ray: worker actors that reply with a ``__reduce__``-bearing object, a hostile ndarray
subclass, an exception whose ``__reduce__`` writes the marker, the old ``(bytes, info)`` tuple
and wrong-length bytes, next to a real worker actor: the server actor rejects their messages
without running their code, and the run completes as if those messages were missing. A positive
control then unpickles one of those replies in the test process and the marker *does* appear,
so the payload was live.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from ray_robust.algorithm import Server, count_overflowed, honest_gradients, run, validate_messages
from ray_robust.config import Config
from ray_robust.messages import REPLY_HEADER, REPLY_MAGIC, decode_reply, encode_reply

P = 58  # Spambase's logistic model: 57 features + bias
M = 20
MARKER = Path(tempfile.gettempdir()) / f"ray_robust_boundary_marker_{os.getpid()}"


def _ran(*_args, **_kwargs):
    """What every hostile method does: leave the marker, then hand back a plausible value."""
    MARKER.touch()
    return np.zeros(P)


class Reducer:
    """Unpickling it writes the marker."""

    def __reduce__(self):
        return (Path.touch, (MARKER,))


class HostileArray(np.ndarray):
    """An ndarray subclass whose every overridable reader writes the marker and lies."""

    astype = _ran
    __array__ = _ran
    __len__ = _ran
    __iter__ = _ran
    __getitem__ = _ran
    __eq__ = _ran
    tobytes = _ran
    copy = _ran

    @property
    def shape(self):
        MARKER.touch()
        return (P,)

    @property
    def dtype(self):
        MARKER.touch()
        return np.dtype(np.float64)

    @property
    def ndim(self):
        MARKER.touch()
        return 1

    def __reduce__(self):
        return (Path.touch, (MARKER,))


class WrongSizeAstype(np.ndarray):
    """``astype`` returns an array of another size (made Server.step raise before)."""

    def astype(self, *args, **kwargs):
        MARKER.touch()
        return np.zeros(P + 3)


class HostileObject:
    """Every protocol a reader might touch writes the marker."""

    __len__ = __iter__ = __getitem__ = __eq__ = __hash__ = __array__ = __float__ = _ran
    __index__ = __bytes__ = __buffer__ = __getattr__ = _ran

    def __reduce__(self):
        return (Path.touch, (MARKER,))


class HostileList(list):
    """A container whose own ``__len__``/``__iter__``/``__getitem__`` write the marker."""

    __len__ = __iter__ = __getitem__ = __reversed__ = _ran


class HostileBytes(bytes):
    __len__ = __getitem__ = __buffer__ = _ran


def _hostile_array(cls, shape=(P,), dtype=np.float64):
    return np.zeros(shape, dtype=dtype).view(cls)


def _object_array(items: list) -> np.ndarray:
    """An object ndarray holding ``items`` as they are (filled one by one: building it from the
    list would make numpy probe each item's ``__len__``/``__array__``)."""
    out = np.empty(len(items), dtype=object)
    for i, item in enumerate(items):
        out[i] = item
    return out


FLOAT_DTYPES = [np.float64, np.float32, np.float16, np.dtype(">f8")]
OTHER_DTYPES = [np.int64, np.uint8, np.bool_, np.complex128]

hostile = st.sampled_from([
    "subclass", "subclass_2d", "wrong_astype", "object", "reducer", "masked", "masked_valid",
    "matrix", "pickled_reducer", "pickled_array", "hostile_bytes", "object_array",
]).map(lambda kind: {
    "subclass": lambda: _hostile_array(HostileArray),
    "subclass_2d": lambda: _hostile_array(HostileArray, (1, P)),
    "wrong_astype": lambda: _hostile_array(WrongSizeAstype),
    "object": HostileObject,
    "reducer": Reducer,
    "masked": lambda: np.ma.array(np.ones(P), mask=np.arange(P) % 2 == 0),
    "masked_valid": lambda: np.ma.array(np.ones(P)),
    "matrix": lambda: np.ones(P).view(np.matrix),
    "pickled_reducer": lambda: pickle.dumps(Reducer()),
    "pickled_array": lambda: pickle.dumps(np.ones(P)),
    "hostile_bytes": lambda: HostileBytes(bytes(8 * P)),
    "object_array": lambda: _object_array([HostileObject() for _ in range(P)]),
}[kind]())

float_arrays = st.sampled_from(FLOAT_DTYPES).flatmap(lambda dt: hnp.arrays(
    dt, st.sampled_from([(P,), (P - 1,), (P + 1,), (1, P), (), (0,)]),
    elements=st.floats(width=8 * np.dtype(dt).itemsize, allow_nan=True, allow_infinity=True)))
other_arrays = st.sampled_from(OTHER_DTYPES).flatmap(
    lambda dt: hnp.arrays(dt, st.sampled_from([(P,), (1, P)])))
wire_rows = st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=P, max_size=P).map(
    lambda v: np.asarray(v, dtype="<f8").tobytes())
messages = st.one_of(
    st.none(), st.integers(), st.floats(), st.text(max_size=20), st.binary(max_size=8 * P + 24),
    wire_rows, st.lists(st.floats(), max_size=P + 1), float_arrays, other_arrays, hostile,
)


@pytest.fixture(autouse=True)
def no_marker():
    MARKER.unlink(missing_ok=True)
    yield
    assert not MARKER.exists(), "a hostile object's code ran at the message boundary"


def _expected_row(msg) -> np.ndarray | None:
    """The row a valid message must give, computed independently of validate_messages."""
    if type(msg) is np.ndarray and msg.shape == (P,) and msg.dtype.kind == "f":
        return msg.astype(np.float64)
    if type(msg) is bytes and len(msg) == 8 * P:
        return np.frombuffer(msg, dtype="<f8").astype(np.float64)
    return None


# the autouse marker check runs once per test (around all its examples); each example checks too
SETTINGS = settings(max_examples=300, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.function_scoped_fixture])


@SETTINGS
@given(st.lists(messages, max_size=8), st.sampled_from([list, tuple, HostileList, np.array]))
def test_validate_messages_reads_only_data(msgs, container):
    box = _object_array(msgs) if container is np.array else container(msgs)
    grads, rejected = validate_messages(box, P)
    assert not MARKER.exists()
    # a list subclass too is read in full, through list's own iterator
    assert grads.dtype == np.float64 and grads.shape == (len(msgs), P)
    for row, bad, msg in zip(grads, rejected, msgs, strict=True):
        want = _expected_row(msg)
        if bad:
            assert np.isnan(row).all()
            assert want is None or not np.isfinite(want).all()
        else:
            assert want is not None and np.isfinite(row).all()
            np.testing.assert_array_equal(row, want)
    n = count_overflowed(box, P)
    assert 0 <= n <= len(msgs)
    with np.errstate(over="ignore"):
        assert n == sum(w is not None and not np.isfinite(np.linalg.norm(w))
                        for w in map(_expected_row, msgs))
    assert not MARKER.exists()


@SETTINGS
@given(st.one_of(messages, st.lists(messages, max_size=3), st.dictionaries(st.text(), messages)),
       st.integers(0, M + 2))
def test_any_container_never_raises(box, m):
    for hostile_box in (box, HostileObject(), HostileList([box])):
        grads, rejected = validate_messages(hostile_box, P, m=m)
        assert grads.shape == (m, P) and rejected.shape == (m,)
        assert np.isnan(grads[rejected]).all() and np.isfinite(grads[~rejected]).all()
        validate_messages(hostile_box, P)
        count_overflowed(hostile_box, P)
    assert not MARKER.exists()


@pytest.fixture(scope="module")
def server_and_grads(data_dir):
    from ray_robust.api import load_problem

    cfg = Config(seed=1, rounds=10**6, eval_every=10**6)
    problem = load_problem(cfg)
    server = Server(cfg, problem)
    theta0 = server.initial_state().theta
    grads, _ = honest_gradients(cfg, server.model, theta0, problem.shards, 0)
    return server, grads


@SETTINGS
@given(st.lists(st.tuples(st.integers(0, M - 1), messages), max_size=3),
       st.sampled_from([list, HostileList, tuple]))
def test_server_step_never_raises_and_theta_stays_finite(server_and_grads, bad, container):
    """Up to βm = 3 workers send anything; the server steps and θ stays finite."""
    server, grads = server_and_grads
    msgs = list(grads)
    for i, msg in bad:
        msgs[i] = msg
    state = server.initial_state()
    for _ in range(2):
        server.step(state, container(msgs))
    assert np.isfinite(state.theta).all() and state.round == 2
    assert not MARKER.exists()


@SETTINGS
@given(st.one_of(messages, st.binary(min_size=REPLY_HEADER.size, max_size=200)),
       st.integers(1, 3), st.integers(1, 4))
def test_decode_reply_never_raises(reply, k, p):
    out = decode_reply(reply, k, p)
    assert out is None or (out[0].shape == (k, p) and type(out[1]) is dict)
    assert not MARKER.exists()


@SETTINGS
@given(hnp.arrays(np.float64, st.tuples(st.integers(1, 4), st.integers(1, 6))),
       st.dictionaries(st.text(max_size=8), st.one_of(
           st.integers(-2**62, 2**62), st.floats(allow_nan=True),
           st.lists(st.floats(allow_nan=True), max_size=4).map(tuple)), max_size=4),
       st.data())
def test_reply_round_trip_keeps_every_bit(grads, info, data):
    reply = encode_reply(grads, info)
    k, p = grads.shape
    stack, back = decode_reply(reply, k, p)
    assert stack.tobytes() == grads.tobytes()  # NaN payloads and −0.0 included
    assert back.keys() == info.keys()
    for key, value in info.items():  # same type, same value (repr tells −0.0 from 0.0)
        assert type(back[key]) is type(value) and repr(back[key]) == repr(value)
    # a reply cut or extended anywhere, or for another k or p, is rejected
    cut = data.draw(st.integers(0, len(reply) - 1))
    assert decode_reply(reply[:cut], k, p) is None
    assert decode_reply(reply + b"\0", k, p) is None
    assert decode_reply(reply, k + 1, p) is None and decode_reply(reply, k, p + 1) is None


@pytest.mark.parametrize("text", [b'{"a":"x"}', b'{"a":[1,"x"]}', b'{"a":{"b":1}}', b"[1]",
                                  b'{"a":true}', b'{"a":null}', b'{"a":[[1]]}', b"\xff",
                                  b'{"a":1e999999}', b"[" * 100_000, b'{"a":' + b"9" * 5000 + b"}"])
def test_reply_statistics_must_be_numbers(text):
    reply = REPLY_HEADER.pack(REPLY_MAGIC, 1, 2, len(text)) + text + bytes(16)
    out = decode_reply(reply, 1, 2)
    assert out is None or (out[1] == {"a": float("inf")} and text == b'{"a":1e999999}')


# ---- over Ray: hostile worker actors next to a real one -----------------------------------


def _hostile_actor_class():
    """A worker actor that replies with something hostile instead of its bytes. Defined in a
    function, so cloudpickle carries it (and its payload classes) by value to Ray's workers."""
    import ray

    class RemoteReducer:
        def __init__(self, marker):
            self.marker = marker

        def __reduce__(self):
            return (Path.touch, (Path(self.marker),))

    class RemoteHostileArray(np.ndarray):
        marker = ""

        def __setstate__(self, state):
            Path(self.marker or state[-1]).touch()

        def astype(self, *args, **kwargs):
            Path(self.marker).touch()
            return np.zeros(self.size)

        def __reduce__(self):
            fn, args, state = super().__reduce__()
            return fn, args, (*state, self.marker)

    class Boom(Exception):
        def __init__(self, marker):
            super().__init__(marker)
            self.marker = marker

        def __reduce__(self):
            return (Path.touch, (Path(self.marker),))

    class HostileGroup:
        def __init__(self, kind: str, k: int, marker: str):
            self.kind, self.k, self.marker = kind, k, marker

        def compute(self, config_blob, theta, t):
            p = len(theta) // 8
            if self.kind == "reduce":
                return RemoteReducer(self.marker)
            if self.kind == "subclass":
                arr = np.zeros((self.k, p)).view(RemoteHostileArray)
                arr.marker = self.marker
                return arr
            if self.kind == "raise":
                raise Boom(self.marker)
            if self.kind == "tuple":  # the old reply format
                return np.zeros((self.k, p)).tobytes(), {}
            if self.kind == "short":
                return encode_reply(np.zeros((self.k, p)), {})[:-1]
            raise AssertionError(self.kind)

    return ray.remote(HostileGroup)


KINDS = ("reduce", "subclass", "raise", "tuple", "short")


def test_hostile_worker_replies_are_rejected_not_run(ray_session, data_dir, tmp_path):
    import ray

    from ray_robust.api import load_problem
    from ray_robust.engines.ray_engine import _server_problem, _ServerActor, _WorkerGroup
    from ray_robust.reproduce import PAPER_SETTING

    marker = tmp_path / "hostile_code_ran"
    cfg = Config.from_dict({**PAPER_SETTING, "rounds": 6, "seed": 1, "alpha": 0.0,
                            "attack": "none"})
    problem = load_problem(cfg)
    honest = list(range(M - len(KINDS)))
    groups = [honest] + [[M - len(KINDS) + j] for j in range(len(KINDS))]
    Hostile = _hostile_actor_class()
    actors = [_WorkerGroup.options(num_cpus=0).remote([ray.put(problem.shards.subset(honest))],
                                                      honest)]
    actors += [Hostile.options(num_cpus=0).remote(kind, 1, str(marker)) for kind in KINDS]
    server = _ServerActor.options(num_cpus=0, max_concurrency=2).remote(
        ray.put(_server_problem(problem)), actors, groups, 60.0)
    try:
        hist, _ = ray.get(server.train.remote(cfg, 0))
        assert not marker.exists(), "a worker's reply ran code in the server actor"
        assert np.isfinite(hist.theta).all() and len(hist.metrics) == cfg.rounds
        assert hist.metrics["n_rejected"].eq(len(KINDS)).all()
        local = Server(cfg, problem)

        def compute(theta, t):  # the reference: those workers' messages missing
            grads, info = honest_gradients(cfg, local.model, theta, problem.shards, t)
            return [*grads[: len(honest)], *[None] * len(KINDS)], info

        np.testing.assert_array_equal(hist.theta, run(local, compute).theta)
        # positive control: the replies were live; ray.get here unpickles and runs them
        theta_bytes = np.zeros(P).tobytes()
        for kind, actor in zip(KINDS, actors[1:], strict=True):
            if kind in ("reduce", "subclass", "raise"):
                marker.unlink(missing_ok=True)
                with contextlib.suppress(Exception):  # what the payload returns is no matter
                    ray.get(actor.compute.remote(b"", theta_bytes, 0))
                assert marker.exists(), kind
    finally:
        for actor in [*actors, server]:
            ray.kill(actor, no_restart=True)
