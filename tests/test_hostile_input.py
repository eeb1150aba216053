"""Hostile but typed input (issue 14): each defect class gets one clear error, checked before
any work starts, never a hang, a traceback, or silently wrong numbers."""

from __future__ import annotations

import time

import numpy as np
import pytest

from ray_robust import Config, prepare
from ray_robust.cli import main


def _bomb(levels: int = 9) -> str:
    lines = ['a0: &a0 ["x","x","x","x","x","x","x","x","x"]']
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]")
    lines.append("lam: [" + ",".join([f"*a{levels - 1}"] * 9) + "]")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("command", [["train", "--config"], ["tune"]])
def test_yaml_alias_bomb_is_refused_in_seconds(command, tmp_path, capsys):
    """A 600-byte file expanding to 9**10 nodes: its repr in an error message used to hang."""
    path = tmp_path / "bomb.yaml"
    path.write_text(_bomb())
    assert path.stat().st_size < 1000
    t0 = time.perf_counter()
    assert main([*command, str(path)]) == 2
    assert time.perf_counter() - t0 < 10
    err = capsys.readouterr().err
    assert "alias bomb" in err and len(err) < 400


def test_every_echoed_value_is_bounded():
    with pytest.raises(ValueError) as exc:
        Config(lam=list(range(10**6)))
    assert len(str(exc.value)) < 400 and "'lam'" in str(exc.value)

    class Hostile:
        def __repr__(self):
            raise RuntimeError("no")

    with pytest.raises(ValueError, match="Got <Hostile"):
        Config(lam=Hostile())


def test_yaml_duplicate_keys_are_an_error(tmp_path, capsys):
    path = tmp_path / "run.yaml"
    path.write_text("lam: 1.0\nrounds: 2\nlam: 5.0\n")
    assert main(["train", "--config", str(path)]) == 2
    assert "duplicate key 'lam'" in capsys.readouterr().err


def test_yaml_reads_1e_minus_1_as_a_number(tmp_path, data_dir):
    """YAML 1.1 reads `1e-1` (no dot) as the string '1e-1'; the config would refuse it."""
    from ray_robust._validation import load_yaml_mapping

    path = tmp_path / "run.yaml"
    path.write_text("lam: 1e-1\neta_z: 5E-2\nrounds: 1e2\n")
    values = load_yaml_mapping(path, "config", "of parameters")
    assert values == {"lam": 0.1, "eta_z": 0.05, "rounds": 100.0}


@pytest.mark.parametrize(("values", "pattern"), [
    ({"shift_eps": 0.3}, "'shift_eps'.*needs a shift norm"),
    ({"algorithm": "erm", "aggregator": "krum"}, "'algorithm'.*means aggregator = 'mean'"),
    ({"algorithm": "alg2", "wrm": False}, "'algorithm'.*means wrm = True"),
    ({"lam": 1e308}, "'lam'.*1e\\+100"),
], ids=["shift-eps-without-norm", "algorithm-vs-aggregator", "algorithm-vs-wrm", "lam-1e308"])
def test_contradicting_or_extreme_values_are_one_clear_error(values, pattern):
    with pytest.raises(ValueError, match=pattern):
        Config.from_dict(values)


def test_a_train_fraction_that_empties_the_test_set_is_an_error():
    X, y = np.random.default_rng(0).normal(size=(40, 3)), np.tile([0.0, 1.0], 20)
    with pytest.raises(ValueError, match="'train_fraction' parameter leaves no test sample"):
        prepare(X, y, n_workers=2, train_fraction=0.99)


def test_features_too_large_to_standardize_are_an_error():
    X = np.random.default_rng(0).normal(size=(40, 3))
    X[:, 1] *= 1e307
    with pytest.raises(ValueError, match=r"Feature column\(s\) \[1\] are too large"):
        prepare(X, np.tile([0.0, 1.0], 20), n_workers=2)


@pytest.mark.parametrize("argv", [
    ["reproduce", "table1", "--rounds", "0"],
    ["reproduce", "table1", "--seeds", "0"],
    ["train", "--lam", "1e308"],
    ["train", "--algorithm", "erm", "--aggregator", "krum"],
    ["train", "--shift-eps", "0.3"],
    ["train", "--model", "mlp", "--hidden", "1000000000"],  # a model too big for memory
])
def test_cli_extreme_values_are_one_line_and_status_2(argv, capsys, data_dir):
    t0 = time.perf_counter()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("ray-robust: error:") and "\n" not in err
    assert time.perf_counter() - t0 < 5  # refused before any work


def test_a_complex_column_in_load_table_is_an_error():
    import pandas as pd

    from ray_robust import load_table

    df = pd.DataFrame({"a": [1 + 2j, 3 + 0j, 1j, 2], "b": [1.0, 2, 3, 4], "y": [0, 1, 0, 1]})
    with pytest.raises(ValueError, match=r"Column\(s\) \['a'\] are complex"):
        load_table(df, label="y")


def test_a_study_grid_too_large_to_enumerate_says_so_in_seconds():
    from ray_robust.studies import load_study

    axis = {"grid_search": list(range(100))}
    study = {"name": "huge", "param_space": {"seed": axis, "t_z": axis, "rounds": axis,
                                             "n_workers": {"grid_search": list(range(1, 11))}}}
    t0 = time.perf_counter()
    with pytest.raises(ValueError, match=r"10,000,000 trials \(seed 100 × t_z 100"):
        load_study(study)
    assert time.perf_counter() - t0 < 5


def test_an_infinite_round_timeout_is_an_error():
    from ray_robust.engines.ray_engine import RayTrainer

    with pytest.raises(ValueError, match=r"'round_timeout'.*finite"):
        RayTrainer(None, round_timeout=float("inf"))
