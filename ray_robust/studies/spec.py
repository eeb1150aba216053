"""A study's spec: the YAML file, its checks and its grid. Importing this module imports no Ray.

A study file (``tune_configs/*.yaml``) holds

- ``param_space``: fixed values and ``{grid_search: [...]}`` axes over :class:`Config` fields,
  ``algorithm`` and the trial keys of :data:`TRIAL_KEYS` (seeds are a grid axis); a relative
  ``data_path`` is made absolute at load (:func:`resolve_data_path`);
- ``metric`` / ``mode``: what Tune ranks trials by (``error`` = the final test error under the
  trial's shift);
- ``quick``: overrides for a cheap run (tests, ``--quick``);
- ``plot``: how the study's PNG is drawn (see :mod:`ray_robust.plots`).

:func:`load_study` validates every grid point by parsing it into a :class:`~.trial.Trial`;
:attr:`Study.trials` keeps those, so the rest of a run never parses a trial's config again.
"""

from __future__ import annotations

import copy
import functools
import itertools
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._validation import load_yaml_mapping
from ..algorithm import METRICS
from ..config import Config
from .trial import EPS_PREFIX, TRIAL_KEYS, Trial, _canonical, parse_trial, trial_key

STUDY_KEYS = ("name", "description", "param_space", "metric", "mode", "quick", "plot",
              "max_failures")
PLOT_KEYS = ("x", "y", "hue", "kind", "col", "row", "reduce", "xlabel", "ylabel", "title",
             "vlines", "logx", "hue_labels", "ylim")
DERIVED = {"alpha_m": "αm, the number of byzantine workers",
           "beta_m": "βm, the number NBS screens"}


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

    @functools.cached_property
    def trials(self) -> tuple[Trial, ...]:
        """Every trial of :meth:`trial_configs`, parsed once (a bad grid point: ValueError)."""
        trials = []
        for values in self.trial_configs():
            try:
                trials.append(parse_trial(values))
            except ValueError as exc:
                point = {k: values[k] for k in self.axes}
                raise ValueError(f"grid point {point}: {exc}") from None
        return tuple(trials)

    def trial_for(self, values: Mapping[str, Any]) -> Trial:
        """The parsed trial of a config dict (one of :attr:`trials`, else parsed now)."""
        known = self._trials_by_key.get(trial_key(values))
        return known if known is not None else parse_trial(values)

    @functools.cached_property
    def _trials_by_key(self) -> dict[str, Trial]:
        return {t.key: t for t in self.trials}

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
    if "data_path" in space:
        folder = None if where == "<dict>" else Path(where).resolve().parent
        space["data_path"] = _resolve_data_paths(space["data_path"], folder)
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


def resolve_data_path(value: Any, study_folder: Path | None) -> Any:
    """A relative ``data_path`` made absolute before any trial runs (trials run in other
    working directories): against the study file's folder when it is there, else against the
    working directory. Anything but a relative path string is returned as given."""
    if not isinstance(value, str) or not value:
        return value
    path = Path(value).expanduser()
    if path.is_absolute():
        return str(path)
    if study_folder is not None and (study_folder / path).exists():
        return str(study_folder / path)
    return str(Path.cwd() / path)


def _resolve_data_paths(value: Any, study_folder: Path | None) -> Any:
    if _is_grid(value) and isinstance(value["grid_search"], list):
        return {"grid_search": [resolve_data_path(v, study_folder)
                                for v in value["grid_search"]]}
    return resolve_data_path(value, study_folder)


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


#: the most trials one study may have (its grid is expanded and every point parsed at load)
MAX_TRIALS = 100_000


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
    sizes = {k: len(_axis_values(v)) for k, v in study.param_space.items()}
    n_trials = math.prod(sizes.values())
    if n_trials > MAX_TRIALS:
        axes = " × ".join(f"{k} {n}" for k, n in sizes.items() if n > 1)
        raise _study_error(where, f"the grid has {n_trials:,} trials ({axes}), more than "
                                  f"{MAX_TRIALS:,}: split it into several studies or fix some "
                                  "axes.")
    try:
        study.trials  # noqa: B018 (parses every grid point once; kept for the run)
    except ValueError as exc:
        raise _study_error(where, str(exc)) from None
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

