"""What a user sees on the terminal (issue 18, item 4): one-line CLI errors, a progress bar only
on a terminal, times that include Ray's start and stop, Ray's own log lines kept off the
terminal, GuaranteeWarnings that point at the user's call and never give absurd advice."""

from __future__ import annotations

import io
import re
import subprocess
import sys
import time
import warnings

import numpy as np
import pytest

from ray_robust import Config, GuaranteeWarning, train
from ray_robust.terminal import Progress, ray_noise_filtered, wall_seconds


def _cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ray_robust.cli", *args], capture_output=True,
                          text=True, timeout=timeout)


@pytest.mark.parametrize("args", [["trian"], ["train", "--rounds"], ["train", "--engine", "gpu"],
                                  ["reproduce", "table2"], []])
def test_cli_error_is_one_line_not_the_usage_block(args):
    proc = _cli(*args)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("ray-robust: error: ") and "--help" in lines[0], lines[0]
    assert "usage:" not in proc.stderr


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_shows_rounds_and_eta_on_a_terminal():
    term = _Terminal()
    with Progress(40, "training", "round", stream=term) as bar:
        for t in range(1, 41):
            bar.step(t, f"loss {1 / t:.4f}")
        bar.write("a line above the bar")
    out = term.getvalue()
    assert "training" in out and "40/40" in out and "a line above the bar" in out
    assert re.search(r"<\d\d:\d\d", out), out  # tqdm's ETA: [elapsed<remaining]


def test_progress_bar_is_quiet_when_not_a_tty(data_dir):
    """Piped (as here): no bar, today's periodic lines; --quiet: neither."""
    proc = _cli("train", "--rounds", "20", "--progress", "10")
    assert proc.returncode == 0, proc.stderr
    assert "round    10" in proc.stdout and "round    20" in proc.stdout
    assert "\r" not in proc.stderr and "round/s" not in proc.stderr + proc.stdout
    quiet = _cli("train", "--rounds", "20", "--progress", "10", "--quiet")
    assert quiet.returncode == 0, quiet.stderr
    assert "round " not in quiet.stdout and "done in" in quiet.stdout
    assert "\r" not in quiet.stderr


def test_quiet_flag_hides_the_bar_on_a_terminal():
    term = _Terminal()
    with Progress(10, "training", "round", stream=term, quiet=True) as bar:
        for t in range(1, 11):
            bar.step(t)
    assert term.getvalue() == ""


def test_done_time_includes_ray_start_and_stop(data_dir):
    """The printed total is the wall time the user waited (Ray start and stop included), next
    to the training loop's own time; Ray's start-up lines are not shown."""
    t0 = time.perf_counter()
    proc = _cli("train", "--engine", "ray", "--actors", "1", "--rounds", "3")
    wall = time.perf_counter() - t0
    assert proc.returncode == 0, proc.stderr
    m = re.search(r"done in ([\d.]+) s \(training ([\d.]+) s\)", proc.stdout)
    assert m, proc.stdout
    total, training = float(m[1]), float(m[2])
    assert total <= wall + 0.1
    assert total >= training + 1.0  # starting and stopping a local Ray takes over a second
    assert total >= 0.6 * wall, (total, wall)
    for noise in ("core_worker.cc", "Token authentication", "Started a local Ray instance"):
        assert noise not in proc.stderr, proc.stderr


def test_wall_seconds_counts_from_the_process_start():
    code = ("import time; time.sleep(0.6); from ray_robust.terminal import wall_seconds; "
            "print(wall_seconds())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True).stdout
    assert 0.6 <= float(out) < 30
    assert wall_seconds() > 0


_NOISY = r"""
import os, sys
from ray_robust.terminal import ray_noise_filtered
with ray_noise_filtered(enabled=sys.argv[1] == "1"):
    os.write(2, b"[2026-12-02 06:29:56,924 E 13579 13579] core_worker.cc:2465: Actor with class "
                b"name: 'WorkerGroup' has constructor arguments in the object store\n")
    os.write(2, b"2026-12-02 06:29:43,369\tWARNING authentication_token_setup.py:85 -- Token "
                b"authentication is enabled for this Ray cluster.\n")
    os.write(2, b"Token authentication is enabled for this Ray cluster. Set RAY_AUTH_MODE\n")
    os.write(2, b"2026-12-02 06:29:43,369\tERROR worker.py:1 -- a real Ray error\n")
    print("ray-robust: warning: kept", file=sys.stderr)
    os.write(2, b"no newline at the end")
"""


@pytest.mark.parametrize("enabled", [True, False])
def test_ray_start_up_noise_is_hidden_unless_verbose(enabled):
    proc = subprocess.run([sys.executable, "-c", _NOISY, str(int(enabled))],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    err = proc.stderr
    assert "a real Ray error" in err and "ray-robust: warning: kept" in err
    assert err.endswith("no newline at the end")
    assert ("core_worker.cc" in err) is not enabled
    assert ("Token authentication" in err) is not enabled


def test_ray_noise_filter_restores_stderr():
    import os

    before = os.fstat(2)
    with ray_noise_filtered():
        assert os.fstat(2).st_ino != before.st_ino
    assert os.fstat(2).st_ino == before.st_ino


def _diverging_dro(rounds: int) -> Config:
    """A DRO baseline under the aggressive attack (plain averaging): θ runs away."""
    return Config.from_dict(dict(algorithm="dro", attack="aggressive", alpha=0.15,
                                 rounds=rounds, eval_every=rounds))


def test_guarantee_warning_for_a_diverged_run_says_it_diverged(data_dir):
    with pytest.warns(GuaranteeWarning) as caught:
        train(_diverging_dro(300))
    texts = [str(w.message) for w in caught]
    diverged = [t for t in texts if "θ diverged" in t]
    assert diverged, texts
    assert "Raise lam" not in diverged[0] and "‖θ‖ = " in diverged[0]
    assert "raising lam does not help" in diverged[0].lower()


@pytest.mark.parametrize(("scale", "says"), [(1.0, "Raise lam above"), (1e12, "θ diverged")])
def test_uncertified_epsilon_warning_for_a_diverged_run_says_it_diverged(data_dir, scale, says):
    from ray_robust import load_problem
    from ray_robust.algorithm import Server

    cfg = Config.from_dict(dict(algorithm="alg2", epsilon=0.01, lam=0.5, rounds=5))
    server = Server(cfg, load_problem(cfg))
    state = server.initial_state()
    state.theta = np.full_like(state.theta, scale)
    info = dict(wrm_steps=1, wrm_uncertified=1, wrm_samples=1, wrm_certificate_sums=[0.0])
    with pytest.warns(GuaranteeWarning) as caught:
        server._certified_info(state, info)
    assert says in str(caught[0].message)
    assert ("Raise lam" in str(caught[0].message)) is (scale == 1.0)


def test_guarantee_warning_still_advises_lam_when_it_can_help(data_dir):
    with pytest.warns(GuaranteeWarning, match="Raise lam above"):
        train(Config.from_dict(dict(algorithm="dro", rounds=8, lam=0.05)))


def test_warnings_point_at_the_callers_file(data_dir):
    """Both kinds: the config's (given by train) and the run's (given by the server's step,
    deep in the library) name this file, at the line that called train."""
    cfg = _diverging_dro(30).replace(eta_z=0.5)  # η_z·λ ≥ 1: the config's own warning
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        line = sys._getframe().f_lineno + 1
        train(cfg)
    mine = [w for w in caught if issubclass(w.category, GuaranteeWarning)]
    assert len(mine) >= 2, [str(w.message) for w in caught]
    for w in mine:
        assert (w.filename, w.lineno) == (__file__, line), (w.filename, w.lineno, w.message)


@pytest.mark.slow
def test_warnings_point_at_the_callers_file_with_the_ray_engine(data_dir, ray_session):
    cfg = _diverging_dro(30)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        line = sys._getframe().f_lineno + 1
        train(cfg, engine="ray", actors=1)
    mine = [w for w in caught if issubclass(w.category, GuaranteeWarning)]
    assert mine
    for w in mine:
        assert (w.filename, w.lineno) == (__file__, line), (w.filename, w.lineno, w.message)


@pytest.mark.slow
def test_verbose_shows_rays_own_lines(data_dir):
    proc = _cli("train", "--engine", "ray", "--actors", "1", "--rounds", "2", "--verbose")
    assert proc.returncode == 0, proc.stderr
    assert "Started a local Ray instance" in proc.stderr


def test_tune_trial_log_pickles_without_the_terminal(tmp_path):
    """Tune pickles its callbacks into the experiment's snapshot; the per-trial printer holds the
    progress bar's stream (an open file), which stays behind."""
    from ray import cloudpickle  # what Tune pickles with

    from ray_robust.studies.driver import _trial_log_class

    seen: list[tuple[int, int]] = []
    with open(tmp_path / "terminal", "w") as stream:
        log = _trial_log_class()(4, lambda text: print(text, file=stream), ["seed"],
                                 lambda done, total: seen.append((done, total)))
        copy = cloudpickle.loads(cloudpickle.dumps(log))
    assert (copy.total, copy.axes, copy.progress) == (4, ["seed"], None)
    copy.say("printed nowhere")


@pytest.mark.slow
def test_tune_shows_the_wall_time_and_keeps_per_trial_lines_when_piped(data_dir, tmp_path):
    t0 = time.perf_counter()
    proc = _cli("tune", "tune_configs/fig4_tz.yaml", "--quick", "--storage", str(tmp_path),
                timeout=600)
    wall = time.perf_counter() - t0
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "[2/2]" in proc.stdout
    m = re.search(r"done in ([\d.]+) s \(trials ([\d.]+) s\)", proc.stdout)
    assert m and float(m[2]) < float(m[1]) <= wall + 0.1, proc.stdout[-2000:]
    quiet = _cli("tune", "tune_configs/fig4_tz.yaml", "--quick", "--storage", str(tmp_path),
                 "--overwrite", "--quiet", timeout=600)
    assert quiet.returncode == 0 and "[2/2]" not in quiet.stdout and "done in" in quiet.stdout
    assert "summary:" in quiet.stdout  # --quiet drops the per-trial lines, not the results
    assert "Token authentication" not in proc.stderr + proc.stdout
