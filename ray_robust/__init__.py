"""ray_robust: distributed learning robust to distributional shifts and byzantine workers.

Implements Algorithm 2 of Zhou, Xu, Wang, Tian, "Robust Distributed Learning Against Both
Distributional Shifts and Byzantine Attacks" (IEEE TNNLS 2025, arXiv 2210.16682) with an
in-process engine and a Ray actor engine that share one numerical core (``ray_robust.core``).
"""

from .algorithm import DivergenceError, History
from .api import load_problem, resume, train
from .config import ALGORITHMS, Config, GuaranteeWarning
from .core.aggregators import AggregationError, mean, nbs
from .data import Problem, Shards, load_spambase, prepare
from .reproduce import ENVIRONMENTS, PAPER_TABLE1, run_table1, summarize_table1

__all__ = [
    "ALGORITHMS",
    "ENVIRONMENTS",
    "PAPER_TABLE1",
    "AggregationError",
    "Config",
    "DivergenceError",
    "GuaranteeWarning",
    "History",
    "Problem",
    "RayTrainer",
    "Shards",
    "load_problem",
    "load_spambase",
    "mean",
    "nbs",
    "prepare",
    "resume",
    "run_table1",
    "summarize_table1",
    "train",
]
__version__ = "0.1.0"


def __getattr__(name: str):
    """``RayTrainer`` is imported lazily: ``import ray`` costs ~1 s and the local engine needs
    none of it."""
    if name == "RayTrainer":
        from .engines.ray_engine import RayTrainer

        return RayTrainer
    raise AttributeError(f"module 'ray_robust' has no attribute {name!r}")
