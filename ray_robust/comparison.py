"""The aggregators × attacks study (``tune_configs/aggregators_vs_attacks.yaml``): heatmaps and
where NBS stands among the field's rules.

Input: the study's summary table (``<name>_summary.csv`` written by ``ray-robust tune``, or
:func:`ray_robust.studies.aggregate` of a local run): one row per (aggregator, attack, wrm,
shift_eps) with the ``mean`` error over seeds. Run as
``python -m ray_robust.comparison SUMMARY.csv [--out PNG]``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from .core.aggregators import AGGREGATORS
from .core.attacks import ATTACKS

AGGREGATOR_ORDER = list(AGGREGATORS)
ATTACK_ORDER = ["none", *ATTACKS]
KEYS = ("aggregator", "attack", "wrm", "shift_eps")


def _ordered(values, order) -> list:
    present = list(dict.fromkeys(values))
    return [v for v in order if v in present] + [v for v in present if v not in order]


def _check(summary: pd.DataFrame) -> pd.DataFrame:
    missing = [k for k in (*KEYS, "mean") if k not in summary.columns]
    if missing:
        raise ValueError(f"The summary table lacks column(s) {missing}; pass the study's "
                         "'<name>_summary.csv' (columns aggregator, attack, wrm, shift_eps, mean).")
    df = summary.copy()
    df["wrm"] = df["wrm"].map(lambda v: str(v).lower() in ("true", "1"))
    return df


def panels(summary: pd.DataFrame) -> dict[tuple[bool, float], pd.DataFrame]:
    """(wrm, shift_eps) → the aggregator × attack table of mean errors."""
    df = _check(summary)
    out = {}
    for (wrm, eps), part in df.groupby(["wrm", "shift_eps"], sort=True):
        table = part.pivot_table(index="aggregator", columns="attack", values="mean")
        table = table.reindex(index=_ordered(table.index, AGGREGATOR_ORDER),
                              columns=_ordered(table.columns, ATTACK_ORDER))
        out[(bool(wrm), float(eps))] = table
    return out


def nbs_standing(summary: pd.DataFrame) -> pd.DataFrame:
    """Per (wrm, shift_eps) and aggregator: the mean error over the attacks, the worst attack's
    error, and the rank (1 = best) of each; the rows of NBS show where it stands."""
    rows = []
    for (wrm, eps), table in panels(summary).items():
        attacked = table.drop(columns=[c for c in ("none",) if c in table.columns])
        stats = pd.DataFrame({
            "clean_attack_free": table["none"] if "none" in table.columns else np.nan,
            "mean_over_attacks": attacked.mean(axis=1),
            "worst_attack_error": attacked.max(axis=1),
            "worst_attack": attacked.idxmax(axis=1),
        })
        stats["rank_mean"] = stats["mean_over_attacks"].rank(method="min").astype(int)
        stats["rank_worst"] = stats["worst_attack_error"].rank(method="min").astype(int)
        stats.insert(0, "shift_eps", eps)
        stats.insert(0, "wrm", wrm)
        rows.append(stats.reset_index())
    return pd.concat(rows, ignore_index=True)


def draw_heatmaps(summary: pd.DataFrame, path: str | Path) -> Path:
    """One heatmap per (WRM, shift) panel: aggregators down, attacks across (the study's own
    ``plot: {kind: heatmap}``, drawn from a summary CSV)."""
    from .plots import draw_heatmaps as draw

    return draw(_check(summary), path, x="attack", y="aggregator", row="shift_eps", col="wrm",
                title="Aggregators × attacks on Spambase (αm = 3 of m = 20)",
                label="test misclassification rate")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ray_robust.comparison",
                                description="Heatmaps and NBS's standing from the "
                                            "aggregators_vs_attacks study's summary CSV.")
    p.add_argument("summary", help="<storage>/aggregators_vs_attacks/..._summary.csv")
    p.add_argument("--out", default=None, help="heatmap PNG (default: next to the CSV)")
    args = p.parse_args(argv)
    src = Path(args.summary)
    # the attack named "nan" must stay a string, not become a missing value
    summary = pd.read_csv(src, keep_default_na=False, na_values=[""])
    png = draw_heatmaps(summary, args.out or src.with_name(src.stem.replace(
        "_summary", "") + "_heatmap.png"))
    standing = nbs_standing(summary)
    csv = png.with_name(png.stem.replace("_heatmap", "") + "_standing.csv")
    standing.to_csv(csv, index=False)
    with pd.option_context("display.width", 160, "display.max_columns", 20):
        for (wrm, eps), part in standing.groupby(["wrm", "shift_eps"]):
            print(f"\nWRM {'on' if wrm else 'off'}, shift ε = {eps:g}")
            print(part.drop(columns=["wrm", "shift_eps"]).sort_values("mean_over_attacks")
                  .to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    print(f"\nheatmap: {png}\nstanding: {csv}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
