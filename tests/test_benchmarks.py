"""``python -m benchmarks --quick`` (issue 8) still runs and writes every benchmark's ratio.

No assertion on time: benchmarks never gate CI. The quick sizes make the run a few seconds of
compute (plus Ray start-ups), in its own process with its own Ray instance.
"""

from __future__ import annotations

import csv
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
IDS = ["P1", "P2", "P3", "P4", "P5", "P6"]


@pytest.mark.slow
def test_quick_benchmarks_write_every_id(tmp_path, data_dir):
    out = tmp_path / "bench.csv"
    env = {**os.environ, "RAY_ROBUST_DATA_DIR": str(data_dir), "RAY_USAGE_STATS_ENABLED": "0"}
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--out", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = list(csv.DictReader(out.open()))
    assert sorted({r["id"] for r in rows}) == IDS
    for r in rows:
        assert math.isfinite(float(r["ratio"])), r
        assert r["quick"] == "True"
        assert (r["met"] in ("yes", "NO")) == bool(r["target"]), r
    assert "load average" in proc.stdout
    for i in IDS:  # the printed table names every id too
        assert any(line.startswith(i) for line in proc.stdout.splitlines()), i


def test_only_rejects_unknown_ids():
    proc = subprocess.run([sys.executable, "-m", "benchmarks", "--only", "P1,P9"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "P9" in proc.stderr and "P1, P2" in proc.stderr


@pytest.mark.parametrize("only", ["P6", "p5,P6"])
def test_only_runs_the_selection_and_profiles_it(tmp_path, only):
    out, prof = tmp_path / "b.csv", tmp_path / "prof"
    proc = subprocess.run([sys.executable, "-m", "benchmarks", "--quick", "--only", only,
                           "--out", str(out), "--profile", str(prof)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ids = {s.upper() for s in only.split(",")}
    assert {r["id"] for r in csv.DictReader(out.open())} == ids
    # one pyinstrument profile per benchmark run, naming the code it timed
    assert {p.stem for p in prof.iterdir()} == ids
    assert "nbs" in (prof / "P6.txt").read_text()


def test_benchmarks_only_keeps_other_rows(tmp_path, data_dir):
    """``--only P6`` into an existing results file replaces P6's rows and keeps every other
    id's rows as they were, in the file's order."""
    out = tmp_path / "results.csv"
    out.write_text((ROOT / "benchmarks" / "results.csv").read_text())
    before = list(csv.DictReader(out.open()))
    assert {r["id"] for r in before} >= {"P1", "P6"}
    proc = subprocess.run([sys.executable, "-m", "benchmarks", "--quick", "--only", "P6",
                           "--out", str(out)], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    after = list(csv.DictReader(out.open()))
    assert [r for r in after if r["id"] != "P6"] == [r for r in before if r["id"] != "P6"]
    assert [r["quick"] for r in after if r["id"] == "P6"] == ["True"] * sum(
        r["id"] == "P6" for r in after) and any(r["id"] == "P6" for r in after)
    assert [r["id"] for r in after] == sorted((r["id"] for r in after),
                                              key=["P6", "P4", "P1", "P2", "P5", "P3"].index)
    assert "kept the rows of P4, P1, P2, P5, P3" in proc.stdout
