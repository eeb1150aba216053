"""Checkpoint and resume of a training run: a SIGKILLed run resumes bit-identically."""

from __future__ import annotations

import hashlib
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
from ray_robust.algorithm import RunState
from ray_robust.checkpoint import CHECKPOINT_FILE, load_checkpoint, save_checkpoint
from ray_robust.cli import main
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
    with pytest.raises(ValueError, match=r"not a valid ray_robust checkpoint.*format 1"):
        load_checkpoint(tmp_path)
    save_checkpoint(tmp_path, CFG, RunState(np.zeros(58), 0, np.random.default_rng(0)))
    record = json.loads((tmp_path / CHECKPOINT_FILE).read_text())
    record["config"]["lam"] = -1  # a bad value under a valid checksum: the config check says it
    body = {k: v for k, v in record.items() if k != "sha256"}
    record["sha256"] = hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":"))
                                      .encode()).hexdigest()
    (tmp_path / CHECKPOINT_FILE).write_text(json.dumps(record))
    with pytest.raises(ValueError, match=r"not a valid ray_robust checkpoint.*'lam'"):
        load_checkpoint(tmp_path)
    (tmp_path / CHECKPOINT_FILE).write_text("{truncated")
    with pytest.raises(ValueError, match="not a valid"):
        load_checkpoint(tmp_path)


def test_writes_are_atomic(data_dir, tmp_path):
    hist = train(CFG.replace(rounds=10), checkpoint_dir=tmp_path, checkpoint_every=5)
    before = (tmp_path / CHECKPOINT_FILE).read_bytes()
    # a writer that dies mid-write leaves only its temporary file; the checkpoint still loads
    writer = subprocess.Popen([sys.executable, "-c", "pass"])
    writer.wait()  # a process that has ended: its pid names a killed writer's leftover
    (tmp_path / f".{CHECKPOINT_FILE}.{writer.pid}.tmp").write_text('{"format": 1, "conf')
    assert (tmp_path / CHECKPOINT_FILE).read_bytes() == before
    _, state = load_checkpoint(tmp_path)
    assert state.theta.tobytes() == hist.theta.tobytes()
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")
            and str(writer.pid) not in p.name] == []  # save_checkpoint leaves none of its own
    save_checkpoint(tmp_path, CFG, state)
    # the next write removes the ended writer's leftover
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


@pytest.mark.slow
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


# ---- issue 14: records are validated, checksummed and locked --------------------------------
def _tampered(tmp_path, edit) -> None:
    path = tmp_path / CHECKPOINT_FILE
    record = json.loads(path.read_text())
    edit(record)
    path.write_text(json.dumps(record))


def _set(path: tuple, value):
    def edit(record):
        node = record
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
    return edit


@pytest.mark.parametrize(("edit", "why"), [
    (_set(("state", "theta", 3), 0.5), "checksum"),             # a flipped digit of θ
    (_set(("state", "rows", -1, "test_error"), 0.01), "checksum"),  # an edited metric
    (_set(("config", "seed"), 7), "checksum"),                   # an edited seed
    (_set(("state", "attack_rng", "state", "state"), 1), "checksum"),
], ids=["theta-digit", "metric", "seed", "rng-state"])
def test_checkpoint_corruption_is_detected(edit, why, data_dir, tmp_path):
    train(CFG.replace(rounds=4), checkpoint_dir=tmp_path, checkpoint_every=2)
    _tampered(tmp_path, edit)
    with pytest.raises(ValueError, match=why):
        load_checkpoint(tmp_path)
    assert main(["train", "--resume", str(tmp_path)]) == 2


@pytest.mark.parametrize(("field", "value", "why"), [
    ("round", -1, "round"), ("round", True, "round"), ("round", 10**6, "round"),
    ("theta", [1.0, "x"], "θ"), ("theta", [], "θ"),
    ("attack_rng", {"bit_generator": "os.system", "state": {}}, "RNG"),
    ("rows", [{"round": 99}], "row"), ("totals", {"wrm_steps": "many"}, "totals"),
    ("aggregator_state", [0.0], "aggregator"),
])
def test_checkpoint_fields_are_validated_under_a_valid_checksum(field, value, why, tmp_path):
    """An edit that also recomputes the checksum is still checked field by field."""
    from ray_robust.run_state import FORMAT, _checksum

    save_checkpoint(tmp_path, CFG, RunState(np.zeros(58), 2, np.random.default_rng(0)))
    record = json.loads((tmp_path / CHECKPOINT_FILE).read_text())
    record["state"][field] = value
    body = {k: v for k, v in record.items() if k != "sha256"}
    record["sha256"] = _checksum(body)
    assert record["format"] == FORMAT
    (tmp_path / CHECKPOINT_FILE).write_text(json.dumps(record))
    with pytest.raises(ValueError, match=why):
        load_checkpoint(tmp_path)


def test_a_checkpoint_that_is_a_json_list_is_one_line(tmp_path, capsys):
    (tmp_path / CHECKPOINT_FILE).write_text("[1, 2]")
    assert main(["train", "--resume", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "holds a list" in err and "\n" not in err


def test_two_runs_cannot_share_a_checkpoint_folder(data_dir, tmp_path):
    """A second `train --checkpoint-dir D` (or `--resume D`) while the first runs is refused."""
    from ray_robust.checkpoint import lock_checkpoint_dir

    with lock_checkpoint_dir(tmp_path):  # the first run holds the folder
        with pytest.raises(ValueError, match=r"Another process \(\d+\) is using the checkpoint"):
            train(CFG.replace(rounds=2), checkpoint_dir=tmp_path)
        argv = ["train", "--rounds", "2", "--checkpoint-dir", str(tmp_path)]
        code = f"import sys; from ray_robust.cli import main; sys.exit(main({argv!r}))"
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              check=False, env={**os.environ})
        assert proc.returncode == 2 and f"({os.getpid()})" in proc.stderr
    train(CFG.replace(rounds=2), checkpoint_dir=tmp_path)  # released: the folder is free again


@pytest.mark.parametrize("flags", [["--rounds", "500"], ["--attack", "ipm"], ["--alpha", "0.1"],
                                   ["--checkpoint-dir", "elsewhere"]])
def test_resume_refuses_flags_that_contradict_the_checkpoint(flags, data_dir, tmp_path, capsys):
    train(CFG.replace(rounds=2), checkpoint_dir=tmp_path)
    assert main(["train", "--resume", str(tmp_path), *flags]) == 2
    err = capsys.readouterr().err
    assert flags[0] in err and "\n" not in err.strip()


@pytest.mark.parametrize("target", ["file", "under-a-file", "readonly", "longname"])
def test_output_locations_are_checked_before_training(target, data_dir, tmp_path, capsys):
    if target == "file":
        path = tmp_path / "taken"
        path.write_text("a user's file")
    elif target == "under-a-file":
        (tmp_path / "taken").write_text("a user's file")
        path = tmp_path / "taken" / "out"
    elif target == "readonly":
        if os.geteuid() == 0:
            pytest.skip("root writes into read-only folders")
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o500)
        path = ro / "out"
    else:
        path = tmp_path / ("x" * 300)
    for flag in ("--out", "--checkpoint-dir"):
        t0 = time.perf_counter()
        assert main(["train", "--rounds", "3000", flag, str(path)]) == 2
        assert time.perf_counter() - t0 < 5  # refused before the 3000 rounds
        assert "\n" not in capsys.readouterr().err.strip()
    if target.endswith("file"):
        assert (tmp_path / "taken").read_text() == "a user's file"


def test_records_are_private_files(data_dir, tmp_path):
    folder = tmp_path / "ckpt"
    train(CFG.replace(rounds=2), checkpoint_dir=folder)
    assert (folder / CHECKPOINT_FILE).stat().st_mode & 0o777 == 0o600
    assert folder.stat().st_mode & 0o777 == 0o700


def test_a_checkpoint_with_a_huge_integer_in_theta_is_a_clear_error(tmp_path):
    """json reads 10**400 as an int that no float holds: math.isfinite raised OverflowError."""
    from ray_robust.run_state import _checksum

    save_checkpoint(tmp_path, CFG, RunState(np.zeros(58), 2, np.random.default_rng(0)))
    record = json.loads((tmp_path / CHECKPOINT_FILE).read_text())
    record["state"]["theta"][0] = 10**400
    record["sha256"] = _checksum({k: v for k, v in record.items() if k != "sha256"})
    (tmp_path / CHECKPOINT_FILE).write_text(json.dumps(record))
    with pytest.raises(ValueError, match="θ is not a non-empty list of finite numbers"):
        load_checkpoint(tmp_path)


def test_a_checkpoint_of_another_model_is_refused_when_resumed(data_dir, tmp_path):
    """θ of the wrong length (another model or data): one clear error, not a matmul error."""
    state = RunState(np.zeros(10), 0, np.random.default_rng(0))
    with pytest.raises(ValueError, match="p = 58 parameters: it belongs to another model"):
        train(CFG.replace(rounds=2), state=state)
