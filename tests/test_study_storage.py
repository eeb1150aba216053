"""A study's output location (issue 14, item 3) and the study package's seams (issue 13).

``--overwrite`` deletes only a folder the study itself wrote (its ``study.json`` names it):
never a user's folder, never through a symbolic link; a ``--storage`` that cannot hold the
study is a clear error before Ray starts. The study spec imports no Ray, and a study run parses
each trial's config once (at load).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import yaml

from ray_robust.studies import load_study, run_study_full

ROOT = Path(__file__).resolve().parents[1]
TINY = {"name": "tiny", "plot": {"x": "seed"}, "param_space": {
    "environment": "E1", "algorithm": "alg2", "rounds": 20, "report_every": 10,
    "seed": {"grid_search": [0]}}}


def _saved_study(folder: Path, name: str = "tiny") -> None:
    """A folder as a previous run of study ``name`` left it (its study.json, a trial file)."""
    folder.mkdir(parents=True)
    (folder / "study.json").write_text(json.dumps(load_study({**TINY, "name": name}).to_dict()))
    (folder / "progress").mkdir()
    (folder / "progress" / "0123.json").write_text("{}")


def test_overwrite_refuses_a_folder_that_is_not_a_study(tmp_path):
    users = tmp_path / "tiny"
    users.mkdir()
    (users / "thesis.tex").write_text("months of work")
    refused = rf"--overwrite refused: {re.escape(str(users))} has no study\.json"
    with pytest.raises(ValueError, match=refused):
        run_study_full(TINY, storage=tmp_path, overwrite=True, log=None)
    assert (users / "thesis.tex").read_text() == "months of work"


def test_overwrite_refuses_a_folder_of_another_study(tmp_path):
    _saved_study(tmp_path / "tiny", name="other")
    with pytest.raises(ValueError, match=r"holds study 'other'.*another --storage"):
        run_study_full(TINY, storage=tmp_path, overwrite=True, log=None)
    assert (tmp_path / "tiny" / "progress" / "0123.json").is_file()


def test_overwrite_refuses_a_folder_with_an_unreadable_study_json(tmp_path):
    (tmp_path / "tiny").mkdir()
    (tmp_path / "tiny" / "study.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"unreadable study\.json"):
        run_study_full(TINY, storage=tmp_path, overwrite=True, log=None)
    assert (tmp_path / "tiny" / "study.json").is_file()


def test_overwrite_refuses_a_symlink(tmp_path):
    """A study folder that is a link is refused, even to a folder of this very study."""
    elsewhere = tmp_path / "elsewhere"
    _saved_study(elsewhere)
    storage = tmp_path / "storage"
    storage.mkdir()
    (storage / "tiny").symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(ValueError, match=rf"{re.escape(str(storage / 'tiny'))} is a symbolic link"):
        run_study_full(TINY, storage=storage, overwrite=True, log=None)
    assert (storage / "tiny").is_symlink() and (elsewhere / "progress" / "0123.json").is_file()


def test_overwrite_replaces_the_studys_own_folder_but_not_what_a_link_inside_points_to(
        ray_session, tmp_path):
    exp = tmp_path / "tiny"
    _saved_study(exp)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("not the study's")
    (exp / "link").symlink_to(outside, target_is_directory=True)
    res = run_study_full(TINY, storage=tmp_path, overwrite=True, log=None)
    assert res.num_errors == 0 and int(res.results["round"].iloc[0]) == 20
    assert not (exp / "link").exists() and not (exp / "progress" / "0123.json").exists()
    assert (outside / "keep.txt").read_text() == "not the study's"


def _tune_cli(tmp_path: Path, storage: Path) -> subprocess.CompletedProcess:
    """``ray-robust tune`` in a subprocess that prints, after it, whether Ray was started."""
    study = tmp_path / "tiny.yaml"
    study.write_text(yaml.safe_dump(TINY))
    code = ("import sys\nfrom ray_robust.cli import main\n"
            f"rc = main(['tune', {str(study)!r}, '--storage', {str(storage)!r}])\n"
            "ray = sys.modules.get('ray')\n"
            "print('ray started:', bool(ray and ray.is_initialized()))\nsys.exit(rc)\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), *sys.path])}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=120)


def test_storage_that_is_a_file_is_a_clear_error_before_work(tmp_path):
    storage = tmp_path / "results.csv"
    storage.write_text("a,b\n")
    proc = _tune_cli(tmp_path, storage)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"ray-robust: error: The storage {storage} is a file, not a folder: pass a folder you "
        "can write to as --storage (Python: storage=); it is created if missing."]
    assert "ray started: False" in proc.stdout
    assert storage.read_text() == "a,b\n"


def test_storage_below_a_file_is_a_clear_error_before_work(tmp_path):
    (tmp_path / "results.csv").write_text("a,b\n")
    with pytest.raises(ValueError, match=r"cannot be created \(.*results.csv is a file\)"):
        run_study_full(TINY, storage=tmp_path / "results.csv" / "tune", log=None)


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write to a read-only folder")
def test_storage_that_is_not_writable_is_a_clear_error_before_work(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    try:
        not_writable = rf"The storage {re.escape(str(locked / 'tune'))} is not writable"
        with pytest.raises(ValueError, match=not_writable):
            run_study_full(TINY, storage=locked / "tune", log=None)
    finally:
        locked.chmod(0o700)


def test_the_study_spec_imports_no_ray():
    code = ("import sys\nsys.modules['ray'] = None  # any `import ray` now fails\n"
            "import ray_robust.studies.spec as spec\n"
            f"study = spec.load_study({str(ROOT / 'tune_configs' / 'table1.yaml')!r})\n"
            "print(len(study.trials))\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), *sys.path])}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["100"]


def test_a_study_run_parses_each_trial_config_once_at_load(ray_session, tmp_path, monkeypatch):
    """After load_study, the driver (resources, CPU check, unfinished count, summary) parses no
    trial config again: it uses the parsed trials (Tune's trial processes get them too)."""
    from ray_robust.studies import trial

    study = load_study({**TINY, "param_space": {**TINY["param_space"],
                                                "seed": {"grid_search": [0, 1]}}})
    parses = []
    parse = trial.split_trial_config

    def counted(values):
        parses.append(dict(values))
        return parse(values)

    monkeypatch.setattr(trial, "split_trial_config", counted)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = run_study_full(study, storage=tmp_path, log=None)
    assert res.num_errors == 0 and len(res.summary) == 2
    assert parses == []


def test_a_grid_point_that_cannot_run_on_its_data_is_refused_before_ray(tmp_path, data_dir):
    """More workers than training samples (here: a 20-row CSV): one clear error naming the
    point, before Ray starts and before any trial is retried by max_failures."""
    import ray

    from ray_robust.studies import run_study_full

    csv = tmp_path / "small.csv"
    rows = ["a,b,y", *(f"{i},{i % 3},{i % 2}" for i in range(20))]
    csv.write_text("\n".join(rows) + "\n")
    study = {"name": "too_many_workers", "max_failures": -1, "param_space": {
        "data_path": str(csv), "label_column": "y", "rounds": 2,
        "n_workers": {"grid_search": [4, 40]}, "seed": 0}}
    was_up = ray.is_initialized()
    with pytest.raises(ValueError, match=r"trial \{'n_workers': 40\} cannot run.*'n_workers'"):
        run_study_full(study, storage=tmp_path / "out", log=None)
    assert ray.is_initialized() == was_up
    assert not (tmp_path / "out" / "too_many_workers").exists()


def test_a_non_integer_report_every_is_an_error(tmp_path, data_dir):
    from ray_robust.studies import load_study

    with pytest.raises(ValueError, match=r"'report_every' parameter of the study must be an "
                                         r"integer >= 1\. Got 2\.5"):
        load_study({"name": "x", "param_space": {"rounds": 4, "report_every": 2.5}})
