"""Ray Tune studies (issue 4): study files, the resumable trainable, `ray-robust tune`, trends.

The Tune tests use the real Tune through the shared ``ray_session``; the trend tests run the
studies' own grids on the in-process engine (same numbers as a trial; no Tune overhead).
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from ray_robust import Config, load_problem, train
from ray_robust.algorithm import Server, honest_gradients
from ray_robust.cli import main
from ray_robust.core.aggregators import n_to_screen, nbs
from ray_robust.core.attacks import counterexample
from ray_robust.studies import (
    aggregate,
    load_study,
    run_grid_local,
    run_study_full,
    save_trial_progress,
    split_trial_config,
    tidy,
    trial_bundles,
    trial_key,
    trial_progress,
)

ROOT = Path(__file__).resolve().parents[1]
STUDIES = sorted((ROOT / "tune_configs").glob("*.yaml"))


def _write(tmp_path: Path, study: dict, name: str = "study.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(study))
    return path


def _theta_of(trial_dir: Path) -> np.ndarray:
    """θ in a trial's newest checkpoint."""
    ckpt = sorted(trial_dir.glob("checkpoint_*"))[-1]
    return np.asarray(json.loads((ckpt / "run_state.json").read_text())["state"]["theta"])


def _reference_theta(values: dict) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cfg, _ = split_trial_config(values)
        return train(cfg).theta


# ---- study files ----------------------------------------------------------------------------
def test_there_are_the_papers_studies():
    names = {p.stem for p in STUDIES}
    assert {"table1", "fig1_shift", "fig2_byzantine", "fig3_lambda", "fig4_tz", "breakpoint",
            "grid_example"} <= names


@pytest.mark.parametrize("path", STUDIES, ids=lambda p: p.stem)
def test_study_file_is_valid_full_and_quick(path):
    full, quick = load_study(path), load_study(path, quick=True)
    assert "seed" in full.axes, "seeds must be a grid axis"
    assert full.plot.get("x"), "every study says what to plot"
    assert len(quick.trial_configs()) <= 4
    assert all(c["rounds"] <= 20 for c in quick.trial_configs())
    assert len(full.trial_configs()) > len(quick.trial_configs())


GOOD = {"param_space": {"algorithm": "alg2", "seed": {"grid_search": [0, 1]}, "rounds": 5,
                        "report_every": 5},
        "plot": {"x": "seed"}}


@pytest.mark.parametrize(
    "change, message",
    [
        ({"param_space": {"lamda": {"grid_search": [1, 2]}}}, "unknown grid axis 'lamda'"),
        ({"param_space": {"lamda": 3}}, "unknown parameter 'lamda'"),
        ({"colour": "red"}, r"unknown key\(s\) \['colour'\]"),
        ({"param_space": {"beta": {"grid_search": []}}}, "'beta' must be a non-empty list"),
        ({"param_space": {"seed": {"grid_search": [0, 1, 0]}}}, "axis 'seed' repeats a value"),
        ({"param_space": {"beta": {"grid_search": [0.1, 1.5]}}}, r"grid point \{.*'beta': 1.5"),
        ({"param_space": {"lam": {"grid_search": [1.0, 3.0]}}}, r"\['lam'\] is not shown"),
        ({"metric": "accuracy"}, "'metric' must be one of"),
        ({"mode": "lowest"}, "'mode' must be 'min' or 'max'"),
        ({"plot": {"x": "lam"}}, "plot 'x' = 'lam' is not a parameter"),
        ({"quick": {"rounds": 3}}, r"unknown key\(s\) \['rounds'\] in 'quick'"),
        ({"param_space": {"report_every": 3, "eval_every": 2}}, "multiple of eval_every"),
    ],
)
def test_bad_study_is_one_clear_value_error(tmp_path, change, message):
    study = json.loads(json.dumps(GOOD))
    for key, value in change.items():
        if key == "param_space":
            study["param_space"].update(value)
        else:
            study[key] = value
    with pytest.raises(ValueError, match=message):
        load_study(_write(tmp_path, study))


def test_malformed_yaml_is_a_value_error(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("param_space: {seed: [0, 1\n")
    with pytest.raises(ValueError, match="is not valid YAML"):
        load_study(path)
    path.write_text("- just\n- a list\n")
    with pytest.raises(ValueError, match="must hold a mapping"):
        load_study(path)


def test_cli_reports_bad_study_in_one_line(tmp_path, capsys):
    path = _write(tmp_path, {**GOOD, "param_space": {"lamda": {"grid_search": [1]}}})
    assert main(["tune", str(path), "--storage", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown grid axis 'lamda'" in err[0]


def test_trial_keys_resolve_to_config():
    cfg, opts = split_trial_config({"environment": "E2", "algorithm": "dro", "alpha": 0.3,
                                    "beta_offset": 0.05, "report_every": 20})
    assert (cfg.attack, cfg.shift_norm, cfg.shift_eps) == ("aggressive", "l2", 0.3)
    assert cfg.alpha == 0.3 and cfg.beta == pytest.approx(0.35)  # explicit alpha wins
    assert (cfg.aggregator, cfg.wrm, cfg.eval_every) == ("mean", True, 20)
    assert opts["engine"] == "local"
    assert trial_bundles({"seed": 0}) == [{"CPU": 1.0}]
    assert trial_bundles({"seed": 0, "engine": "ray", "actors": 2}) == [{"CPU": 1.0}] * 3
    assert len(trial_bundles({"seed": 0, "engine": "ray", "actors": "per-worker"})) == 21


# ---- Tune end to end ------------------------------------------------------------------------
@pytest.mark.parametrize("path", [  # one study in the fast loop, every study in the full one
    pytest.param(p, marks=() if p.stem == "fig4_tz" else pytest.mark.slow) for p in STUDIES],
    ids=lambda p: p.stem)
def test_every_study_runs_quick_with_tune(ray_session, tmp_path, path, capsys):
    assert main(["tune", str(path), "--quick", "--storage", str(tmp_path)]) == 0
    study = load_study(path, quick=True)
    exp = tmp_path / study.experiment_name
    trials = pd.read_csv(exp / f"{study.name}_trials.csv")
    assert len(trials) == len(study.trial_configs())
    assert (trials["round"] == trials["config/rounds"]).all()
    assert trials["error"].between(0, 1).all()
    summary = pd.read_csv(exp / f"{study.name}_summary.csv")
    assert {"mean", "sd", "n_seeds"} <= set(summary.columns) and len(summary) > 0
    # the summary is the trials file's records averaged over every seed of each grid point
    assert (summary["n_seeds"] == len(study.param_space["seed"]["grid_search"])).all()
    from_trials = aggregate(tidy(trials, study), study)
    assert len(summary) == len(from_trials)
    np.testing.assert_allclose(summary["mean"], from_trials["mean"], rtol=1e-12)
    png = exp / f"{study.name}.png"
    assert png.stat().st_size > 10_000
    out = capsys.readouterr().out
    assert str(png) in out and "0 errors" in out


def test_the_trainable_used_directly_with_tune_saves_progress_in_its_experiment(ray_session,
                                                                               tmp_path):
    """`tune.Tuner(trainable, ...)` without run_study: the progress store goes to the Tune
    experiment's folder, and a trial run again there continues from it."""
    from ray import tune

    from ray_robust.studies import trainable

    values = {"environment": "E1", "algorithm": "alg2", "seed": 0, "rounds": 20,
              "report_every": 10}

    def fit():
        run = tune.RunConfig(name="direct", storage_path=str(tmp_path), verbose=0)
        return tune.Tuner(trainable, param_space=values, run_config=run).fit()

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        first = fit()
        assert first.errors == [] and first[0].metrics["resumed_from"] == 0
        state = trial_progress(tmp_path / "direct", values)
        assert state is not None and state.round == 20
        second = fit()  # the same experiment again: the trial finds its record
    assert second[0].metrics["resumed_from"] == 20
    np.testing.assert_array_equal(state.theta, _reference_theta(values))


def test_run_study_api_returns_the_results(ray_session, tmp_path):
    study = {**GOOD, "name": "api"}
    df = run_study_full(study, storage=tmp_path, log=None).results
    assert sorted(df["config/seed"]) == [0, 1]
    # the reported θ is the in-process engine's θ: one Server, one numerical core
    for trial_dir in (tmp_path / "api").glob("trainable_*"):
        values = json.loads((trial_dir / "params.json").read_text())
        np.testing.assert_array_equal(_theta_of(trial_dir), _reference_theta(values))
    with pytest.raises(ValueError, match="already holds an experiment"):
        run_study_full(study, storage=tmp_path, log=None)


def test_short_trials_run_on_every_cpu_not_one_reused_actor(ray_session, tmp_path):
    """Trials shorter than a trial actor's start-up (60 rounds: tens of ms against ≥ 0.5 s of
    imports) still use both CPUs: the second trial waits for the actor starting for it while
    the first actor runs the next trials. Tune's FIFO scheduler instead gave the second trial
    the first actor as soon as it was free and killed the one starting for it, and so every
    later actor: a study ran on one actor. (That happened when the first actor won the start-up
    race, ≈ 1 run in 3 here, and in every `ray-robust tune` run with a job runtime_env.)"""
    study = {"name": "both_cpus", "param_space": {**GOOD["param_space"], "rounds": 60,
                                                  "report_every": 60,
                                                  "seed": {"grid_search": list(range(16))}},
             "plot": {"x": "seed"}}
    df = run_study_full(study, storage=tmp_path, log=None).results
    pid = dict(zip(df["config/seed"], df["pid"], strict=True))
    assert len(pid) == 16 and pid[0] != pid[1], pid  # the first two trials: two actors
    assert set(pid.values()) == {pid[0], pid[1]}, pid  # reused by all others, none replaced


def test_failed_trials_are_reported_and_exit_nonzero(ray_session, tmp_path, capsys):
    """Trials that fail while they run (here: they diverge at round 42) are reported, each
    with its message, and the command exits 1."""
    study = {**GOOD, "param_space": {**GOOD["param_space"], "algorithm": "erm",
                                     "model": "least_squares", "eta": 1e3, "rounds": 60,
                                     "report_every": 10}}
    assert main(["tune", str(_write(tmp_path, study)), "--storage", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "2 of 2 trials failed" in out
    assert "failed: ray_robust.algorithm.DivergenceError: Round 42 of 60: the run diverged" in out


def test_a_point_that_cannot_run_is_refused_before_tune(tmp_path, capsys):
    """A missing data file would fail every trial: the study says so before Ray starts."""
    study = {**GOOD, "param_space": {**GOOD["param_space"],
                                     "data_path": str(tmp_path / "missing.data")}}
    assert main(["tune", str(_write(tmp_path, study)), "--storage", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "cannot run: No Spambase file" in err and "\n" not in err
    assert not (tmp_path / study.get("name", "study")).exists()


def test_trial_with_ray_engine_completes_on_two_cores(ray_session, tmp_path):
    """engine: ray inside a trial: a placement group of 1 + 1 bundles, nested worker actors."""
    values = {"environment": "E1", "algorithm": "alg2", "seed": 0, "rounds": 20,
              "report_every": 10, "engine": "ray", "actors": 1}
    study = {"name": "nested", "param_space": {**values, "actors": {"grid_search": [1]}},
             "plot": {"x": "actors"}}
    res = run_study_full(study, storage=tmp_path, log=None)
    assert res.num_errors == 0 and int(res.results["round"].iloc[0]) == 20
    (trial_dir,) = (tmp_path / "nested").glob("trainable_*")
    np.testing.assert_array_equal(_theta_of(trial_dir), _reference_theta(values))
    too_big = {**study, "name": "too_big",
               "param_space": {**study["param_space"], "actors": {"grid_search": [20]}}}
    with pytest.raises(ValueError, match="reserves 21 CPUs"):
        run_study_full(too_big, storage=tmp_path, log=None)


def _saved_rounds(exp: Path) -> dict[int, int]:
    """seed -> the round its trial last saved in the study's progress store."""
    out = {}
    for f in exp.glob("progress/*.json"):
        record = json.loads(f.read_text())
        out[record["owner"]["seed"]] = record["state"]["round"]
    return out


@pytest.mark.slow
def test_ctrl_c_stops_the_sweep_and_resume_finishes_it(ray_session, tmp_path):
    """SIGINT (Ctrl-C) to `ray-robust tune`: exit code 130 and a message counting every trial
    of the study not finished (Tune had not even created some); --resume then finishes them."""
    rounds, every, seeds = 3000, 100, list(range(6))
    study = {"name": "ctrl_c", "param_space": {
        "environment": "E1", "algorithm": "alg2", "seed": {"grid_search": seeds},
        "rounds": rounds, "report_every": every}, "plot": {"x": "seed"}}
    path = _write(tmp_path, study)
    cmd = [sys.executable, "-m", "ray_robust.cli", "tune", str(path), "--storage",
           str(tmp_path), "--address", ray_session.get_runtime_context().gcs_address]
    exp = tmp_path / "ctrl_c"
    driver = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 150
    while not any(r >= 5 * every for r in _saved_rounds(exp).values()):
        assert driver.poll() is None and time.monotonic() < deadline, _saved_rounds(exp)
        time.sleep(0.05)
    driver.send_signal(signal.SIGINT)
    out, _ = driver.communicate(timeout=120)
    assert driver.returncode == 130, out[-2000:]
    counted = re.search(rf"(\d+) of {len(seeds)} trials did not finish \(interrupted\)", out)
    assert counted, out[-2000:]  # of the study's trials, not of those Tune had created
    saved = _saved_rounds(exp)
    assert int(counted[1]) >= sum(saved.get(seed, 0) < rounds for seed in seeds) > 0, saved
    assert "Tuner.restore" not in out

    resumed = subprocess.run([*cmd, "--resume"], capture_output=True, text=True, timeout=240)
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-2000:]
    trials = pd.read_csv(exp / "ctrl_c_trials.csv")
    assert sorted(trials["config/seed"]) == seeds and (trials["round"] == rounds).all()
    resumed_from = []
    for trial_dir in exp.glob("trainable_*"):
        values = json.loads((trial_dir / "params.json").read_text())
        np.testing.assert_array_equal(_theta_of(trial_dir), _reference_theta(values))
        resumed_from.append(json.loads(
            (trial_dir / "result.json").read_text().splitlines()[-1])["resumed_from"])
    assert any(0 < r < rounds for r in resumed_from), resumed_from  # continued mid-run


@pytest.mark.slow
def test_sweep_killed_mid_run_then_resumed_finishes_every_trial_once(ray_session, tmp_path):
    rounds, every = 3000, 100
    study = {"name": "killed", "param_space": {
        "environment": "E1", "algorithm": "alg2", "seed": {"grid_search": [0, 1, 2, 3]},
        "rounds": rounds, "report_every": every}, "plot": {"x": "seed"}}
    path = _write(tmp_path, study)
    address = ray_session.get_runtime_context().gcs_address
    cmd = [sys.executable, "-m", "ray_robust.cli", "tune", str(path), "--storage",
           str(tmp_path), "--address", address]
    exp = tmp_path / "killed"

    driver = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 150
    while True:  # kill once a trial has finished and another is past a few reports
        done = _saved_rounds(exp)
        if (any(r == rounds for r in done.values())
                and any(5 * every <= r < rounds for r in done.values())):
            break
        assert driver.poll() is None, f"the sweep ended before it could be killed: {done}"
        assert time.monotonic() < deadline, f"no progress to interrupt: {done}"
        time.sleep(0.05)
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    saved, settled = _saved_rounds(exp), time.monotonic()
    while time.monotonic() - settled < 1.0:  # until the dead driver's trial actors are gone
        time.sleep(0.1)
        if (now := _saved_rounds(exp)) != saved:
            saved, settled = now, time.monotonic()
    assert min(saved.get(seed, 0) for seed in range(4)) < rounds  # really left unfinished

    resumed = subprocess.run([*cmd, "--resume"], capture_output=True, text=True, timeout=240)
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-2000:]
    trial_dirs = sorted(exp.glob("trainable_*"))
    assert len(trial_dirs) == 4  # the resumed run's (the killed run's are in superseded/)
    for trial_dir in trial_dirs:
        values = json.loads((trial_dir / "params.json").read_text())
        history = [json.loads(line) for line in
                   (trial_dir / "result.json").read_text().splitlines()]
        # each trial continued from (at least) the round it had saved: none ran from scratch
        # twice, the interrupted one did not start over, a finished one only reported again
        (resumed_from,) = {h["resumed_from"] for h in history}
        assert resumed_from >= saved.get(values["seed"], 0)
        assert history[-1]["round"] == rounds
        np.testing.assert_array_equal(_theta_of(trial_dir), _reference_theta(values))
    trials = pd.read_csv(exp / "killed_trials.csv")
    assert sorted(trials["config/seed"]) == [0, 1, 2, 3]
    assert (trials["round"] == rounds).all()


def test_resume_does_not_need_tunes_experiment_snapshot(ray_session, tmp_path):
    """A driver killed while Tune wrote its experiment snapshot left it empty (seen in CI):
    --resume does not read it."""
    study = {**GOOD, "name": "snap", "param_space": {**GOOD["param_space"], "rounds": 20}}
    first = run_study_full(study, storage=tmp_path, log=None)
    exp = tmp_path / "snap"
    for f in exp.glob("experiment_state-*.json"):
        f.write_text("")
    again = run_study_full(study, storage=tmp_path, log=None, resume=True)
    assert again.num_errors == 0
    pd.testing.assert_series_equal(first.results.sort_values("config/seed")["error"]
                                   .reset_index(drop=True),
                                   again.results.sort_values("config/seed")["error"]
                                   .reset_index(drop=True))
    assert (again.results["resumed_from"] == 20).all()  # finished: nothing was run again
    assert len(list(exp.glob("trainable_*"))) == 2
    assert len(list((exp / "superseded").glob("trainable_*"))) == 2


def test_a_bad_progress_record_restarts_the_trial_with_a_warning(tmp_path):
    """A record that fails its checksum, belongs to another trial, or holds a bad field is
    never resumed: a warning, and the trial starts from round 0."""
    from ray_robust.algorithm import RunState

    values = {"algorithm": "alg2", "seed": 0, "rounds": 5}
    assert trial_progress(tmp_path, values) is None
    path = tmp_path / "progress" / f"{trial_key(values)}.json"
    path.parent.mkdir()
    path.write_text("{trunc")
    with pytest.warns(RuntimeWarning, match="not a usable progress record"):
        assert trial_progress(tmp_path, values) is None
    other = {**values, "seed": 1}
    state = RunState(np.zeros(58), 2, np.random.default_rng(0))
    path.write_bytes(save_trial_progress(tmp_path, other, state).read_bytes())
    with pytest.warns(RuntimeWarning, match="belongs to another run"):
        assert trial_progress(tmp_path, values) is None
    path.write_text("null")
    with pytest.warns(RuntimeWarning, match="not a usable progress record"):
        assert trial_progress(tmp_path, values) is None
    save_trial_progress(tmp_path, values, state)
    assert trial_progress(tmp_path, values).round == 2
    record = json.loads(path.read_text())
    record["state"]["round"] = 5  # an edited round: the checksum no longer matches
    path.write_text(json.dumps(record))
    with pytest.warns(RuntimeWarning, match="checksum"):
        assert trial_progress(tmp_path, values) is None


def test_a_second_run_of_a_running_study_is_refused(tmp_path):
    """Two runs of one study would write the same folder (or --overwrite would delete it under
    the first): the second is refused while the first holds the study's lock."""
    import fcntl

    study = {**GOOD, "name": "busy"}
    with open(tmp_path / ".busy.lock", "a+") as held:  # as a running first run holds it
        fcntl.flock(held, fcntl.LOCK_EX)
        held.write("12345")
        held.flush()
        for kwargs in ({}, {"resume": True}, {"overwrite": True}):
            with pytest.raises(ValueError, match=r"Another process \(12345\) is using study"):
                run_study_full(study, storage=tmp_path, log=None, **kwargs)
    assert not (tmp_path / "busy").exists()


def test_a_resume_sets_aside_only_the_trials_it_ran_again(tmp_path):
    """An interrupted --resume leaves the folders of trials it had not yet re-created."""
    from ray_robust.studies.driver import _set_aside

    earlier = []
    for seed in (0, 1):
        folder = tmp_path / f"trainable_{seed}"
        folder.mkdir()
        (folder / "params.json").write_text(json.dumps({"seed": seed}))
        earlier.append(folder)
    _set_aside(tmp_path, earlier, replaced={trial_key({"seed": 0})})
    assert [p.name for p in (tmp_path / "superseded").iterdir()] == ["trainable_0"]
    assert (tmp_path / "trainable_1").is_dir()


# ---- the paper's trends (in-process engine, the studies' own grids and all their seeds) -----
def _summary(name: str, **space) -> pd.DataFrame:
    """The study's summary on a sub-grid (``space``); its own seeds unless ``seed`` is given."""
    raw = yaml.safe_load((ROOT / "tune_configs" / f"{name}.yaml").read_text())
    raw["param_space"].update({k: {"grid_search": v} for k, v in space.items()})
    study = load_study(raw)
    assert len(study.param_space["seed"]["grid_search"]) >= 3
    return aggregate(tidy(run_grid_local(study), study), study)


def test_fig1_alg2_error_grows_more_slowly_with_shift_than_nbs(data_dir):
    s = _summary("fig1_shift").set_index(["algorithm", "shift_eps"])["mean"]
    growth = {a: s[a, 1.0] - s[a, 0.0] for a in ("alg2", "nbs")}
    assert growth["alg2"] < growth["nbs"], growth
    assert s["alg2", 1.0] < s["nbs", 1.0]


def test_fig2_alg2_holds_while_screened_and_collapses_past_it(data_dir):
    # βm = 3, the −10·g attack: the unscreened mean flips once 11(αm − βm) > m − βm, αm ≥ 5
    s = _summary("fig2_byzantine", algorithm=["alg2"], alpha=[0.2, 0.25], seed=[0, 1, 2])
    s = s.set_index("alpha_m")["mean"]
    assert s[4] < 0.2 and s[5] > 0.5, s


def test_breakpoint_nbs_converges_below_one_third_and_fails_above(data_dir):
    s = _summary("breakpoint", alpha=[0.25, 0.4], beta_offset=[0.0])
    s = s.set_index("alpha")["mean"]
    assert s[0.4] > s[0.25] + 0.3, s
    assert s[0.25] < 0.15


def test_nbs_output_is_about_one_minus_three_alpha_over_one_minus_alpha_of_the_gradient(
        data_dir):
    """With honest gradients ≈ ∇F (at θ₀ here) NBS under the counterexample attack outputs
    ≈ (1 − 3α)/(1 − α)·∇F: it points uphill once α > 1/3."""
    cfg = Config(aggregator="nbs", wrm=False, seed=0)
    problem = load_problem(cfg)
    server = Server(cfg, problem)
    g, _ = honest_gradients(cfg, server.model, server.initial_state().theta, problem.shards, 0)
    coef = {}
    for alpha in (0.1, 0.2, 0.25, 0.3, 0.35, 0.4):
        k = n_to_screen(alpha, 20)
        msgs = g.copy()
        msgs[:k] = counterexample(g[k:], k, np.random.default_rng(0), 1.0)
        out = nbs(msgs, alpha).vector
        gbar = g[k:].mean(axis=0)
        coef[alpha] = out @ gbar / (gbar @ gbar)
        assert coef[alpha] == pytest.approx((1 - 3 * alpha) / (1 - alpha), abs=0.1), coef
    assert coef[0.3] > 0 > coef[0.35]


@pytest.mark.slow
def test_fig3_error_flat_in_lambda_except_small_lambda(data_dir):
    s = _summary("fig3_lambda", lam=[0.05, 1.0, 3.0, 10.0, 50.0]).set_index("lam")["mean"]
    assert s[[1.0, 3.0, 10.0, 50.0]].max() - s[[1.0, 3.0, 10.0, 50.0]].min() < 0.015, s
    assert s[0.05] > s[3.0] + 0.03, s


def test_fig4_wrm_moves_theta_and_ten_steps_are_already_close_to_a_hundred(data_dir):
    """T_z = 0 is NBS on clean samples. WRM changes what is learnt (each seed's θ moves far
    from the T_z = 0 run's) and its inner maximization has converged by T_z = 10: going on to
    100 steps moves θ < 1/10 as much, and the error under shift hardly changes (Fig. 4)."""
    raw = yaml.safe_load((ROOT / "tune_configs" / "fig4_tz.yaml").read_text())
    raw["param_space"]["t_z"] = {"grid_search": [0, 10, 100]}
    study = load_study(raw)
    theta, shifted = {}, {}
    for values in study.trial_configs():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            hist = train(split_trial_config(values)[0])
        key = (values["t_z"], values["seed"])
        theta[key], shifted[key] = hist.theta, hist.final["test_error_shifted"]
    seeds = study.param_space["seed"]["grid_search"]
    assert len(seeds) >= 3
    for seed in seeds:
        by_wrm = np.linalg.norm(theta[10, seed] - theta[0, seed])
        by_more_steps = np.linalg.norm(theta[100, seed] - theta[10, seed])
        assert by_wrm > 0.2 * np.linalg.norm(theta[0, seed]), (seed, by_wrm)
        assert by_more_steps < 0.1 * by_wrm, (seed, by_more_steps, by_wrm)
    s = {t: np.mean([shifted[t, seed] for seed in seeds]) for t in (0, 10, 100)}
    assert abs(s[10] - s[100]) < 0.003, s
    assert s[10] <= s[0] + 0.005, s  # WRM does not make the shifted error worse than NBS's
