"""Bounded waits at Ray start-up and when the cluster's GCS dies (issue 14, item 8).

Every Ray here runs in a subprocess (the CLI), so the test session's shared Ray is untouched.
"""

from __future__ import annotations

import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from ray_robust.engines.ray_engine import (
    CONNECT_TIMEOUT_ENV,
    GCS_LOSS_GRACE_S,
    _start_time,
    _wait_for_cluster,
    connect_timeout,
    descendants,
)

ROOT = Path(__file__).resolve().parents[1]


def _cli(*args: str, **env: str) -> subprocess.Popen:
    """``python -m ray_robust.cli ARGS`` from this worktree, unbuffered, env overrides."""
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1", **env}
    full_env.pop("RAY_ADDRESS", None)
    return subprocess.Popen([sys.executable, "-m", "ray_robust.cli", *args], env=full_env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("ray-robust: error:")]


def test_unreachable_address_is_a_one_line_cli_error_within_the_connect_timeout():
    """Before: ray.init retried an unreachable GCS for > 5 minutes (measured)."""
    t0 = time.monotonic()
    proc = _cli("train", "--engine", "ray", "--address", "127.0.0.1:1", "--rounds", "2",
                **{CONNECT_TIMEOUT_ENV: "3"})
    _, stderr = proc.communicate(timeout=120)
    elapsed = time.monotonic() - t0
    assert proc.returncode == 2, stderr
    assert "Traceback" not in stderr
    (line,) = _error_lines(stderr)
    assert "127.0.0.1:1" in line and "within 3 s" in line and CONNECT_TIMEOUT_ENV in line
    assert 3 <= elapsed < 3 + 30, elapsed  # waited the bound, not Ray's minutes


@pytest.mark.parametrize("value", ["abc", "0", "-5", "nan", "inf"])
def test_bad_connect_timeout_is_a_clear_error_naming_the_variable(monkeypatch, value):
    monkeypatch.setenv(CONNECT_TIMEOUT_ENV, value)
    with pytest.raises(ValueError, match=rf"{CONNECT_TIMEOUT_ENV} must be a number of seconds "
                                         rf"> 0.*Got '{value}'"):
        connect_timeout()


def test_connect_timeout_defaults_and_reads_seconds(monkeypatch):
    monkeypatch.delenv(CONNECT_TIMEOUT_ENV, raising=False)
    assert connect_timeout() == 30.0
    monkeypatch.setenv(CONNECT_TIMEOUT_ENV, "2.5")
    assert connect_timeout() == 2.5


def test_bad_connect_timeout_is_a_one_line_cli_error():
    proc = _cli("train", "--engine", "ray", "--rounds", "2", **{CONNECT_TIMEOUT_ENV: "soon"})
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 2, stderr
    (line,) = _error_lines(stderr)
    assert CONNECT_TIMEOUT_ENV in line and "'soon'" in line
    assert "Started a local Ray instance" not in stderr  # refused before starting Ray


def test_wait_for_cluster_returns_once_the_port_answers():
    """A cluster still starting is waited for: the port opens 1 s after the wait begins."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = socket.socket()

    def listen_later():
        time.sleep(1.0)
        server.bind(("127.0.0.1", port))
        server.listen()

    thread = threading.Thread(target=listen_later)
    t0 = time.monotonic()
    thread.start()
    try:
        left = _wait_for_cluster(f"127.0.0.1:{port}", 20.0)
    finally:
        thread.join()
        server.close()
    assert 1.0 <= time.monotonic() - t0 < 10.0
    assert 0 < left < 20.0


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_gcs_killed_mid_run_is_server_died_error_not_a_silent_exit():
    """Before: the driver kept waiting, then Ray ended it 60 s later without a word (exit
    status 0, no result), leaving the dashboard and runtime-env agents running, orphaned."""
    proc = _cli("train", "--engine", "ray", "--actors", "2", "--rounds", "1000000",
                "--progress", "20")
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(x) for x in proc.stdout], daemon=True).start()
    try:
        deadline = time.monotonic() + 180
        while "round" not in lines.get(timeout=max(1.0, deadline - time.monotonic())):
            pass  # until the run prints its first progress rows
        lines.get(timeout=60)
        started = descendants(proc.pid)  # the run's Ray: GCS, raylet, agents, actors
        (gcs_pid,) = [p for p in started if b"gcs_server" in _cmdline(p)]
        assert len(started) >= 5, started
        os.kill(gcs_pid, signal.SIGKILL)
        t_kill = time.monotonic()
        _, stderr = proc.communicate(timeout=GCS_LOSS_GRACE_S + 50)  # Ray's own limit: 60 s
    finally:
        if proc.poll() is None:
            proc.kill()
    seconds = time.monotonic() - t_kill
    assert proc.returncode == 1, stderr[-2000:]
    (line,) = _error_lines(stderr)
    assert "GCS" in line and "stopped answering" in line
    assert seconds < 45, seconds
    time.sleep(2)  # SIGKILLed orphans vanish once init reaps them
    left = [(p, _cmdline(p)) for p, t in started.items() if _start_time(p) == t]
    assert not left, left


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def test_dashboard_without_its_packages_is_one_line_before_ray_starts(data_dir):
    """`--dashboard` without ray[default]: one line naming the extra (Ray raised deep inside
    ray.init: a traceback). Skipped where the packages are installed."""
    import importlib.util

    if importlib.util.find_spec("aiohttp") is not None:
        pytest.skip("Ray's dashboard packages are installed here")
    proc = subprocess.run(
        [sys.executable, "-m", "ray_robust.cli", "train", "--engine", "ray", "--dashboard",
         "--rounds", "2"], capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("ray-robust: error: --dashboard needs")
    assert "Traceback" not in proc.stderr


def test_a_local_session_restores_the_drivers_environment():
    """The workers' variables set for a local instance are undone when it shuts down."""
    code = (
        "import os\n"
        "from ray_robust.engines.ray_engine import ray_session\n"
        "os.environ['RAY_ROBUST_KEPT'] = 'before'\n"
        "with ray_session(worker_env={'RAY_ROBUST_KEPT': 'during', 'RAY_ROBUST_NEW': '1'}):\n"
        "    assert os.environ['RAY_ROBUST_KEPT'] == 'during'\n"
        "print(os.environ.get('RAY_ROBUST_KEPT'), os.environ.get('RAY_ROBUST_NEW'))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, check=False, env={**os.environ, "RAY_ADDRESS": ""})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["before", "None"]
