"""Robustness studies with Ray Tune: grids over Algorithm 2's parameters, read from YAML.

- :mod:`.spec`: the study file (:func:`load_study`, its checks, the grid; imports no Ray);
- :mod:`.trial`: one trial: its config split into a :class:`~ray_robust.config.Config` and
  study knobs (parsed once, :class:`Trial`), its progress store
  (``<experiment>/progress/<key>.json``), the Tune trainable :func:`trainable` (the only place
  that calls ``ray.tune.report``);
- :mod:`.driver`: running a study: :func:`run_study_full` / :func:`run_study` with Tune (the
  output folder's checks, ``--resume``, ``--overwrite``, the study's lock, Ray through the
  engine's ``ray_session``), :func:`run_grid_local` in-process without Tune;
- :mod:`.results`: :func:`tidy`, :func:`aggregate`, the text summary and the CSV/PNG
  hand-off (:func:`finish_study`).

Importing this package does not import Ray.
"""

from __future__ import annotations

from typing import Any

from .driver import check_storage, run_grid_local, run_study, run_study_full
from .results import StudyResult, aggregate, finish_study, format_summary, tidy
from .spec import DERIVED, PLOT_KEYS, STUDY_KEYS, Study, load_study
from .trial import (
    CHECKPOINT_FILE,
    DEFAULT_REPORT_EVERY,
    EPS_PREFIX,
    PROGRESS_DIR,
    RECORD_KIND,
    TRIAL_KEYS,
    Trial,
    cached_problem,
    parse_trial,
    progress_path,
    save_final_state,
    save_trial_progress,
    split_trial_config,
    trainable,
    trial_actors,
    trial_bundles,
    trial_key,
    trial_metrics,
    trial_progress,
    trial_resources,
)


def __getattr__(name: str) -> Any:
    # the Tune scheduler class, built on first use (see driver.FifoNoSteal)
    if name == "FifoNoSteal":
        from . import driver

        return driver.FifoNoSteal
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "CHECKPOINT_FILE",
    "DEFAULT_REPORT_EVERY",
    "DERIVED",
    "EPS_PREFIX",
    "PLOT_KEYS",
    "PROGRESS_DIR",
    "RECORD_KIND",
    "STUDY_KEYS",
    "TRIAL_KEYS",
    "Study",
    "StudyResult",
    "Trial",
    "aggregate",
    "cached_problem",
    "check_storage",
    "finish_study",
    "format_summary",
    "load_study",
    "parse_trial",
    "progress_path",
    "run_grid_local",
    "run_study",
    "run_study_full",
    "save_final_state",
    "save_trial_progress",
    "split_trial_config",
    "tidy",
    "trainable",
    "trial_actors",
    "trial_bundles",
    "trial_key",
    "trial_metrics",
    "trial_progress",
    "trial_resources",
]
