"""Robustness studies with Ray Tune: grids over Algorithm 2's parameters, read from YAML.

A study file (``tune_configs/*.yaml``) holds

- ``param_space``: fixed values and ``{grid_search: [...]}`` axes over :class:`Config` fields,
  ``algorithm`` and the trial keys of :data:`TRIAL_KEYS` (seeds are a grid axis);
- ``metric`` / ``mode``: what Tune ranks trials by (``error`` = the final test error under the
  trial's shift);
- ``quick``: overrides for a cheap run (tests, ``--quick``);
- ``plot``: how the study's PNG is drawn (see :mod:`ray_robust.plots`).

:func:`trainable` is the function trainable: it runs one configuration through the engine-
independent :class:`~ray_robust.algorithm.Server` and reports every ``report_every`` rounds,
saving the :class:`~ray_robust.algorithm.RunState` (θ, round, attack RNG, rows) to the study's
progress store first, so a resumed or retried trial continues exactly where it stopped. This
module is the only place that calls ``ray.tune.report`` (the Tune adapter). :func:`run_study`
runs a study and returns its results as a DataFrame; :func:`run_grid_local` runs the same grid
in-process without Tune.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import itertools
import json
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ._validation import load_yaml_mapping
from .algorithm import METRICS, RunState, Server, run
from .checkpoint import write_json_atomic
from .config import ALGORITHMS, Config
from .core.aggregators import n_to_screen
from .core.shift import error_rate
from .data import Problem
from .engines.local import train_local
from .reproduce import ENVIRONMENTS

#: Trial keys a param_space may hold besides Config's fields and ``algorithm``.
TRIAL_KEYS: dict[str, str] = {
    "environment": "one of Table I's environments 'E0'…'E4' (sets attack, alpha, shift_norm, "
                   "shift_eps; explicit values of those keys win)",
    "beta_offset": "β = α + beta_offset (overrides beta; e.g. 0 for β = α, 1/m for β = α + 1/m)",
    "report_every": "report to Tune (and save the trial's progress) every this many rounds "
                    "(default 50)",
    "eval_shift_eps": "list of shift budgets ε (in the trial's shift_norm) evaluated at every "
                      "report as 'error@eps=<ε>': one training run serves a whole ε axis",
    "engine": "'local' (in-process, default) or 'ray' (Ray actors inside the trial)",
    "actors": "engine 'ray' inside a trial: worker actors to start, an int or 'per-worker' "
              "(default 1); the trial reserves one CPU bundle per actor",
}
STUDY_KEYS = ("name", "description", "param_space", "metric", "mode", "quick", "plot",
              "max_failures")
PLOT_KEYS = ("x", "y", "hue", "kind", "col", "row", "reduce", "xlabel", "ylabel", "title",
             "vlines", "logx", "hue_labels", "ylim")
DERIVED = {"alpha_m": "αm, the number of byzantine workers",
           "beta_m": "βm, the number NBS screens"}
EPS_PREFIX = "error@eps="
DEFAULT_REPORT_EVERY = 50


def _study_error(source: str, msg: str) -> ValueError:
    return ValueError(f"Study {source}: {msg}")


def _is_grid(value: Any) -> bool:
    return isinstance(value, Mapping) and "grid_search" in value


def _axis_values(value: Any) -> list:
    return list(value["grid_search"]) if _is_grid(value) else [value]


@dataclass(frozen=True)
class Study:
    """A validated study: the grid, the metric Tune ranks by, the plot."""

    name: str
    param_space: dict[str, Any]
    metric: str = "error"
    mode: str = "min"
    plot: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    quick: bool = False
    #: Tune retries of a failed trial (FailureConfig.max_failures; from its saved progress)
    max_failures: int = 0

    @property
    def axes(self) -> list[str]:
        """The grid axes (keys whose value is a ``grid_search``), in file order."""
        return [k for k, v in self.param_space.items() if _is_grid(v)]

    @property
    def eval_shift_eps(self) -> list[float] | None:
        eps = self.param_space.get("eval_shift_eps")
        return None if eps is None else [float(e) for e in eps]

    @property
    def experiment_name(self) -> str:
        return self.name + ("_quick" if self.quick else "")

    def trial_configs(self) -> list[dict[str, Any]]:
        """Every trial's config dict, the grid expanded (the order Tune uses is its own)."""
        keys = list(self.param_space)
        values = [_axis_values(self.param_space[k]) for k in keys]
        return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*values)]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description,
                "param_space": copy.deepcopy(self.param_space), "metric": self.metric,
                "mode": self.mode, "plot": copy.deepcopy(self.plot), "quick": self.quick,
                "max_failures": self.max_failures}


def load_study(source: str | os.PathLike | Mapping, quick: bool = False) -> Study:
    """Read and validate a study (a YAML path or an already-parsed mapping).

    Malformed YAML, unknown keys (top level, ``param_space``, ``quick``, ``plot``), empty
    grid axes, an unusable plot spec or a grid point that :class:`Config` rejects each raise
    one ``ValueError`` naming the file and the fix.
    """
    if isinstance(source, Mapping):
        raw, where = copy.deepcopy(dict(source)), "<dict>"
        if "quick" in raw and isinstance(raw["quick"], bool):  # a saved Study.to_dict()
            quick = quick or raw.pop("quick")
    else:
        raw, where = _read_yaml(Path(source)), str(source)
    unknown = sorted(set(raw) - set(STUDY_KEYS))
    if unknown:
        raise _study_error(where, f"unknown key(s) {unknown}; valid ones: {list(STUDY_KEYS)}.")
    space = raw.get("param_space")
    if not isinstance(space, Mapping) or not space:
        raise _study_error(where, "'param_space' must be a non-empty mapping of parameters.")
    space = dict(space)
    plot = dict(raw.get("plot") or {})
    overrides = raw.get("quick") or {}
    if not isinstance(overrides, Mapping):
        raise _study_error(where, "'quick' must be a mapping of overrides.")
    bad = sorted(set(overrides) - {"param_space", "plot"})
    if bad:
        raise _study_error(where, f"unknown key(s) {bad} in 'quick'; it may override "
                                  "'param_space' and 'plot'.")
    _check_space(space, where, "param_space")
    if quick:
        extra = overrides.get("param_space") or {}
        if not isinstance(extra, Mapping):
            raise _study_error(where, "'quick.param_space' must be a mapping.")
        _check_space(dict(extra), where, "quick.param_space")
        space.update(extra)
        plot.update(overrides.get("plot") or {})
    name = raw.get("name") or (Path(where).stem if where != "<dict>" else "study")
    if not isinstance(name, str) or not name.replace("_", "").replace("-", "").isalnum():
        raise _study_error(where, f"'name' must be letters, digits, '_' or '-'. Got {name!r}.")
    mode = raw.get("mode", "min")
    if mode not in ("min", "max"):
        raise _study_error(where, f"'mode' must be 'min' or 'max'. Got {mode!r}.")
    retries = raw.get("max_failures", 0)
    if not isinstance(retries, int) or isinstance(retries, bool) or retries < -1:
        raise _study_error(where, f"'max_failures' must be an int >= -1 (Tune's retries of a "
                                  f"failed trial; -1: unlimited). Got {retries!r}.")
    study = Study(name=name, param_space=space, metric=raw.get("metric", "error"), mode=mode,
                  plot=plot, description=str(raw.get("description", "")).strip(), quick=quick,
                  max_failures=retries)
    _check_study(study, where)
    return study


def _read_yaml(path: Path) -> dict[str, Any]:
    return load_yaml_mapping(path, "study", "with a 'param_space'")


def _check_space(space: dict, where: str, label: str) -> None:
    valid = {"algorithm", *Config.field_names(), *TRIAL_KEYS}
    for key, value in space.items():
        if key not in valid:
            kind = "grid axis" if _is_grid(value) else "parameter"
            raise _study_error(
                where, f"unknown {kind} '{key}' in '{label}'. Valid names: "
                       f"{sorted(valid)}.")
        if isinstance(value, Mapping):
            if set(value) != {"grid_search"}:
                raise _study_error(where, f"'{label}.{key}' must be a value or "
                                          f"{{grid_search: [...]}}. Got {dict(value)!r}.")
            if not isinstance(value["grid_search"], list) or not value["grid_search"]:
                raise _study_error(where, f"the grid axis '{key}' must be a non-empty list.")
            seen = [_canonical({key: v}) for v in value["grid_search"]]
            if len(set(seen)) < len(seen):
                raise _study_error(where, f"the grid axis '{key}' repeats a value "
                                          f"({value['grid_search']!r}): every trial must differ "
                                          "(a seed axis gives repeats).")


def _check_study(study: Study, where: str) -> None:
    eps = study.param_space.get("eval_shift_eps")
    if eps is not None and (not isinstance(eps, list) or not eps or not all(
            isinstance(e, int | float) and not isinstance(e, bool) and e >= 0 for e in eps)):
        raise _study_error(where, "'eval_shift_eps' must be a fixed non-empty list of budgets "
                                  f"ε ≥ 0. Got {eps!r}.")
    metrics = {"error", *METRICS, *(f"{EPS_PREFIX}{e:g}" for e in study.eval_shift_eps or [])}
    if study.metric not in metrics:
        raise _study_error(where, f"'metric' must be one of {sorted(metrics)}. "
                                  f"Got {study.metric!r}.")
    configs = study.trial_configs()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for values in configs:
            try:
                split_trial_config(values)
            except ValueError as exc:
                point = {k: values[k] for k in study.axes}
                raise _study_error(where, f"grid point {point}: {exc}") from None
    _check_plot(study, where)


def _check_plot(study: Study, where: str) -> None:
    plot = study.plot
    if not plot:
        return
    bad = sorted(set(plot) - set(PLOT_KEYS))
    if bad:
        raise _study_error(where, f"unknown plot key(s) {bad}; valid ones: {list(PLOT_KEYS)}.")
    if plot.get("kind", "line") not in ("line", "bar", "heatmap"):
        raise _study_error(where, "plot 'kind' must be 'line', 'bar' or 'heatmap'. "
                                  f"Got {plot['kind']!r}.")
    if "x" not in plot:
        raise _study_error(where, "the plot needs an 'x' column.")
    if plot.get("kind") == "heatmap" and "hue" not in plot:
        raise _study_error(where, "a heatmap needs 'hue': the column drawn down its rows.")
    columns = set(study.param_space) | set(DERIVED) | {"algorithm"}
    if study.eval_shift_eps:
        columns.add("shift_eps")
    for key in ("x", "hue", "col", "row"):
        if key in plot and plot[key] not in columns:
            raise _study_error(where, f"plot '{key}' = {plot[key]!r} is not a parameter of the "
                                      f"study; choose one of {sorted(columns)}.")
    reduce = plot.get("reduce")
    if reduce is not None and (not isinstance(reduce, Mapping) or set(reduce) != {"over", "how"}
                               or reduce["how"] not in ("max", "min")
                               or reduce["over"] not in study.axes):
        raise _study_error(where, "plot 'reduce' must be {over: <grid axis>, how: max|min}.")
    used = {plot.get(k) for k in ("x", "hue", "col", "row")}
    used |= {reduce["over"]} if reduce else set()
    derived_from = {"alpha_m": "alpha", "beta_m": "beta"}
    used |= {derived_from[c] for c in list(used) if c in derived_from}
    if "beta_m" in used or "alpha_m" in used:
        used |= {"n_workers"}
    if "environment" in used:
        used |= {"attack", "alpha", "shift_norm", "shift_eps"}
    loose = [a for a in study.axes if a not in used and a != "seed"
             and not (a == "algorithm" and {"aggregator", "wrm"} & used)]
    if loose:
        raise _study_error(where, f"grid axis {loose} is not shown by the plot: use it as "
                                  "the plot's x, hue, col or row, or reduce over it.")


# ---- one trial ------------------------------------------------------------------------------
def split_trial_config(values: Mapping[str, Any]) -> tuple[Config, dict[str, Any]]:
    """A trial's flat config dict → (:class:`Config`, trial options of :data:`TRIAL_KEYS`)."""
    values = dict(values)
    opts = {k: values.pop(k) for k in list(values) if k in TRIAL_KEYS}
    env = opts.get("environment")
    if env is not None:
        if env not in ENVIRONMENTS:
            raise ValueError(f"The 'environment' parameter of the study must be one of "
                             f"{sorted(ENVIRONMENTS)}. Got {env!r} instead.")
        values = {**ENVIRONMENTS[env], **values}
    if opts.get("beta_offset") is not None:
        values["beta"] = float(values.get("alpha", Config.alpha)) + float(opts["beta_offset"])
    report_every = int(opts.get("report_every", DEFAULT_REPORT_EVERY))
    if report_every < 1:
        raise ValueError(f"The 'report_every' parameter of the study must be an integer >= 1. "
                         f"Got {report_every!r} instead.")
    values.setdefault("eval_every", report_every)
    opts["report_every"] = report_every
    engine = opts.setdefault("engine", "local")
    if engine not in ("local", "ray"):
        raise ValueError(f"The 'engine' parameter of the study must be 'local' or 'ray'. "
                         f"Got {engine!r} instead.")
    opts.setdefault("actors", 1)
    cfg = Config.from_dict(values)
    trial_actors(opts, cfg.n_workers)
    if report_every % cfg.eval_every:
        raise ValueError(f"The 'report_every' parameter ({report_every}) must be a multiple of "
                         f"eval_every ({cfg.eval_every}).")
    return cfg, opts


_PROBLEMS: dict[tuple, Problem] = {}


def cached_problem(cfg: Config) -> Problem:
    """The problem for ``cfg``, built once per process (trials reuse their actor's copy)."""
    from .api import load_problem

    key = (cfg.seed, cfg.n_workers, cfg.train_fraction, cfg.standardize, cfg.data_path,
           cfg.sharding, cfg.dirichlet_alpha, cfg.label_column)
    if key not in _PROBLEMS:
        if len(_PROBLEMS) >= 16:
            _PROBLEMS.pop(next(iter(_PROBLEMS)))
        _PROBLEMS[key] = load_problem(cfg)
    return _PROBLEMS[key]


def trial_metrics(server: Server, state: RunState, row: dict, opts: dict,
                  resumed_from: int) -> dict[str, Any]:
    """What a trial reports: the round's metrics, ``error`` and the errors at extra ε."""
    cfg, pb = server.config, server.problem
    out = {k: (float(v) if isinstance(v, np.floating) else v) for k, v in row.items()}
    out["error"] = out["test_error_shifted"]
    out["resumed_from"] = resumed_from
    norm = None if cfg.shift_norm == "none" else cfg.shift_norm
    for eps in opts.get("eval_shift_eps") or ():
        out[f"{EPS_PREFIX}{float(eps):g}"] = error_rate(
            server.model, state.theta, pb.X_test, pb.y_test, norm, float(eps))
    return out


def trial_actors(opts: Mapping[str, Any], n_workers: int) -> int:
    """How many worker actors a trial with ``engine: ray`` starts (``actors``: an int,
    'per-worker' = m, or 'auto'). 'auto' is the engine's own rule
    (:func:`~ray_robust.engines.ray_placement.actor_count`) for a trial's resources: its
    bundles are reserved before its problem is loaded, so one CPU on one node, hence 1."""
    actors = opts.get("actors", 1)
    if actors == "per-worker":
        return n_workers
    if actors == "auto":
        from .engines.ray_placement import actor_count

        return actor_count("auto", n_workers, feature_bytes=0, resources=(1, 1))
    if isinstance(actors, bool) or not isinstance(actors, int) or actors < 1:
        raise ValueError(f"The 'actors' parameter of the study must be an int >= 1, "
                         f"'per-worker' or 'auto'. Got {actors!r} instead.")
    return min(actors, n_workers)


def trial_bundles(values: Mapping[str, Any]) -> list[dict[str, float]]:
    """The placement-group bundles a trial reserves: one CPU for the trial itself, and with
    ``engine: ray`` one bundle per worker actor it starts (each the actor's CPU request, or 1
    CPU when the engine's actors request none: the reservation keeps Tune from running other
    trials on the CPUs the actors use; too few bundles for CPU-requesting actors = a hang)."""
    cfg, opts = split_trial_config(values)
    bundles = [{"CPU": 1.0}]
    if opts["engine"] == "ray":
        from .engines import ray_engine

        per_actor = float(getattr(ray_engine, "ACTOR_CPUS", 1)) or 1.0
        bundles += [{"CPU": per_actor}] * trial_actors(opts, cfg.n_workers)
    return bundles


def trial_resources(values: Mapping[str, Any]):
    """:func:`trial_bundles` as Tune's ``PlacementGroupFactory`` (for ``tune.with_resources``)."""
    from ray import tune

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return tune.PlacementGroupFactory(trial_bundles(values))


CHECKPOINT_FILE = "run_state.json"
#: The study's progress store: ``<experiment>/progress/<trial key>.json`` (see :func:`trainable`)
PROGRESS_DIR = "progress"
PROGRESS_FORMAT = 1


def trial_key(values: Mapping[str, Any]) -> str:
    """A trial's name in the progress store: a hash of its config values (the resolved grid
    point), the same in every run of the study whatever trial id or folder Tune gives it."""
    return hashlib.sha256(_canonical(values).encode()).hexdigest()[:20]


def _canonical(values: Mapping[str, Any]) -> str:
    return json.dumps(dict(values), sort_keys=True, default=repr)


def progress_path(exp: str | os.PathLike, values: Mapping[str, Any]) -> Path:
    """Where a trial of the study in ``exp`` saves its progress."""
    return Path(exp) / PROGRESS_DIR / f"{trial_key(values)}.json"


def save_trial_progress(exp: str | os.PathLike, values: Mapping[str, Any],
                        snapshot: Mapping[str, Any]) -> Path:
    """Save a trial's run state (``RunState.to_dict()``) atomically: what
    :func:`trial_progress` reads back."""
    return write_json_atomic(progress_path(exp, values), {
        "format": PROGRESS_FORMAT, "values": json.loads(_canonical(values)),
        "state": dict(snapshot)})


def trial_progress(exp: str | os.PathLike, values: Mapping[str, Any]) -> RunState | None:
    """The run state a trial of the study in ``exp`` last saved (θ, round, RNG states, every
    round's row), or None when it has saved none."""
    path = progress_path(exp, values)
    if not path.is_file():
        return None
    try:
        payload = json.loads(path.read_text())
        if (not isinstance(payload, dict) or payload.get("format") != PROGRESS_FORMAT
                or payload.get("values") != json.loads(_canonical(values))):
            raise ValueError("it belongs to another trial or format")
        return RunState.from_dict(payload["state"])
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        warnings.warn(f"{path} is not a usable progress record ({exc}); the trial starts from "
                      "round 0 (its result is the same, only the earlier work is redone).",
                      RuntimeWarning, stacklevel=2)
        return None


def trainable(config: dict[str, Any], experiment_dir: str | None = None) -> None:
    """Tune function trainable: one run of Algorithm 2 / a baseline, resumable.

    Every ``report_every`` rounds (and at T) it saves its run state to the study's progress
    store, ``<experiment_dir>/progress/<trial key>.json`` (atomically: a crash leaves the
    previous record), then reports to Tune; a trial that finds its record continues from it,
    so θ ends bit-identical to an uninterrupted run. Resuming thus relies only on this
    store, never on Tune's experiment snapshot (whose writes are not crash-safe: a driver
    killed while writing it left an empty file, and a snapshot can name a trial checkpoint
    Tune has already deleted). The final report carries a Tune checkpoint of the state
    (``result.checkpoint``). ``experiment_dir`` defaults to the Tune experiment's folder on
    its (local or NFS) storage, so ``tune.Tuner(trainable, ...)`` used directly saves progress
    too, and a later run under the same experiment name continues from those records. The key
    covers the config values only: after changing the code or the data, use a new name (or
    ``--overwrite``).
    """
    from ray import tune

    if experiment_dir is None:
        experiment_dir = _tune_experiment_dir()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the study chose its grid; Config warns for each point
        cfg, opts = split_trial_config(config)
    problem = cached_problem(cfg)
    server = Server(cfg, problem)
    state = trial_progress(experiment_dir, config) or server.initial_state()
    resumed_from = state.round

    def report(row: dict) -> None:
        metrics = trial_metrics(server, state, row, opts, resumed_from)
        snapshot = state.to_dict()
        save_trial_progress(experiment_dir, config, snapshot)
        if state.round < cfg.rounds:
            tune.report(metrics)
            return
        with tempfile.TemporaryDirectory() as d:
            (Path(d) / CHECKPOINT_FILE).write_text(json.dumps(snapshot))
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(d))

    if state.round >= cfg.rounds:  # finished in an earlier run: report the end once more
        report(state.rows[-1])
        return
    if opts["engine"] == "ray":
        _run_ray(server, state, opts, report)
    else:
        train_local(cfg, problem, state=state, progress=report,
                    progress_every=opts["report_every"])


def _tune_experiment_dir() -> str:
    """The folder of the running Tune experiment on its storage (not the per-run staging folder
    that ``get_trial_dir()`` names)."""
    import pyarrow.fs
    from ray import tune

    fix = "Pass one: tune.with_parameters(trainable, experiment_dir=...)."
    try:  # a DeveloperAPI of Ray 2.x's Tune context
        storage = tune.get_context().get_storage()
        filesystem, path = storage.storage_filesystem, storage.experiment_fs_path
    except (AttributeError, RuntimeError) as exc:
        raise ValueError(f"This Ray Tune does not tell a trial its experiment folder ({exc}). "
                         f"{fix}") from None
    if not isinstance(filesystem, pyarrow.fs.LocalFileSystem):
        raise ValueError(
            "The trainable saves its progress to a folder on a local or shared (NFS) file "
            f"system; this experiment's storage is {filesystem.type_name}. {fix}")
    return path


def _run_ray(server: Server, state: RunState, opts: dict, report: Callable) -> None:
    from .engines.ray_engine import RayTrainer

    trainer = RayTrainer(server.problem,
                         actors=trial_actors(opts, server.config.n_workers))
    try:
        compute = trainer.compute_fn(server.config)
        run(server, compute, state=state, progress=report, progress_every=opts["report_every"])
    finally:
        trainer.close()


def run_grid_local(study: Study | str | os.PathLike | Mapping,
                   log: Callable[[str], None] | None = None) -> pd.DataFrame:
    """Run a study's grid in-process, without Tune: one row per trial, columns as Tune's
    ``ResultGrid.get_dataframe()`` (``config/<key>`` and the final metrics)."""
    if not isinstance(study, Study):
        study = load_study(study)
    rows = []
    for k, values in enumerate(study.trial_configs()):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cfg, opts = split_trial_config(values)
        server = Server(cfg, cached_problem(cfg))
        state = server.initial_state()
        train_local(cfg, server.problem, state=state)
        row = trial_metrics(server, state, state.rows[-1], opts, 0)
        row.update({f"config/{key}": v for key, v in values.items()})
        rows.append(row)
        if log and (k + 1) % 20 == 0:
            log(f"  {k + 1} runs done")
    return pd.DataFrame(rows)


# ---- results --------------------------------------------------------------------------------
def tidy(results: pd.DataFrame, study: Study) -> pd.DataFrame:
    """One row per (trial, ε): plain parameter columns, derived αm/βm, ``error`` for the plot."""
    df = results.copy()
    for key in study.param_space:
        col = f"config/{key}"
        if col in df.columns:
            df[key] = df[col]
        elif key not in df.columns:
            df[key] = [study.param_space[key]] * len(df)
    defaults = Config()
    alpha = df["alpha"] if "alpha" in df.columns else pd.Series(defaults.alpha, index=df.index)
    if "environment" in df.columns and "alpha" not in study.param_space:
        alpha = df["environment"].map(lambda e: ENVIRONMENTS[e]["alpha"])
    m = df["n_workers"] if "n_workers" in df.columns else pd.Series(
        defaults.n_workers, index=df.index)
    if "beta_offset" in df.columns:
        beta = alpha.astype(float) + df["beta_offset"].astype(float)
    else:
        beta = df["beta"] if "beta" in df.columns else pd.Series(defaults.beta, index=df.index)
    df["alpha_m"] = [n_to_screen(float(a), int(n)) for a, n in zip(alpha, m, strict=True)]
    df["beta_m"] = [n_to_screen(float(b), int(n)) for b, n in zip(beta, m, strict=True)]
    eps = study.eval_shift_eps
    if eps:
        cols = [f"{EPS_PREFIX}{e:g}" for e in eps]
        keep = [c for c in df.columns if c not in cols and c != "shift_eps"]
        df = df.melt(id_vars=keep, value_vars=cols, var_name="shift_eps", value_name="error_eps")
        df["shift_eps"] = df["shift_eps"].str.slice(len(EPS_PREFIX)).astype(float)
        df["error"] = df.pop("error_eps")
    return df


def _group_keys(study: Study) -> list[str]:
    plot = study.plot
    keys = [a for a in study.axes if a != "seed"]
    for k in ("x", "hue", "col", "row"):
        if plot.get(k) and plot[k] not in keys:
            keys.append(plot[k])
    if study.eval_shift_eps and "shift_eps" not in keys:
        keys.append("shift_eps")
    return keys


def aggregate(tidy_df: pd.DataFrame, study: Study, y: str | None = None) -> pd.DataFrame:
    """Mean ± sd over seeds of ``y`` (default: the plot's y, else the metric) per grid point;
    with ``plot.reduce`` keeps the worse (``how``) of the ``over`` axis for each point."""
    y = y or study.plot.get("y") or study.metric
    keys = _group_keys(study)
    df = tidy_df.copy()
    for k in keys:  # lists/dicts are not hashable: group by their text
        if df[k].map(lambda v: isinstance(v, list | dict)).any():
            df[k] = df[k].map(str)
    g = df.groupby(keys, dropna=False, sort=True)[y]
    out = pd.DataFrame({"mean": g.mean(), "sd": g.std(ddof=1), "n_seeds": g.size()})
    out = out.reset_index()
    reduce = study.plot.get("reduce")
    if reduce:
        rest = [k for k in keys if k != reduce["over"]]
        pick = (out.groupby(rest, dropna=False)["mean"].idxmax() if reduce["how"] == "max"
                else out.groupby(rest, dropna=False)["mean"].idxmin())
        out = out.loc[pick.values].reset_index(drop=True)
    out.insert(len(keys) - (1 if reduce else 0), "y", y)
    return out


# ---- running a study with Tune --------------------------------------------------------------
@dataclass
class StudyResult:
    """Where a finished study's outputs are, and its tables."""

    study: Study
    results: pd.DataFrame
    summary: pd.DataFrame
    experiment_path: Path
    csv: Path
    summary_csv: Path
    png: Path | None
    num_errors: int
    seconds: float
    num_unfinished: int = 0


def _default_storage() -> Path:
    return Path(os.environ.get("RAY_ROBUST_TUNE_DIR", "results/tune")).resolve()


def run_study_full(
    source: str | os.PathLike | Mapping | Study,
    *,
    quick: bool = False,
    storage: str | os.PathLike | None = None,
    resume: bool = False,
    overwrite: bool = False,
    address: str | None = None,
    verbose: int = 0,
    log: Callable[[str], None] | None = print,
) -> StudyResult:
    """Run (or, with ``resume``, continue) a study with Ray Tune and write CSV + PNG.

    Outputs go to ``<storage>/<name>[_quick]/``: ``<name>_trials.csv`` (the ResultGrid
    DataFrame), ``<name>_summary.csv`` (mean ± sd over seeds), ``<name>.png``; beside them
    ``study.json`` (the study, read by ``resume``), ``progress/`` (each trial's saved run
    state, see :func:`trainable`), Tune's trial folders and, after a resume,
    ``superseded/`` (the trial folders of the interrupted run). One run of a study at a time:
    a second one (in another process) raises ``ValueError`` instead of writing beside it.
    """
    storage_path = Path(storage).resolve() if storage else _default_storage()
    study = source if isinstance(source, Study) else load_study(source, quick=quick)
    with _one_run_at_a_time(storage_path, study.experiment_name):
        return _run_study_full(study, storage_path, resume=resume, overwrite=overwrite,
                               address=address, verbose=verbose, log=log)


@contextlib.contextmanager
def _one_run_at_a_time(storage_path: Path, name: str) -> Iterator[None]:
    """Hold ``<storage>/.<name>.lock`` (an advisory ``flock``, released when the process ends,
    even by SIGKILL) so that two runs of one study never write the same folder."""
    import fcntl

    storage_path.mkdir(parents=True, exist_ok=True)
    with open(storage_path / f".{name}.lock", "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            raise ValueError(
                f"Another run of study '{name}' is using {storage_path / name} (process "
                f"{fh.read().strip() or '?'}): wait for it to end or stop it, then --resume."
            ) from None
        fh.truncate(0)
        fh.write(str(os.getpid()))
        fh.flush()
        yield


def _run_study_full(study: Study, storage_path: Path, *, resume: bool, overwrite: bool,
                    address: str | None, verbose: int,
                    log: Callable[[str], None] | None) -> StudyResult:
    import ray
    from ray import tune

    say = log or (lambda _msg: None)
    exp = storage_path / study.experiment_name
    if resume:
        if not (exp / "study.json").is_file():
            raise ValueError(f"Nothing to resume at {exp}: run the study without --resume "
                             "first (or pass the --storage it used).")
        try:
            saved = json.loads((exp / "study.json").read_text())
        except ValueError as exc:
            raise ValueError(f"{exp / 'study.json'} is unreadable ({exc}): start the study "
                             "again with --overwrite.") from None
        study = load_study(saved)
        earlier = [d for d in exp.glob("trainable_*") if d.is_dir()]
    elif exp.exists():
        if not overwrite:
            raise ValueError(f"{exp} already holds an experiment: pass --resume to continue "
                             "it, --overwrite to start again, or another --storage.")
        shutil.rmtree(exp)
    if not ray.is_initialized():
        # absolute: trials run in their own working directories (and on other nodes)
        env = {k: str(Path(os.environ[k]).resolve()) for k in ("RAY_ROBUST_DATA_DIR",)
               if k in os.environ}
        # "local": a new instance, never another user's cluster found in /tmp/ray
        target = address or os.environ.get("RAY_ADDRESS") or "local"
        if target == "local":
            # the instance started here inherits this environment; a job runtime_env would
            # make Ray start new workers for the trials instead of using the ones it prestarts
            # at ray.init (2 trial actors ready in 3.5-8 s instead of 0.6-1 s, measured)
            os.environ.update(env)
            env = {}
        ray.init(address=target, include_dashboard=False, log_to_driver=False,
                 configure_logging=False, runtime_env={"env_vars": env} if env else None)
    n_trials = len(study.trial_configs())
    slots = _check_fits(study, exp)
    shape = " × ".join(f"{a} {len(_axis_values(study.param_space[a]))}" for a in study.axes)
    say(f"study {study.experiment_name}: {n_trials} trials ({shape})"
        f"{', resuming' if resume else ''} -> {exp}")
    t0 = time.perf_counter()
    # a resumed study is a new Tune run of the whole grid: each trial continues from its own
    # record in the progress store (a finished one only reports its end again), never from
    # Tune's experiment snapshot (see trainable)
    if not resume:
        exp.mkdir(parents=True, exist_ok=True)
        write_json_atomic(exp / "study.json", study.to_dict(), indent=1)
    fn = tune.with_resources(tune.with_parameters(trainable, experiment_dir=str(exp)),
                             trial_resources)
    tuner = tune.Tuner(
        fn,
        param_space=study.param_space,
        tune_config=tune.TuneConfig(metric=study.metric, mode=study.mode,
                                    reuse_actors=True, scheduler=_no_steal_scheduler(),
                                    max_concurrent_trials=slots),
        run_config=tune.RunConfig(
            name=study.experiment_name, storage_path=str(storage_path), verbose=verbose,
            callbacks=[*_loggers(), *([_trial_log_class()(n_trials, say, study.axes)]
                                      if log and verbose == 0 else [])],
            failure_config=tune.FailureConfig(max_failures=study.max_failures),
        ),
    )
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    with _env(TUNE_DISABLE_AUTO_CALLBACK_LOGGERS="1"), _without_tune_restore_hint():
        grid = tuner.fit()  # (TUNE_DISABLE_AUTO_CALLBACK_LOGGERS: the loggers are _loggers())
    seconds = time.perf_counter() - t0
    if resume:
        _set_aside(exp, earlier, replaced={trial_key(r.config or {}) for r in grid})
    results = grid.get_dataframe()
    if grid.num_errors:
        for r in grid:
            if r.error is not None:
                lines = [ln for ln in str(r.error).splitlines() if ln.strip()]
                point = {a: (r.config or {}).get(a) for a in study.axes}
                say(f"  trial {point} failed: {lines[-1] if lines else type(r.error).__name__}")
        say(f"{grid.num_errors} of {len(grid)} trials failed; their rows are missing from the "
            "tables (see the trial logs under the experiment folder).")
    # Tune creates trials as slots free up: an interrupted run may not have created them all
    finished = sum(1 for r in grid if r.error is None and not _unfinished(r))
    unfinished = n_trials - finished - grid.num_errors
    if unfinished:
        say(f"{unfinished} of {n_trials} trials did not finish (interrupted): continue with "
            f"--resume (Python: resume=True) and the same storage.")
    res = finish_study(study, results, exp, num_errors=grid.num_errors, seconds=seconds,
                       log=say)
    res.num_unfinished = unfinished
    return res


def _is_missing(value: Any) -> bool:
    return isinstance(value, float) and np.isnan(value)


def _rounds_of(values: Mapping[str, Any]) -> int:
    """T of a trial's config (0 when the config cannot be rebuilt, e.g. read back from CSV)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return split_trial_config(values)[0].rounds
        except ValueError:
            return 0


def _unfinished(result) -> bool:
    return int((result.metrics or {}).get("round") or 0) < _rounds_of(result.config or {})


def _set_aside(exp: Path, earlier: list[Path], replaced: set[str]) -> None:
    """Move the trial folders of the interrupted run(s) whose trials the resumed run ran again
    (``replaced``: their keys) to ``superseded/``: the study's folder then holds one folder per
    trial, with the resumed run's reports (``resumed_from`` = the round it continued from), and
    ``superseded/`` what was logged before. When the resumed run is itself interrupted before
    Tune created every trial, the folders of the others stay for the next resume."""
    for trial_dir in earlier:
        try:
            key = trial_key(json.loads((trial_dir / "params.json").read_text()))
        except (OSError, ValueError):
            key = None  # a folder Tune created without its parameters: nothing to keep apart
        if key is None or key in replaced:
            (exp / "superseded").mkdir(exist_ok=True)
            shutil.move(str(trial_dir), str(exp / "superseded" / trial_dir.name))


def _check_fits(study: Study, exp: Path) -> int:
    """A trial that needs more CPUs than the cluster has would wait forever: fail now.

    Returns how many trials fit on the cluster at once (at most), Tune's
    ``max_concurrent_trials``: see :class:`FifoNoSteal` for why Tune should hold no more
    trials pending than can start."""
    import ray

    cpus = ray.cluster_resources().get("CPU", 0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        needs = [sum(b["CPU"] for b in trial_bundles(v)) for v in study.trial_configs()]
    if max(needs) > cpus:
        raise ValueError(
            f"Study {study.name}: a trial reserves {max(needs):g} CPUs (1 + one per Ray-engine "
            f"actor) but the cluster has {cpus:g}; lower 'actors' or use a bigger cluster.")
    return max(1, int(cpus // min(needs)))


@contextlib.contextmanager
def _env(**values: str) -> Iterator[None]:
    """Set environment variables inside the block (Tune reads these when ``fit`` starts)."""
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextlib.contextmanager
def _without_tune_restore_hint() -> Iterator[None]:
    """Drop Tune's "Resume experiment with: Tuner.restore(...)" on an interrupted run: a study
    resumes with ``--resume`` (see :func:`trainable`), which the run's own message says."""
    import logging

    def keep(record: logging.LogRecord) -> bool:
        return "Tuner.restore(" not in record.getMessage()

    tune_log = logging.getLogger("ray.tune.tune")
    tune_log.addFilter(keep)
    try:
        yield
    finally:
        tune_log.removeFilter(keep)


def _loggers() -> list:
    """Tune's result loggers minus TensorBoard: ``result.json`` and ``progress.csv`` per trial
    (the ResultGrid reads them). Tune adds a TensorBoard logger too unless
    TUNE_DISABLE_AUTO_CALLBACK_LOGGERS=1: an event file per trial, written and flushed at every
    report, ≈ 20 % of the driver's CPU samples in a Table I study (py-spy, issue 8)."""
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

    return [JsonLoggerCallback(), CSVLoggerCallback()]


def _fifo_no_steal_class() -> type:
    from ray.tune.schedulers import FIFOScheduler

    class FifoNoSteal(FIFOScheduler):
        """Tune's FIFO scheduler without the step that serializes short trials (issue 8, P3).

        Each step Tune asks the scheduler for a trial to run; FIFO names the first pending
        trial, and when that trial already has an actor starting for it while another actor
        sits idle in the reuse cache, Tune gives it the idle actor and kills the starting
        one. With trials shorter than an actor's start-up (Table I: 0.1-0.5 s against 1-5 s)
        every new actor was killed as it came up: a whole study ran on one actor while the
        other CPU started and killed actors. Naming no trial leaves both jobs to Tune's own
        queues: pending trials get actors in FIFO order, and an idle actor goes to a pending
        trial; with ``max_concurrent_trials`` = the trials that fit at once (see
        :func:`run_study_full`) a new trial without an actor is always there to take it, so
        an actor that starts is used (only the study's last trial may take an idle actor
        from one still starting).
        """

        def choose_trial_to_run(self, tune_controller):
            return None

    FifoNoSteal.__module__ = __name__
    FifoNoSteal.__qualname__ = "FifoNoSteal"
    return FifoNoSteal


def _no_steal_scheduler() -> Any:
    """A :class:`FifoNoSteal` (Tune's FIFO scheduler minus its actor stealing)."""
    return __getattr__("FifoNoSteal")()


def __getattr__(name: str) -> Any:
    # FifoNoSteal subclasses a Tune class: built on first use so that importing this module
    # does not import ray.tune; a module attribute, so Tune's pickled run state refers to it
    if name == "FifoNoSteal":
        globals()[name] = cls = _fifo_no_steal_class()
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _trial_log_class():
    from ray.tune import Callback

    class TrialLog(Callback):
        """One line per finished trial: '[k/N] axis=value ... -> error=...'."""

        def __init__(self, total: int, say: Callable[[str], None], axes: list[str]):
            self.total, self.say, self.axes, self.done = total, say, axes, 0

        def on_trial_complete(self, iteration, trials, trial, **info):
            self.done += 1
            res = trial.last_result or {}
            point = " ".join(f"{a}={trial.config.get(a)}" for a in self.axes)
            err = res.get("error")
            self.say(f"  [{self.done}/{self.total}] {point} -> error "
                     f"{err:.4f}" if err is not None else f"  [{self.done}/{self.total}] {point}")

        def on_trial_error(self, iteration, trials, trial, **info):
            self.done += 1
            self.say(f"  [{self.done}/{self.total}] {trial} FAILED")

    return TrialLog


def finish_study(study: Study, results: pd.DataFrame, exp: Path, *, num_errors: int = 0,
                 seconds: float = 0.0, log: Callable[[str], None] | None = None) -> StudyResult:
    """Write the trials CSV, the seed-aggregated summary CSV and the PNG of a study."""
    from .plots import draw_study

    exp.mkdir(parents=True, exist_ok=True)
    csv = exp / f"{study.name}_trials.csv"
    results.to_csv(csv, index=False)
    finished = results.dropna(subset=[study.metric]) if study.metric in results else results
    if len(finished) and "round" in finished:  # interrupted trials stay out of the summary
        prefix = "config/"
        rounds = [_rounds_of({k[len(prefix):]: v for k, v in row.items()
                              if k.startswith(prefix) and not _is_missing(v)})
                  for row in finished.to_dict("records")]
        finished = finished[finished["round"].to_numpy() >= np.asarray(rounds)]
    td = tidy(finished, study) if len(finished) else finished
    summary = aggregate(td, study) if len(td) else pd.DataFrame()
    summary_csv = exp / f"{study.name}_summary.csv"
    summary.to_csv(summary_csv, index=False)
    png = draw_study(study, summary, exp / f"{study.name}.png") if len(summary) else None
    if log:
        log(format_summary(study, summary))
        log(f"trials:  {csv}\nsummary: {summary_csv}\nplot:    {png}")
        log(f"({len(results)} trials, {num_errors} errors, {seconds:.1f} s)")
    return StudyResult(study, results, summary, exp, csv, summary_csv, png, num_errors, seconds)


def run_study(source: str | os.PathLike | Mapping, quick: bool = False,
              storage: str | os.PathLike | None = None, **kwargs) -> pd.DataFrame:
    """Notebook entry point: run a study with Tune and return the per-trial DataFrame.

    The CSVs and PNG are written as by ``ray-robust tune``; ``kwargs`` go to
    :func:`run_study_full` (``resume``, ``overwrite``, ``address``, ``verbose``, ``log``).
    """
    kwargs.setdefault("verbose", 0)
    kwargs.setdefault("log", None)
    return run_study_full(source, quick=quick, storage=storage, **kwargs).results


def format_summary(study: Study, summary: pd.DataFrame) -> str:
    """The summary as a small text table: x down, hue across, ``mean ± sd`` cells."""
    if summary.empty:
        return "(no finished trials)"
    x, hue = study.plot.get("x"), study.plot.get("hue")
    cell = summary["mean"].map(lambda v: f"{v:.4f}") + summary["sd"].map(
        lambda v: "" if pd.isna(v) else f" ± {v:.4f}")
    df = summary.assign(cell=cell)
    rest = [k for k in (study.plot.get("row"), study.plot.get("col")) if k]
    if x and hue and x in df and hue in df:
        index = [*rest, x] if rest else [x]
        try:
            table = df.pivot_table(index=index, columns=hue, values="cell", aggfunc="first")
            if hue == "algorithm":  # the paper's column order
                table = table[[a for a in ALGORITHMS if a in table.columns]
                              + [a for a in table.columns if a not in ALGORITHMS]]
            return f"{summary['y'].iloc[0]} (mean ± sd over seeds)\n{table.to_string()}"
        except (ValueError, TypeError):
            pass
    return df.drop(columns=["cell"]).to_string(index=False)


__all__ = [
    "TRIAL_KEYS",
    "Study",
    "StudyResult",
    "aggregate",
    "load_study",
    "progress_path",
    "run_grid_local",
    "run_study",
    "run_study_full",
    "save_trial_progress",
    "split_trial_config",
    "tidy",
    "trainable",
    "trial_key",
    "trial_progress",
    "trial_resources",
]
