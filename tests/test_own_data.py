"""A user's own data everywhere (issue 18, item 3): ``load_table`` from the package, headerless
CSVs by column position, ``.npy`` / ``.npz`` / Parquet by extension, relative ``data_path`` in a
study, and Spambase errors that never advise deleting the user's own file."""

from __future__ import annotations

import subprocess
import sys
import warnings

import numpy as np
import pandas as pd
import pytest

from ray_robust.api import load_problem
from ray_robust.config import Config
from ray_robust.data import load_spambase, load_table, make_synthetic


@pytest.fixture
def table():
    """A small binary task: 4 features and a 0/1 label, as an array with the label last."""
    X, y = make_synthetic(80, 4, task="logistic", noise=0.3, seed=3)
    return np.column_stack([X, y])


def _same_problem(a, b) -> None:
    for name in ("X_train", "y_train", "X_test", "y_test"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    np.testing.assert_array_equal(a.shards.X, b.shards.X)


def test_load_table_is_importable_from_the_package():
    import ray_robust
    from ray_robust import load_table as exported

    assert exported is load_table and "load_table" in ray_robust.__all__


def test_headerless_csv_is_read_by_column_index(tmp_path, table):
    path = tmp_path / "plain.csv"
    np.savetxt(path, table, delimiter=",")  # no header row
    for label in (4, -1, "#4", "#-1"):
        X, y = load_table(path, label=label)
        np.testing.assert_array_equal(X, table[:, :4])
        np.testing.assert_array_equal(y, table[:, 4])
    X, y = load_table(path, label=0)  # any position, not only the last
    np.testing.assert_array_equal(y, table[:, 0])
    np.testing.assert_array_equal(X, table[:, 1:])
    # auto detection: every field of the first row is a number, so it is data, not names
    assert load_table(path, label=-1)[0].shape == (80, 4)
    assert load_table(path, label=-1, header=True)[0].shape == (79, 4)  # forced: row 1 = names


def test_headerless_csv_label_by_name_says_to_use_its_position(tmp_path, table):
    path = tmp_path / "plain.csv"
    np.savetxt(path, table, delimiter=",")
    with pytest.raises(ValueError, match=r"no column names.*label_column '#57'"):
        load_table(path, label="spam")
    with pytest.raises(ValueError, match=r"position 9, but the data has 5 columns"):
        load_table(path, label="#9")


def test_label_column_by_position_in_a_config_trains_like_by_name(tmp_path, table):
    """``label_column: '#4'`` on the headerless file builds the very problem (bit for bit) that
    the label's name builds on the same data with a header row."""
    plain, named = tmp_path / "plain.csv", tmp_path / "named.csv"
    np.savetxt(plain, table, delimiter=",")
    pd.DataFrame(table, columns=["a", "b", "c", "d", "spam"]).to_csv(named, index=False)
    by_position = load_problem(Config(data_path=str(plain), label_column="#4", n_workers=4))
    by_name = load_problem(Config(data_path=str(named), label_column="spam", n_workers=4))
    _same_problem(by_position, by_name)


@pytest.mark.parametrize("bad", ["#", "#x", "#4.5"])
def test_label_column_position_is_validated(bad):
    with pytest.raises(ValueError, match=r"'label_column' parameter of the config.*integer "
                                         r"after it, e.g. '#57'"):
        Config(data_path="data.csv", label_column=bad)


def test_npy_file_is_read_by_extension(tmp_path, table):
    path = tmp_path / "data.npy"
    np.save(path, table)
    X, y = load_table(path, label=-1)
    np.testing.assert_array_equal(X, table[:, :4])
    np.testing.assert_array_equal(y, table[:, 4])
    csv = tmp_path / "data.csv"
    np.savetxt(csv, table, delimiter=",", fmt="%.17g")  # exact text of every float64
    _same_problem(load_problem(Config(data_path=str(path), label_column="#-1", n_workers=4)),
                  load_problem(Config(data_path=str(csv), label_column="#-1", n_workers=4)))


def test_npy_file_must_be_a_2d_numeric_array(tmp_path):
    flat = tmp_path / "flat.npy"
    np.save(flat, np.arange(5.0))
    with pytest.raises(ValueError, match=r"must be 2-D .*Got shape \(5,\)"):
        load_table(flat, label=0)
    objects = tmp_path / "objects.npy"
    np.save(objects, np.array([[1, "a"], [2, "b"]], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="not a numeric numpy file"):  # allow_pickle=False
        load_table(objects, label=0)


def test_npz_file_is_read_by_extension(tmp_path, table):
    pair = tmp_path / "pair.npz"
    np.savez(pair, X=table[:, :4], y=table[:, 4])
    X, y = load_table(pair, label="y")
    np.testing.assert_array_equal(X, table[:, :4])
    np.testing.assert_array_equal(y, table[:, 4])
    single = tmp_path / "single.npz"
    np.savez(single, data=table)
    X, y = load_table(single, label="#-1")
    np.testing.assert_array_equal(X, table[:, :4])
    other = tmp_path / "other.npz"
    np.savez(other, a=table, b=table)
    with pytest.raises(ValueError, match=r"holds the arrays \['a', 'b'\].*'X' and 'y'"):
        load_table(other, label=0)
    short = tmp_path / "short.npz"
    np.savez(short, X=table[:, :4], y=table[:10, 4])
    with pytest.raises(ValueError, match="one label per row"):
        load_table(short, label="y")


def test_parquet_file_is_read_by_extension(tmp_path, table):
    pytest.importorskip("pyarrow")
    path = tmp_path / "data.parquet"
    pd.DataFrame(table, columns=["a", "b", "c", "d", "spam"]).to_parquet(path)
    X, y = load_table(path, label="spam")
    np.testing.assert_array_equal(X, table[:, :4])
    np.testing.assert_array_equal(y, table[:, 4])


def test_parquet_without_pyarrow_names_the_extra(tmp_path, monkeypatch):
    path = tmp_path / "data.parquet"
    path.write_bytes(b"PAR1")
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # `import pyarrow` fails as if absent
    with pytest.raises(ImportError, match=r'pip install "ray_robust\[parquet\]"'):
        load_table(path, label="y")


def _study_file(folder, data_path: str):
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "mine.yaml"
    path.write_text(f"name: mine\nparam_space:\n  data_path: {data_path}\n  label_column: y\n"
                    "  n_workers: 4\n  rounds: 4\n  report_every: 2\n"
                    "  lam: {grid_search: [1.0, 3.0]}\n  seed: 0\n")
    return path


def _csv(path, table):
    pd.DataFrame(table, columns=["a", "b", "c", "d", "y"]).to_csv(path, index=False)
    return path


def test_relative_data_path_in_a_study_is_resolved_against_the_study_file(
        tmp_path, table, monkeypatch):
    from ray_robust.studies import load_study

    study_file = _study_file(tmp_path / "studies", "mydata.csv")
    data = _csv(tmp_path / "studies" / "mydata.csv", table)
    monkeypatch.chdir(tmp_path)  # not where the data is
    study = load_study(study_file)
    assert {t.config.data_path for t in study.trials} == {str(data)}


def test_relative_data_path_in_a_study_falls_back_to_the_working_directory(
        tmp_path, table, monkeypatch):
    from ray_robust.studies import load_study

    study_file = _study_file(tmp_path / "studies", "data/mydata.csv")
    (tmp_path / "work" / "data").mkdir(parents=True)
    data = _csv(tmp_path / "work" / "data" / "mydata.csv", table)
    monkeypatch.chdir(tmp_path / "work")
    assert {t.config.data_path for t in load_study(study_file).trials} == {str(data)}
    assert load_study({"param_space": {"data_path": "data/mydata.csv", "label_column": "y"}}
                      ).param_space["data_path"] == str(data)  # a dict: the working directory


def test_relative_data_path_in_a_study_runs_in_tune(tmp_path, table, monkeypatch):
    """The bug as a user met it: a study beside its CSV, run from elsewhere; every trial ran
    in Tune's own working directory and failed with 'No data file at mydata.csv'."""
    from ray_robust.studies import run_study_full

    study_file = _study_file(tmp_path / "studies", "mydata.csv")
    _csv(tmp_path / "studies" / "mydata.csv", table)
    monkeypatch.chdir(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = run_study_full(study_file, storage=tmp_path / "out", log=None)
    assert res.num_errors == 0 and len(res.results) == 2
    assert res.results["error"].notna().all()


def _own_csv(tmp_path, table):
    return _csv(tmp_path / "mine.csv", table)


def test_data_path_without_label_column_never_advises_deleting_it(tmp_path, table):
    path = _own_csv(tmp_path, table)
    with pytest.raises(ValueError) as exc:
        load_spambase(path)
    msg = str(exc.value)
    assert "not Spambase" in msg and "--label-column" in msg and "delete" not in msg
    proc = subprocess.run([sys.executable, "-m", "ray_robust.cli", "train", "--data-path",
                           str(path), "--rounds", "2"], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 2
    assert "not Spambase" in proc.stderr and "--label-column" in proc.stderr
    assert "delete" not in proc.stderr
    array = tmp_path / "mine.npy"
    np.save(array, table)
    with pytest.raises(ValueError, match=r"mine.npy is a numpy array file, not Spambase") as exc:
        load_spambase(array)  # not a UTF-8 decode error
    assert "--label-column" in str(exc.value) and "delete" not in str(exc.value)


def test_only_a_bad_cached_spambase_is_advised_to_be_deleted(tmp_path, table, monkeypatch):
    """The cache is the library's own copy (downloaded again when deleted); a file in
    $RAY_ROBUST_DATA_DIR is the user's: replace it or unset the variable."""
    cache = tmp_path / "cache" / "ray_robust"
    cache.mkdir(parents=True)
    _csv(cache / "spambase.data", table)
    monkeypatch.delenv("RAY_ROBUST_DATA_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    with pytest.raises(ValueError, match="delete it so that it is downloaded again"):
        load_spambase()
    monkeypatch.setenv("RAY_ROBUST_DATA_DIR", str(cache))
    with pytest.raises(ValueError, match="unset RAY_ROBUST_DATA_DIR") as exc:
        load_spambase()
    assert "delete" not in str(exc.value)
