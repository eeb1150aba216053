"""ray_robust: distributed learning robust to distributional shifts and byzantine workers.

Implements Algorithm 2 of Zhou, Xu, Wang, Tian, "Robust Distributed Learning Against Both
Distributional Shifts and Byzantine Attacks" (IEEE TNNLS 2025, arXiv 2210.16682) with an
in-process engine and a Ray actor engine that share one numerical core (``ray_robust.core``).

The public names below are imported on first use (PEP 562), so ``import ray_robust.core``
loads the numerical core alone, and ``import ray`` (~1 s) happens only for the Ray engine.
The layers and what each module owns: ``docs/architecture.md``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

#: public name → the module that defines it
_EXPORTS: dict[str, str] = {
    "DivergenceError": "algorithm",
    "History": "algorithm",
    "load_problem": "api",
    "resume": "api",
    "train": "api",
    "ALGORITHMS": "config",
    "Config": "config",
    "GuaranteeWarning": "config",
    "AggregationError": "core.aggregators",
    "mean": "core.aggregators",
    "nbs": "core.aggregators",
    "Problem": "data",
    "Shards": "data",
    "load_spambase": "data",
    "load_table": "data",
    "prepare": "data",
    "encode_labels": "data",
    "RobustClassifier": "estimator",
    "FittedModel": "fitted",
    "load_model": "fitted",
    "RayTrainer": "engines.ray_engine",
    "ENVIRONMENTS": "reproduce",
    "PAPER_TABLE1": "reproduce",
    "run_table1": "reproduce",
    "summarize_table1": "reproduce",
}
__all__ = [
    "ALGORITHMS",
    "ENVIRONMENTS",
    "PAPER_TABLE1",
    "AggregationError",
    "Config",
    "DivergenceError",
    "FittedModel",
    "GuaranteeWarning",
    "History",
    "Problem",
    "RayTrainer",
    "RobustClassifier",
    "Shards",
    "encode_labels",
    "load_model",
    "load_problem",
    "load_spambase",
    "load_table",
    "mean",
    "nbs",
    "prepare",
    "resume",
    "run_table1",
    "summarize_table1",
    "train",
]
__version__ = "0.1.0"

if TYPE_CHECKING:  # for type checkers and IDEs: the same names, eagerly
    from .algorithm import DivergenceError, History
    from .api import load_problem, resume, train
    from .config import ALGORITHMS, Config, GuaranteeWarning
    from .core.aggregators import AggregationError, mean, nbs
    from .data import Problem, Shards, encode_labels, load_spambase, load_table, prepare
    from .engines.ray_engine import RayTrainer
    from .estimator import RobustClassifier
    from .fitted import FittedModel, load_model
    from .reproduce import ENVIRONMENTS, PAPER_TABLE1, run_table1, summarize_table1


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'ray_robust' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
