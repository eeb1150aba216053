"""The in-process engine: all m workers' gradients in one batched numpy call per round.

This is the reference semantics of a run; the Ray engine must give the same θ bit for bit.
"""

from __future__ import annotations

from ..algorithm import History, Server, honest_gradients, run
from ..config import Config
from ..data import Problem


def train_local(config: Config, problem: Problem, **run_kwargs) -> History:
    server = Server(config, problem)
    shards = problem.shards
    return run(
        server, lambda theta, t: honest_gradients(config, server.model, theta, shards, t),
        **run_kwargs,
    )
