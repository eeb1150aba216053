"""Every study's figure is readable: drawn from synthetic trial results (no Ray, no training) at
quick and full size, it must fit its canvas, keep tick labels apart, draw vertical markers inside
the axes and tell lines that lie on top of each other apart."""

from __future__ import annotations

import functools
import itertools
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.lines import Line2D
from matplotlib.text import Text

from ray_robust.algorithm import METRICS
from ray_robust.plots import study_figure
from ray_robust.studies.results import aggregate, tidy
from ray_robust.studies.spec import Study, load_study
from ray_robust.studies.trial import EPS_PREFIX

STUDIES = sorted(Path(__file__).resolve().parents[1].joinpath("tune_configs").glob("*.yaml"))
CASES = [pytest.param(path, quick, id=f"{path.stem}-{'quick' if quick else 'full'}")
         for path in STUDIES for quick in (True, False)]
#: pixels two tick labels may share (anti-aliasing), and a text may stick out of the canvas
TOLERANCE_PX = 1.0


def synthetic_results(study: Study, seed: int = 0) -> pd.DataFrame:
    """Tune's results table for every trial of ``study``, with seeded random errors; every
    second hue value repeats the first one's errors, so that some lines coincide (a collapse)."""
    rng = np.random.default_rng(seed)
    rows = []
    for values in study.trial_configs():
        row = {f"config/{k}": v for k, v in values.items()}
        row.update({m: float(rng.uniform(0.05, 0.9)) for m in METRICS if m != "round"})
        row["error"] = row["test_error_shifted"]
        for eps in study.eval_shift_eps or ():
            row[f"{EPS_PREFIX}{eps:g}"] = float(rng.uniform(0.05, 0.9))
        rows.append(row)
    return pd.DataFrame(rows)


@functools.cache
def rendered(path: Path, quick: bool):
    study = load_study(path, quick=quick)
    summary = aggregate(tidy(synthetic_results(study), study), study)
    hue = study.plot.get("hue")
    if hue and study.plot.get("kind") == "line":  # make two hues coincide where they can
        values = list(dict.fromkeys(summary[hue]))
        if len(values) > 1:
            first = summary[summary[hue] == values[0]]
            keys = [k for k in summary.columns if k not in (hue, "mean", "sd", "n_seeds", "y")]
            merged = summary.merge(first[[*keys, "mean"]], on=keys, how="left",
                                   suffixes=("", "_first"))
            summary = summary.assign(mean=merged["mean_first"].fillna(merged["mean"]).values)
    fig = study_figure(study, summary)
    FigureCanvasAgg(fig).draw()  # what savefig renders with
    return study, fig, fig.canvas.get_renderer()


def _drawn_texts(fig) -> list[Text]:
    """Every text the figure shows: tick labels of ticks in view, and all other texts."""
    ticks, shown = set(), []
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            for tick in (*axis.get_major_ticks(), *axis.get_minor_ticks()):
                ticks |= {id(tick.label1), id(tick.label2)}
            shown += _shown_tick_labels(ax, "x" if axis is ax.xaxis else "y")
    others = [t for t in fig.findobj(Text) if id(t) not in ticks]
    return [t for t in others + shown if t.get_visible() and t.get_text().strip()]


@pytest.mark.parametrize(("path", "quick"), CASES)
def test_every_study_plot_fits_its_canvas(path, quick):
    study, fig, renderer = rendered(path, quick)
    canvas = fig.bbox
    outside = []
    for text in _drawn_texts(fig):
        box = text.get_window_extent(renderer)
        if (box.x0 < canvas.x0 - TOLERANCE_PX or box.y0 < canvas.y0 - TOLERANCE_PX
                or box.x1 > canvas.x1 + TOLERANCE_PX or box.y1 > canvas.y1 + TOLERANCE_PX):
            outside.append(text.get_text())
    assert not outside, f"{study.name}: text cut off at the canvas's edge: {outside}"
    tight = fig.get_tightbbox(renderer)  # inches, every artist in the layout
    full = fig.bbox_inches
    assert tight.x0 >= full.x0 - 0.02 and tight.y0 >= full.y0 - 0.02
    assert tight.x1 <= full.x1 + 0.02 and tight.y1 <= full.y1 + 0.02, (
        f"{study.name}: the figure's artists reach {tight} beyond its canvas {full}")


def _shown_tick_labels(ax: Axes, which: str) -> list[Text]:
    axis = ax.xaxis if which == "x" else ax.yaxis
    lo, hi = sorted(axis.get_view_interval())
    shown = []
    for ticks in (axis.get_major_ticks(), axis.get_minor_ticks()):
        for tick in ticks:
            label = tick.label1
            loc = tick.get_loc()
            if (loc is not None and lo - 1e-9 * (abs(lo) + 1) <= loc <= hi + 1e-9 * (abs(hi) + 1)
                    and label.get_visible() and label.get_text().strip()):
                shown.append(label)
    return shown


def _size_along_text(text: Text, renderer) -> tuple[float, float]:
    """(width, height) in pixels of ``text`` as if it were not rotated."""
    angle = text.get_rotation()
    text.set_rotation(0)
    box = text.get_window_extent(renderer)
    text.set_rotation(angle)
    return box.width, box.height


def _too_close(a: Text, b: Text, renderer) -> bool:
    """Whether two tick labels (of one axis: the same rotation) overlap or stand closer than
    half an em, measured along and across their (possibly rotated) text direction."""
    gap = 0.5 * max(a.get_fontsize(), b.get_fontsize()) * renderer.dpi / 72
    theta = np.deg2rad(a.get_rotation())
    along, across = np.array([np.cos(theta), np.sin(theta)]), np.array([-np.sin(theta),
                                                                       np.cos(theta)])
    (wa, ha), (wb, hb) = _size_along_text(a, renderer), _size_along_text(b, renderer)
    ca = np.array(a.get_window_extent(renderer).get_points().mean(axis=0))
    cb = np.array(b.get_window_extent(renderer).get_points().mean(axis=0))
    d = cb - ca
    return (abs(d @ along) < (wa + wb) / 2 + gap) and (abs(d @ across) < (ha + hb) / 2 + gap)


@pytest.mark.parametrize(("path", "quick"), CASES)
def test_every_study_plot_has_tick_labels_apart(path, quick):
    study, fig, renderer = rendered(path, quick)
    clashes = []
    for ax in fig.axes:
        for which in ("x", "y"):
            clashes += [(a.get_text(), b.get_text()) for a, b in
                        itertools.combinations(_shown_tick_labels(ax, which), 2)
                        if _too_close(a, b, renderer)]
    assert not clashes, f"{study.name}: tick labels run into each other: {clashes}"


def _vertical_markers(ax: Axes) -> list[Line2D]:
    """The ``axvline`` lines of ``ax``: x constant in data, y spanning the axes (0 → 1)."""
    out = []
    for line in ax.get_lines():
        xs, ys = np.asarray(line.get_xdata(), float), np.asarray(line.get_ydata(), float)
        if xs.size == 2 and xs[0] == xs[1] and list(ys) == [0.0, 1.0]:
            out.append(line)
    return out


@pytest.mark.parametrize(("path", "quick"), CASES)
def test_every_study_plot_draws_vertical_markers_inside_the_axes(path, quick):
    study, fig, _ = rendered(path, quick)
    wanted = len(study.plot.get("vlines") or ())
    for ax in fig.axes:
        if not ax.get_lines() and not ax.patches:  # a colour bar
            continue
        markers = _vertical_markers(ax)
        assert len(markers) == wanted, f"{study.name}: {len(markers)} of {wanted} markers"
        lo, hi = sorted(ax.get_xlim())
        for line in markers:
            x = float(line.get_xdata()[0])
            assert lo < x < hi, f"{study.name}: the marker at x = {x} is outside [{lo}, {hi}]"


@pytest.mark.parametrize(("path", "quick"), CASES)
def test_every_study_plot_tells_coinciding_lines_apart(path, quick):
    """Lines of one panel differ in marker and in line style, so that one lying on another
    (two algorithms that collapse to the same error) still shows both."""
    study, fig, _ = rendered(path, quick)
    for ax in fig.axes:
        lines = [ln for ln in ax.get_lines() if ln not in _vertical_markers(ax)
                 and ln.get_label() and not ln.get_label().startswith("_")]
        markers = [ln.get_marker() for ln in lines]
        styles = [ln.get_linestyle() for ln in lines]
        assert len(set(markers)) == len(lines), f"{study.name}: lines share a marker {markers}"
        assert len(set(styles)) == len(lines), f"{study.name}: lines share a style {styles}"
        hollow = [ln.get_markerfacecolor() for ln in lines]
        if len(lines) > 1:
            assert all(c == "none" for c in hollow), (
                f"{study.name}: filled markers of coinciding lines hide each other")
