"""Loading Spambase (every place it looks, every way it can be wrong), split, scaling, shards."""

from __future__ import annotations

import numpy as np
import pytest

from ray_robust.data import load_spambase, prepare, shard, stratified_split


def test_loads_and_validates(data_dir):
    X, y = load_spambase(data_dir / "spambase.data")
    assert X.shape == (4601, 57) and y.shape == (4601,)
    assert int(y.sum()) == 1813
    X2, _ = load_spambase(data_dir)  # a folder works too
    assert X2 is X  # parsed once per process


def test_environment_variable_is_used(data_dir, monkeypatch, tmp_path):
    monkeypatch.setenv("RAY_ROBUST_DATA_DIR", str(data_dir))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    X, _ = load_spambase()
    assert X.shape == (4601, 57)


def test_missing_everywhere_names_every_place(monkeypatch, tmp_path):
    monkeypatch.setenv("RAY_ROBUST_DATA_DIR", str(tmp_path / "nowhere"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    # no network here, or a blocked one: make the download fail for certain
    monkeypatch.setattr("ray_robust.data.SPAMBASE_URL", "http://127.0.0.1:9/spambase.zip")
    with pytest.raises(FileNotFoundError) as exc:
        load_spambase()
    msg = str(exc.value)
    assert "nowhere" in msg and "cache" in msg and "RAY_ROBUST_DATA_DIR" in msg
    with pytest.raises(FileNotFoundError, match="No Spambase file"):
        load_spambase(tmp_path / "missing.data")


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda lines: lines[:100], "truncated"),
        (lambda lines: [lines[0].replace("0.64", "abc", 1), *lines[1:]], "not a valid"),
        (lambda lines: [lines[0].replace("0.64", "nan", 1), *lines[1:]], "NaN"),
        (lambda lines: [lines[0][: lines[0].rfind(",")] + ",2", *lines[1:]], "0 or 1"),
    ],
)
def test_corrupt_files_give_one_clear_error(data_dir, tmp_path, mutate, match):
    lines = (data_dir / "spambase.data").read_text().splitlines()
    bad = tmp_path / "spambase.data"
    bad.write_text("\n".join(mutate(lines)) + "\n")
    with pytest.raises(ValueError, match=match) as exc:
        load_spambase(bad)
    assert str(bad) in str(exc.value)


def test_stratified_split_keeps_the_spam_ratio():
    y = np.r_[np.ones(1813), np.zeros(2788)].astype(int)
    tr, te = stratified_split(y, 0.8, np.random.default_rng(0))
    assert len(tr) + len(te) == 4601 and not set(tr) & set(te)
    assert abs(y[tr].mean() - y[te].mean()) < 1e-3
    assert len(tr) == round(0.8 * 1813) + round(0.8 * 2788)


def test_shards_are_even_and_lose_nothing():
    rng = np.random.default_rng(1)
    X = np.arange(23 * 2, dtype=float).reshape(23, 2)
    y = np.arange(23, dtype=float)
    s = shard(X, y, 5, rng)
    assert s.sizes.tolist() == [5, 5, 5, 4, 4]  # remainder 3 → the first three workers
    np.testing.assert_allclose(s.weights.sum(axis=1), 1.0)
    real = s.weights > 0
    assert sorted(s.y[real].tolist()) == y.tolist()  # every sample exactly once
    np.testing.assert_array_equal(s.X[~real], 0.0)


def test_prepare_is_seeded_and_standardizes_with_training_statistics(data_dir):
    X, y = load_spambase(data_dir)
    a = prepare(X, y, n_workers=20, seed=3)
    b = prepare(X, y, n_workers=20, seed=3)
    c = prepare(X, y, n_workers=20, seed=4)
    np.testing.assert_array_equal(a.shards.X, b.shards.X)
    assert not np.array_equal(a.X_test, c.X_test)
    np.testing.assert_allclose(a.X_train.mean(axis=0), 0, atol=1e-12)
    np.testing.assert_allclose(a.X_train.std(axis=0), 1, atol=1e-12)
    assert abs(a.X_test.mean()) > 1e-6  # test set scaled with the training statistics
    raw = prepare(X, y, n_workers=20, seed=3, standardize="none")
    assert raw.X_train.max() > 100
    assert a.shards.X.shape == (20, 184, 57)


def test_prepare_rejects_bad_values(data_dir):
    X, y = load_spambase(data_dir)
    with pytest.raises(ValueError, match=r"'n_workers'.*at most"):
        prepare(X, y, n_workers=5000)
    with pytest.raises(ValueError, match="'train_fraction'"):
        prepare(X, y, n_workers=2, train_fraction=1.0)
    with pytest.raises(ValueError, match=r"'standardize'.*zscore"):
        prepare(X, y, n_workers=2, standardize="minmax")
