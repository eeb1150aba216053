"""The real ``ray-robust`` entry point, run as a user runs it (subprocess, tiny budgets)."""

from __future__ import annotations

import subprocess
import sys

import pandas as pd
import pytest


def _cli(*args, cwd=None, check_ok=True):
    proc = subprocess.run([sys.executable, "-m", "ray_robust.cli", *args], capture_output=True,
                          text=True, cwd=cwd, timeout=300)
    if check_ok:
        assert proc.returncode == 0, proc.stderr
    return proc


def test_train_prints_progress_and_summary(data_dir, tmp_path):
    out = _cli("train", "--algorithm", "alg2", "--alpha", "0.15", "--attack", "aggressive",
               "--rounds", "20", "--progress", "10", "--out", str(tmp_path)).stdout
    assert "round    10" in out and "round    20" in out and "done in" in out
    assert pd.read_csv(tmp_path / "metrics.csv")["round"].iloc[-1] == 20


def test_train_from_yaml_with_flag_override(data_dir, tmp_path):
    cfg = tmp_path / "run.yaml"
    cfg.write_text("algorithm: dro\nrounds: 7\nlam: 2.0\n")
    out = _cli("train", "--config", str(cfg), "--rounds", "4", "--progress", "2").stdout
    assert "dro" in out and "round     4" in out and "round     6" not in out


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["train", "--beta", "1.5"], "'beta'"),
        (["train", "--lam", "0"], "'lam'"),
        (["train", "--attack", "meteor"], "'attack'"),
        (["train", "--config", "no/such.yaml"], "No config file"),
        (["train", "--data-path", "no/such/dir"], "No Spambase file"),
        (["train", "--progress", "0"], "'progress_every'"),
    ],
)
def test_bad_input_is_one_line_and_status_2(args, needle, data_dir):
    proc = _cli(*args, check_ok=False)
    assert proc.returncode == 2
    assert needle in proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_a_failed_run_is_one_line_and_status_1(data_dir):
    """A run that fails (not its input): a round timeout no worker can meet leaves no valid
    message, so the Ray engine's AggregationError ends the run with status 1, no traceback."""
    proc = _cli("train", "--engine", "ray", "--actors", "1", "--round-timeout", "1e-6",
                "--rounds", "3", check_ok=False)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("ray-robust: error: Round 1 of 3: NBS: no valid message"), last


def test_malformed_yaml(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("rounds: [1, 2\n")
    proc = _cli("train", "--config", str(bad), check_ok=False)
    assert proc.returncode == 2 and "not valid YAML" in proc.stderr
    bad.write_text("- just\n- a list\n")
    proc = _cli("train", "--config", str(bad), check_ok=False)
    assert proc.returncode == 2 and "mapping" in proc.stderr


def test_reproduce_table1_writes_the_table(data_dir, tmp_path):
    out = _cli("reproduce", "table1", "--seeds", "2", "--rounds", "30", "--out",
               str(tmp_path)).stdout
    assert "Alg. 2" in out and "E4" in out and "[0.278]" in out
    summary = pd.read_csv(tmp_path / "table1.csv")
    assert len(summary) == 20 and (summary["n_seeds"] == 2).all()
    assert len(pd.read_csv(tmp_path / "table1_runs.csv")) == 40
