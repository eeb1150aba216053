"""Non-iid sharding, user tables and the synthetic generator (issue 6)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ray_robust.api import load_problem, train
from ray_robust.config import Config
from ray_robust.data import (
    load_spambase,
    load_table,
    make_shards,
    make_synthetic,
    prepare,
    shard,
)


def _labels(n=3000, k=4, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, size=n).astype(float)
    X = np.column_stack([y, rng.normal(size=(n, 2))])  # column 0 identifies each sample's label
    return X, y


def _every_sample_once(shards, X):
    real = shards.weights > 0
    got = np.sort(shards.X[real][:, 1])
    np.testing.assert_array_equal(got, np.sort(X[:, 1]))
    np.testing.assert_allclose(shards.weights.sum(axis=1), 1.0)
    np.testing.assert_array_equal(shards.X[real][:, 0], shards.y[real])  # labels travel along


def _proportions(shards, k):
    real = shards.weights > 0
    return np.array([[np.sum((shards.y[i] == c) & real[i]) for c in range(k)]
                     for i in range(shards.n_workers)]) / shards.sizes[:, None]


def test_iid_is_the_original_shard():
    X, y = _labels()
    a = make_shards(X, y, 7, np.random.default_rng(1))
    b = shard(X, y, 7, np.random.default_rng(1))
    np.testing.assert_array_equal(a.X, b.X)
    np.testing.assert_array_equal(a.weights, b.weights)


@pytest.mark.parametrize("alpha", [0.1, 1.0, 100.0])
def test_dirichlet_label_proportions(alpha):
    """Label shares per worker follow Dir(α): small α → few classes per worker (skew), large
    α → close to the global shares. Checked against the Dirichlet's own statistics."""
    k, m = 4, 20
    X, y = _labels(n=8000, k=k)
    shards = make_shards(X, y, m, np.random.default_rng(2), sharding="dirichlet",
                         dirichlet_alpha=alpha)
    _every_sample_once(shards, X)
    # each class is split over workers by p_c ~ Dir(α·1_m): E p_c,i = 1/m and
    # Var p_c,i = (1/m)(1 − 1/m)/(mα + 1); compare the per-class shares' spread with that
    counts = np.array([[np.sum((shards.y[i] == c) & (shards.weights[i] > 0)) for i in range(m)]
                       for c in range(k)])
    shares = counts / counts.sum(axis=1, keepdims=True)
    expected_sd = np.sqrt((1 / m) * (1 - 1 / m) / (m * alpha + 1))
    assert shares.std() == pytest.approx(expected_sd, rel=0.35)
    props = _proportions(shards, k)
    if alpha == 100.0:
        assert np.abs(props - 0.25).max() < 0.12
    if alpha == 0.1:
        assert np.median(props.max(axis=1)) > 0.7  # most workers are dominated by one class


def test_sorted_split_is_extreme():
    k, m = 4, 8
    X, y = _labels(n=2000, k=k)
    shards = make_shards(X, y, m, np.random.default_rng(3), sharding="sorted")
    _every_sample_once(shards, X)
    props = _proportions(shards, k)
    assert (props.max(axis=1) == 1.0).sum() >= m - k + 1  # at most k − 1 workers straddle
    assert np.abs(shards.sizes - 2000 / m).max() <= 1


def test_quantity_skew_gives_uneven_sizes_with_iid_labels():
    X, y = _labels(n=4000, k=2)
    shards = make_shards(X, y, 10, np.random.default_rng(4), sharding="quantity",
                         dirichlet_alpha=0.5)
    _every_sample_once(shards, X)
    assert shards.sizes.max() > 3 * shards.sizes.min()
    assert shards.sizes.min() >= 1


def test_sharding_is_seeded_and_errors_are_clear():
    X, y = _labels()
    a = make_shards(X, y, 5, np.random.default_rng(9), sharding="dirichlet", dirichlet_alpha=0.3)
    b = make_shards(X, y, 5, np.random.default_rng(9), sharding="dirichlet", dirichlet_alpha=0.3)
    np.testing.assert_array_equal(a.y, b.y)
    with pytest.raises(ValueError, match="'sharding' parameter"):
        make_shards(X, y, 5, np.random.default_rng(0), sharding="random")
    with pytest.raises(ValueError, match="'dirichlet_alpha' parameter"):
        make_shards(X, y, 5, np.random.default_rng(0), sharding="dirichlet", dirichlet_alpha=0)
    with pytest.raises(ValueError, match="without a sample"):
        make_shards(X[:30], y[:30], 25, np.random.default_rng(0), sharding="dirichlet",
                    dirichlet_alpha=0.01)
    with pytest.raises(ValueError, match="class labels"):
        make_shards(X, y + 0.5, 5, np.random.default_rng(0), sharding="sorted")


def test_config_sharding_reaches_the_problem(data_dir):
    iid = load_problem(Config(seed=0))
    skew = load_problem(Config(seed=0, sharding="dirichlet", dirichlet_alpha=0.1))
    # same split and standardization, different shards
    np.testing.assert_array_equal(iid.X_test, skew.X_test)
    spam_iid = (iid.shards.y * (iid.shards.weights > 0)).sum(1) / iid.shards.sizes
    spam_skew = (skew.shards.y * (skew.shards.weights > 0)).sum(1) / skew.shards.sizes
    assert spam_skew.std() > 3 * spam_iid.std()
    with pytest.raises(ValueError, match="'sharding' parameter"):
        Config(sharding="by-label")


def test_weighted_mean_on_uneven_shards_is_global_erm(data_dir):
    """With uneven shards, weighted=True makes the mean of local means the global mean
    gradient, so the run equals single-machine gradient descent on all training data."""
    cfg = Config(aggregator="mean", wrm=False, rounds=5, seed=0, sharding="quantity",
                 dirichlet_alpha=0.5, weighted=True)
    pb = load_problem(cfg)
    assert pb.shards.sizes.max() > 2 * pb.shards.sizes.min()
    hist = train(cfg, problem=pb)
    from ray_robust.algorithm import Server

    model = Server(cfg, pb).model
    theta = Server(cfg, pb).initial_state().theta
    n = pb.X_train.shape[0]
    for _ in range(5):
        g = model.mean_grad_theta(theta, pb.X_train[None], pb.y_train[None],
                                  np.full((1, n), 1.0 / n))[0]
        theta = theta - cfg.eta * g
    np.testing.assert_allclose(hist.theta, theta, rtol=1e-10)
    unweighted = train(cfg.replace(weighted=False), problem=pb)
    assert np.abs(unweighted.theta - theta).max() > 1e-6


def test_spambase_prepare_is_unchanged(data_dir):
    """prepare() with the defaults is the spine's: stratified split, even iid shards."""
    X, y = load_spambase()
    pb = prepare(X, y, n_workers=20, seed=0)
    assert pb.shards.sizes.max() - pb.shards.sizes.min() <= 1
    assert pb.shards.sizes.sum() == pb.X_train.shape[0] == round(0.8 * 1813) + round(0.8 * 2788)
    assert pb.y_train.mean() == pytest.approx(y.mean(), abs=1e-3)


# ---- user data -------------------------------------------------------------------------------


def test_load_table_from_csv_pandas_and_numpy(tmp_path):
    df = pd.DataFrame({"a": [1.0, 2.0, 3.0], "b": [0, 1, 0], "label": [1, 0, 1]})
    path = tmp_path / "data.csv"
    df.to_csv(path, index=False)
    for source in (path, str(path), df):
        X, y = load_table(source, label="label")
        np.testing.assert_array_equal(X, [[1, 0], [2, 1], [3, 0]])
        np.testing.assert_array_equal(y, [1, 0, 1])
        assert X.dtype == y.dtype == np.float64
    X, y = load_table(df, label="label", features=["b"])
    assert X.shape == (3, 1)
    X, y = load_table(df.to_numpy(), label=0)
    np.testing.assert_array_equal(y, [1, 2, 3])


@pytest.mark.parametrize(
    ("frame", "kwargs", "match"),
    [({"a": [1.0], "y": [0]}, {"label": "target"}, "label column 'target' is not in the data"),
     ({"a": ["x"], "y": [0]}, {"label": "y"}, r"Column\(s\) \['a'\] are not numeric"),
     ({"a": [np.nan], "y": [0]}, {"label": "y"}, r"\['a'\] contain NaN"),
     ({"a": [1.0], "y": [np.inf]}, {"label": "y"}, r"\['y'\] contain NaN or infinite"),
     ({"a": [1.0], "y": [0]}, {"label": "y", "features": ["b"]}, r"\['b'\] are not in"),
     ({"y": [0]}, {"label": "y"}, "no feature column")],
)
def test_load_table_errors_name_the_column(frame, kwargs, match):
    with pytest.raises(ValueError, match=match):
        load_table(pd.DataFrame(frame), **kwargs)


def test_load_table_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="No data file"):
        load_table(tmp_path / "nope.csv", label="y")


def test_user_data_trains_end_to_end(tmp_path):
    X, y = make_synthetic(600, 4, task="logistic", noise=0.2, seed=1)
    df = pd.DataFrame(X, columns=[f"x{i}" for i in range(4)]).assign(spam=y)
    path = tmp_path / "mine.csv"
    df.to_csv(path, index=False)
    Xl, yl = load_table(path, label="spam")
    pb = prepare(Xl, yl, n_workers=5, sharding="dirichlet", dirichlet_alpha=0.5, seed=0)
    cfg = Config(n_workers=5, rounds=60, alpha=0.2, attack="alie",
                 aggregator="geometric_median")
    fin = train(cfg, problem=pb).final
    assert fin["test_error"] < 0.2


# ---- synthetic -------------------------------------------------------------------------------


@pytest.mark.parametrize("task", ["logistic", "softmax", "regression", "circles"])
def test_make_synthetic_is_seeded(task):
    a = make_synthetic(500, 6, task=task, seed=3)
    b = make_synthetic(500, 6, task=task, seed=3)
    c = make_synthetic(500, 6, task=task, seed=4)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])
    assert a[0].shape == (500, 6) and a[1].shape == (500,)


def test_make_synthetic_labels():
    _, y = make_synthetic(2000, 3, task="softmax", n_classes=5, seed=0)
    assert set(np.unique(y)) == {0, 1, 2, 3, 4}
    X, y = make_synthetic(4000, 3, task="circles", noise=0.0, margin=0.2, seed=0)
    r = np.hypot(X[:, 0], X[:, 1])
    assert np.abs(r - np.sqrt(2 * np.log(2))).min() >= 0.2
    assert 0.3 < y.mean() < 0.7
    _, y = make_synthetic(20000, 3, task="logistic", noise=0.0, seed=0)
    assert 0.45 < y.mean() < 0.55
    with pytest.raises(ValueError, match="'task' parameter"):
        make_synthetic(10, 2, task="moons")


def test_regression_split_is_not_stratified():
    X, y = make_synthetic(1000, 3, task="regression", seed=0)
    pb = prepare(X, y, n_workers=4, seed=0)
    assert pb.X_train.shape[0] == 800 and pb.X_test.shape[0] == 200


def test_config_label_column_trains_on_a_user_csv(tmp_path):
    X, y = make_synthetic(600, 4, task="logistic", noise=0.2, seed=2)
    path = tmp_path / "user.csv"
    pd.DataFrame(X, columns=list("abcd")).assign(target=y).to_csv(path, index=False)
    cfg = Config(data_path=str(path), label_column="target", n_workers=6, rounds=40,
                 alpha=0.2, attack="ipm", aggregator="trimmed_mean", sharding="dirichlet")
    pb = load_problem(cfg)
    assert pb.X_train.shape[1] == 4 and pb.X_train.shape[0] + pb.X_test.shape[0] == 600
    assert train(cfg, problem=pb).final["test_error"] < 0.2
    with pytest.raises(ValueError, match=r"'label_column' parameter .* needs data_path"):
        Config(label_column="target")
    with pytest.raises(ValueError, match="label column 'spam' is not in the data"):
        load_problem(cfg.replace(label_column="spam"))
