"""Study figures (matplotlib, Agg): error vs a swept parameter, one line or bar group per hue,
mean ± sd over seeds, laid out like the paper's Figures 1–4."""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .config import ALGORITHM_LABELS
from .core.aggregators import AGGREGATORS
from .core.attacks import ATTACKS

REGISTRY_ORDER = {
    "algorithm": list(ALGORITHM_LABELS),
    "aggregator": list(AGGREGATORS),
    "attack": ["none", *ATTACKS],
}

#: axis and legend names of the study parameters (the paper's symbols)
PRETTY = {
    "lam": "λ", "beta": "β", "alpha": "α", "t_z": "$T_z$", "eta_z": "$η_z$",
    "attack_scale": "attack scale", "shift_eps": "shift budget ε", "alpha_m": "αm",
    "beta_m": "βm", "algorithm": "algorithm", "environment": "environment",
    "beta_offset": "β − α", "error": "misclassification rate", "attack": "attack",
    "test_error": "clean test error", "test_error_shifted": "test error under shift",
    "train_loss": "train loss",
}


#: per hue of a line plot: marker and line style (a hue's line differs from every other's)
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
LINESTYLES = ("-", "--", "-.", ":", (0, (5, 1, 1, 1, 1, 1)), (0, (1, 3)), (0, (8, 2)),
              (0, (3, 1, 3, 1, 1, 1)))


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
    registry = REGISTRY_ORDER.get(str(values.name))
    if registry is not None:  # the paper's order (ERM, NBS, DRO, Alg. 2), or the registry's
        rank = {a: i for i, a in enumerate(registry)}
        return sorted(uniq, key=lambda a: rank.get(a, len(rank)))
    try:
        return sorted(uniq)
    except TypeError:
        return uniq


def draw_study(study, summary: pd.DataFrame, path: str | Path) -> Path:
    """Draw ``summary`` (from :func:`ray_robust.studies.aggregate`) as ``study.plot`` says."""
    fig = study_figure(study, summary)
    return _save(fig, path, dpi=130 if study.plot.get("kind") == "heatmap" else 120)


def _save(fig, path: str | Path, dpi: int) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    return path


def study_figure(study, summary: pd.DataFrame):
    """The :class:`~matplotlib.figure.Figure` of :func:`draw_study` (not saved)."""
    # A bare Figure (no pyplot): drawing a study never switches the caller's backend, so a
    # notebook's inline plots keep working after run_study().
    from matplotlib.figure import Figure

    spec = dict(study.plot) or {"x": study.axes[0] if study.axes else "seed"}
    if spec.get("kind") == "heatmap":
        return heatmap_figure(summary, x=spec["x"], y=spec["hue"], row=spec.get("row"),
                              col=spec.get("col"), title=spec.get("title") or study.name,
                              label=spec.get("ylabel") or "mean over seeds")
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
    _fit_tick_labels(fig)
    return fig


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
        for k, hv in enumerate(hue_vals):
            sub = part[part[hue] == hv] if hue else part
            sub = sub.sort_values(x)
            xs, mean, sd = sub[x].to_numpy(float), sub["mean"].to_numpy(), sub["sd"].fillna(0)
            label = _label(hv, hue, labels) if hue else None
            if reduce and label is not None:
                label += f" (worse of {PRETTY.get(reduce['over'], reduce['over'])})"
            # each hue its own marker and dash, markers open and shrinking: a line lying on
            # another (two algorithms that collapse alike) still shows through
            line = ax.plot(xs, mean, marker=MARKERS[k % len(MARKERS)],
                           ls=LINESTYLES[k % len(LINESTYLES)], ms=7 - 4 * k / len(hue_vals),
                           mfc="none", mew=1.2, label=label)[0]
            ax.fill_between(xs, mean - sd.to_numpy(), mean + sd.to_numpy(), alpha=0.12,
                            color=line.get_color(), lw=0)
        if spec.get("logx"):
            ax.set_xscale("log")
    vlines = [(float(v["x"]), v.get("label")) if isinstance(v, Mapping) else (float(v), None)
              for v in spec.get("vlines") or ()]
    if vlines:
        _fit_xlim(ax, [pos for pos, _ in vlines], log=bool(spec.get("logx")))
    for pos, text in vlines:
        ax.axvline(pos, color="grey", ls="--", lw=1)
        if text:
            ax.annotate(str(text), (pos, 0.5), xycoords=("data", "axes fraction"),
                        xytext=(-3, 0), textcoords="offset points", fontsize=8, color="grey",
                        rotation=90, ha="right", va="center")
    ax.grid(alpha=0.3)


def _fit_xlim(ax, positions: list[float], *, log: bool, pad: float = 0.06) -> None:
    """Widen the x-limits to hold every marker at ``positions`` with ``pad`` of the span free
    beside it (in log space on a log axis), so each marker and its label lie inside the axes."""
    to, back = (np.log10, lambda v: 10.0 ** v) if log else (float, float)
    lo, hi = (to(v) for v in ax.get_xlim())
    marks = [to(p) for p in positions if p > 0 or not log]
    if not marks:
        return
    margin = pad * (max(hi, *marks) - min(lo, *marks))
    ax.set_xlim(back(min(lo, min(marks) - margin)), back(max(hi, max(marks) + margin)))


def _fit_tick_labels(fig) -> None:
    """Tilt an axes' x tick labels by 30° where, laid out flat, two of them would stand closer
    than half an em (long category names under bars), then lay the figure out again."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    renderer = FigureCanvasAgg(fig).get_renderer()
    tilted = False
    for ax in fig.axes:
        labels = [t for t in ax.get_xticklabels() if t.get_text().strip()]
        boxes = sorted((t.get_window_extent(renderer) for t in labels), key=lambda b: b.x0)
        gap = 0.5 * max((t.get_fontsize() for t in labels), default=0) * fig.dpi / 72
        if any(b.x0 - a.x1 < gap for a, b in itertools.pairwise(boxes)):
            ax.tick_params(axis="x", labelrotation=30)
            for t in ax.get_xticklabels():
                t.set_horizontalalignment("right")
                t.set_rotation_mode("anchor")
            tilted = True
    if tilted:
        fig.tight_layout()


def draw_heatmaps(summary: pd.DataFrame, path: str | Path, *, x: str, y: str,
                  row: str | None = None, col: str | None = None, title: str = "",
                  label: str = "mean over seeds") -> Path:
    """One heatmap per (row, col) panel: ``y`` down, ``x`` across, the seed-mean in each cell,
    one colour scale for all panels (``plot: {kind: heatmap, x: …, hue: …}`` in a study)."""
    fig = heatmap_figure(summary, x=x, y=y, row=row, col=col, title=title, label=label)
    return _save(fig, path, dpi=130)


def heatmap_figure(summary: pd.DataFrame, *, x: str, y: str, row: str | None = None,
                   col: str | None = None, title: str = "", label: str = "mean over seeds"):
    """The :class:`~matplotlib.figure.Figure` of :func:`draw_heatmaps` (not saved)."""
    from matplotlib.figure import Figure

    row_vals = _order(summary[row]) if row else [None]
    col_vals = _order(summary[col]) if col else [None]
    xs, ys = _order(summary[x]), _order(summary[y])
    fig = Figure(figsize=(max(7.0, 1.5 + 0.62 * len(xs) * len(col_vals)),
                          1.2 + 0.48 * len(ys) * len(row_vals)), constrained_layout=True)
    axes = fig.subplots(len(row_vals), len(col_vals), squeeze=False)
    vmax = float(np.nanmax(summary["mean"].to_numpy(float))) if len(summary) else 1.0
    image = None
    for r, rv in enumerate(row_vals):
        for c, cv in enumerate(col_vals):
            ax, part = axes[r][c], summary
            if row:
                part = part[part[row] == rv]
            if col:
                part = part[part[col] == cv]
            vals = part.pivot_table(index=y, columns=x, values="mean").reindex(
                index=ys, columns=xs).to_numpy(float)
            image = ax.imshow(vals, cmap="viridis_r", vmin=0.0, vmax=vmax, aspect="auto")
            for (i, j), v in np.ndenumerate(vals):
                if np.isfinite(v):
                    ax.text(j, i, f"{v:.2f}"[1:] if 0 <= v < 1 else f"{v:.1f}", ha="center",
                            va="center", fontsize=6.5,
                            color="white" if v > 0.55 * vmax else "black")
            ax.set_xticks(range(len(xs)), [str(v) for v in xs], rotation=60, ha="right",
                          fontsize=7)
            ax.set_yticks(range(len(ys)), [str(v) for v in ys], fontsize=7)
            panel = [t for t in (row and _label(rv, row, None), col and _label(cv, col, None))
                     if t]
            if panel:
                ax.set_title(", ".join(panel), fontsize=9)
    if image is not None:
        fig.colorbar(image, ax=axes, shrink=0.6, label=label)
    n_seeds = int(summary["n_seeds"].max()) if "n_seeds" in summary and len(summary) else 0
    fig.suptitle(f"{title}\n(mean over {n_seeds} seed{'s' if n_seeds != 1 else ''})"
                 if n_seeds else title, fontsize=10)
    return fig
