"""Checkpoint and resume of a training run: a SIGKILLed run resumes bit-identically."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import warnings

import numpy as np
import pandas as pd
import pytest

from ray_robust import Config, resume, train
from ray_robust.checkpoint import CHECKPOINT_FILE, load_checkpoint, save_checkpoint
from ray_robust.config import GuaranteeWarning

CFG = Config(alpha=0.15, attack="intelligent", shift_norm="l2", shift_eps=0.3, rounds=60)


def test_resume_from_a_midway_checkpoint_is_bit_identical(data_dir, tmp_path):
    full = train(CFG)
    # stop after 25 rounds (a shorter run of the same config writes the same first 25 rounds)
    train(CFG.replace(rounds=25), checkpoint_dir=tmp_path, checkpoint_every=5)
    _, state = load_checkpoint(tmp_path)
    assert state.round == 25
    resumed = train(CFG, state=state)
    assert resumed.theta.tobytes() == full.theta.tobytes()
    pd.testing.assert_frame_equal(resumed.metrics, full.metrics)


def test_bad_checkpoints_give_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="No checkpoint"):
        load_checkpoint(tmp_path)
    (tmp_path / CHECKPOINT_FILE).write_text('{"format": 1, "config": {"lam": -1}, "state": {}}')
    with pytest.raises(ValueError, match=r"not a valid ray_robust checkpoint.*'lam'"):
        load_checkpoint(tmp_path)
    (tmp_path / CHECKPOINT_FILE).write_text("{truncated")
    with pytest.raises(ValueError, match="not a valid"):
        load_checkpoint(tmp_path)


def test_writes_are_atomic(data_dir, tmp_path):
    hist = train(CFG.replace(rounds=10), checkpoint_dir=tmp_path, checkpoint_every=5)
    before = (tmp_path / CHECKPOINT_FILE).read_bytes()
    # a writer that dies mid-write leaves only its temporary file; the checkpoint still loads
    (tmp_path / f".{CHECKPOINT_FILE}.999.tmp").write_text('{"format": 1, "conf')
    assert (tmp_path / CHECKPOINT_FILE).read_bytes() == before
    _, state = load_checkpoint(tmp_path)
    assert state.theta.tobytes() == hist.theta.tobytes()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".") and "999" not in p.name] \
        == []  # save_checkpoint leaves no temporary file of its own
    save_checkpoint(tmp_path, CFG, state)


def test_sigkill_mid_run_then_resume_matches_uninterrupted(data_dir, tmp_path):
    rounds = 3000
    args = ["--alpha", "0.15", "--attack", "intelligent", "--shift-norm", "l2", "--shift-eps",
            "0.3", "--rounds", str(rounds), "--progress", "100000"]
    ckpt = tmp_path / "ckpt"
    proc = subprocess.Popen(
        [sys.executable, "-m", "ray_robust.cli", "train", *args, "--checkpoint-dir", str(ckpt),
         "--checkpoint-every", "100"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 120
    killed_at = None
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            r = json.loads((ckpt / CHECKPOINT_FILE).read_text())["state"]["round"]
        except (FileNotFoundError, ValueError, KeyError):
            r = 0
        if r >= 300:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            killed_at = r
            break
        time.sleep(0.02)
    assert killed_at is not None, f"the run ended before it could be killed: {proc.stderr.read()}"
    _, state = load_checkpoint(ckpt)
    assert 300 <= state.round < rounds
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, "-m", "ray_robust.cli", "train", "--resume", str(ckpt), "--out",
         str(out), "--progress", "100000"], capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    reference = train(Config.from_dict({**CFG.to_dict(), "rounds": rounds}))
    theta = np.load(out / "theta.npy")
    assert theta.tobytes() == reference.theta.tobytes()
    metrics = pd.read_csv(out / "metrics.csv")
    assert metrics["round"].tolist() == list(range(1, rounds + 1))
    np.testing.assert_array_equal(metrics["train_loss"].to_numpy(),
                                  reference.metrics["train_loss"].to_numpy())


def test_resume_api_continues_in_the_same_folder(data_dir, tmp_path):
    train(CFG.replace(rounds=20), checkpoint_dir=tmp_path, checkpoint_every=10)
    # the checkpoint's config says 20 rounds: resuming a finished run returns it unchanged
    again = resume(tmp_path)
    assert again.metrics["round"].iloc[-1] == 20


def test_a_callable_schedule_cannot_be_checkpointed(data_dir, tmp_path):
    cfg = CFG.replace(rounds=5, epsilon_schedule=lambda t: 0.1)
    with pytest.raises(ValueError, match=r"callable.*cannot be checkpointed"):
        train(cfg, checkpoint_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []  # nothing half-written


def test_schedules_round_trip_exactly_through_a_checkpoint(data_dir, tmp_path):
    cfg = CFG.replace(rounds=4, epsilon_schedule="two-stage:0.123456789,0.0001,0.5")
    train(cfg, checkpoint_dir=tmp_path, checkpoint_every=2)
    loaded, _ = load_checkpoint(tmp_path)
    assert loaded == cfg


def test_a_resumed_run_does_not_repeat_its_once_per_run_warnings(data_dir, tmp_path):
    """λ far below L_zz/2 warns once per run; the checkpoint remembers it was given."""
    cfg = Config(lam=0.01, rounds=20, eval_every=5)
    with pytest.warns(GuaranteeWarning, match="not provably strongly concave"):
        train(cfg.replace(rounds=10), checkpoint_dir=tmp_path, checkpoint_every=5)
    _, state = load_checkpoint(tmp_path)
    assert state.warned == {"concave"}
    with warnings.catch_warnings():
        warnings.simplefilter("error", GuaranteeWarning)
        assert train(cfg, state=state).metrics["round"].iloc[-1] == 20
