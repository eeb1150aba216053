"""Shared fixtures: the data location and one real Ray instance for the whole test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get("RAY_ROBUST_DATA_DIR", ROOT.parent / "shared" / "data")).resolve()
# absolute: Tune trials, Ray workers and subprocesses run in other working directories
os.environ["RAY_ROBUST_DATA_DIR"] = str(DATA_DIR)
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not (DATA_DIR / "spambase.data").is_file():
        pytest.fail(f"Spambase not found in {DATA_DIR}; set RAY_ROBUST_DATA_DIR.")
    return DATA_DIR


@pytest.fixture(scope="session")
def ray_session():
    """A real local Ray instance (2 CPUs, no dashboard), shared by every test that needs one."""
    import ray

    if not ray.is_initialized():
        # address="local": a new instance even when /tmp/ray names another (a `ray start`).
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()
