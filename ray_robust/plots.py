"""Study figures (matplotlib, Agg): error vs a swept parameter, one line or bar group per hue,
mean ± sd over seeds, laid out like the paper's Figures 1–4."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .config import ALGORITHM_LABELS

#: axis and legend names of the study parameters (the paper's symbols)
PRETTY = {
    "lam": "λ", "beta": "β", "alpha": "α", "t_z": "$T_z$", "eta_z": "$η_z$",
    "attack_scale": "attack scale", "shift_eps": "shift budget ε", "alpha_m": "αm",
    "beta_m": "βm", "algorithm": "algorithm", "environment": "environment",
    "beta_offset": "β − α", "error": "misclassification rate", "attack": "attack",
    "test_error": "clean test error", "test_error_shifted": "test error under shift",
    "train_loss": "train loss",
}


def _label(value: Any, column: str | None, labels: Mapping | None) -> str:
    if labels:
        for key, text in labels.items():
            if str(key) == str(value) or (_num(key) is not None and _num(key) == _num(value)):
                return str(text)
    if column == "algorithm":
        return ALGORITHM_LABELS.get(value, str(value))
    if column in ("environment",):
        return str(value)
    return f"{PRETTY.get(column, column)} = {value:g}" if isinstance(value, float | int) and \
        not isinstance(value, bool) else f"{PRETTY.get(column, column)} = {value}"


def _num(v: Any) -> float | None:
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def _order(values: pd.Series) -> list:
    uniq = list(dict.fromkeys(values.tolist()))
    if values.name == "algorithm":  # the paper's order: ERM, NBS, DRO, Alg. 2
        rank = {a: i for i, a in enumerate(ALGORITHM_LABELS)}
        return sorted(uniq, key=lambda a: rank.get(a, len(rank)))
    try:
        return sorted(uniq)
    except TypeError:
        return uniq


def draw_study(study, summary: pd.DataFrame, path: str | Path) -> Path:
    """Draw ``summary`` (from :func:`ray_robust.studies.aggregate`) as ``study.plot`` says."""
    # A bare Figure (no pyplot): drawing a study never switches the caller's backend, so a
    # notebook's inline plots keep working after run_study().
    from matplotlib.figure import Figure

    spec = dict(study.plot) or {"x": study.axes[0] if study.axes else "seed"}
    x, hue = spec["x"], spec.get("hue")
    rows_key, cols_key = spec.get("row"), spec.get("col")
    row_vals = _order(summary[rows_key]) if rows_key else [None]
    col_vals = _order(summary[cols_key]) if cols_key else [None]
    fig = Figure(figsize=(5.2 * len(col_vals), 3.8 * len(row_vals)))
    axes = fig.subplots(len(row_vals), len(col_vals), squeeze=False, sharey=True)
    ylabel = spec.get("ylabel") or PRETTY.get(summary["y"].iloc[0], summary["y"].iloc[0])
    for i, rv in enumerate(row_vals):
        for j, cv in enumerate(col_vals):
            ax = axes[i][j]
            part = summary
            if rows_key:
                part = part[part[rows_key] == rv]
            if cols_key:
                part = part[part[cols_key] == cv]
            _draw_panel(ax, part, spec, x, hue)
            title = [t for t in (
                rows_key and _label(rv, rows_key, None), cols_key and _label(cv, cols_key, None),
            ) if t]
            if title:
                ax.set_title(", ".join(title), fontsize=10)
            if i == len(row_vals) - 1:
                ax.set_xlabel(spec.get("xlabel") or PRETTY.get(x, x))
            if j == 0:
                ax.set_ylabel(ylabel)
            if spec.get("ylim"):
                ax.set_ylim(*spec["ylim"])
    handles, labels = axes[0][0].get_legend_handles_labels()
    if handles:
        axes[0][-1].legend(handles, labels, fontsize=8, title=None, loc="best")
    n_seeds = int(summary["n_seeds"].max()) if len(summary) else 0
    title = spec.get("title") or study.name
    fig.suptitle(f"{title}\n(mean ± sd over {n_seeds} seed{'s' if n_seeds != 1 else ''})",
                 fontsize=10)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    return path


def _draw_panel(ax, part: pd.DataFrame, spec: dict, x: str, hue: str | None) -> None:
    hue_vals = _order(part[hue]) if hue else [None]
    labels = spec.get("hue_labels")
    reduce = spec.get("reduce")
    if spec.get("kind", "line") == "bar":
        xs = _order(part[x])
        width = 0.8 / len(hue_vals)
        for k, hv in enumerate(hue_vals):
            sub = part[part[hue] == hv] if hue else part
            sub = sub.set_index(x).reindex(xs)
            pos = np.arange(len(xs)) + (k - (len(hue_vals) - 1) / 2) * width
            ax.bar(pos, sub["mean"], width, yerr=sub["sd"].fillna(0), capsize=2,
                   label=_label(hv, hue, labels) if hue else None)
        ax.set_xticks(np.arange(len(xs)), [str(v) for v in xs])
    else:
        for hv in hue_vals:
            sub = part[part[hue] == hv] if hue else part
            sub = sub.sort_values(x)
            xs, mean, sd = sub[x].to_numpy(float), sub["mean"].to_numpy(), sub["sd"].fillna(0)
            label = _label(hv, hue, labels) if hue else None
            if reduce and label is not None:
                label += f" (worse of {PRETTY.get(reduce['over'], reduce['over'])})"
            line = ax.plot(xs, mean, marker="o", ms=4, label=label)[0]
            ax.fill_between(xs, mean - sd.to_numpy(), mean + sd.to_numpy(), alpha=0.12,
                            color=line.get_color(), lw=0)
        if spec.get("logx"):
            ax.set_xscale("log")
    lo, hi = ax.get_xlim()
    for v in spec.get("vlines") or ():
        pos, text = (v["x"], v.get("label")) if isinstance(v, Mapping) else (v, None)
        pad = 0.04 * (hi - lo)
        ax.set_xlim(min(lo, float(pos) - pad), max(hi, float(pos) + pad))
        ax.axvline(float(pos), color="grey", ls="--", lw=1)
        if text:
            ax.annotate(str(text), (float(pos), 0.5), xycoords=("data", "axes fraction"),
                        xytext=(-3, 0), textcoords="offset points", fontsize=8, color="grey",
                        rotation=90, ha="right", va="center")
    ax.grid(alpha=0.3)
