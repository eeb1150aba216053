"""A study's results: the tidy table (one row per trial and ε), mean ± sd over seeds, the text
summary, and :func:`finish_study`, which writes the CSVs and hands the summary to the plot."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..config import ALGORITHMS, Config
from ..core.aggregators import n_to_screen
from ..reproduce import ENVIRONMENTS
from .spec import Study
from .trial import EPS_PREFIX


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
    if not keys:  # only seeds vary: one row over all of them
        col = df[y]
        return pd.DataFrame({"y": [y], "mean": [col.mean()], "sd": [col.std(ddof=1)],
                             "n_seeds": [col.size]})
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


def _is_missing(value: Any) -> bool:
    return isinstance(value, float) and np.isnan(value)


def rounds_of(study: Study, values: Mapping[str, Any]) -> int:
    """T of a trial's config (its parsed trial in ``study``; 0 when the config cannot be
    rebuilt, e.g. read back from CSV)."""
    try:
        return study.trial_for(values).config.rounds
    except ValueError:
        return 0


def finish_study(study: Study, results: pd.DataFrame, exp: Path, *, num_errors: int = 0,
                 seconds: float = 0.0, log: Callable[[str], None] | None = None) -> StudyResult:
    """Write the trials CSV, the seed-aggregated summary CSV and the PNG of a study."""
    from ..plots import draw_study

    exp.mkdir(parents=True, exist_ok=True)
    csv = exp / f"{study.name}_trials.csv"
    results.to_csv(csv, index=False)
    finished = results.dropna(subset=[study.metric]) if study.metric in results else results
    if len(finished) and "round" in finished:  # interrupted trials stay out of the summary
        prefix = "config/"
        rounds = [rounds_of(study, {k[len(prefix):]: v for k, v in row.items()
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

