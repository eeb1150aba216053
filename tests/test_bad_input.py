"""Bad input, every kind (issue 7, point 5): the API raises ``ValueError`` /
``FileNotFoundError`` and the CLI prints the same message in one line, exit status 2.

Each case runs twice, through :func:`ray_robust.train` (or the study loader) and through
``ray-robust`` (``cli.main`` in-process: what escapes ``main`` would be a traceback).
Cases outside the paper's guarantee are legitimate experiments: they only warn, and run.
This is the list of bad config values; neighbouring unit tests: tests/test_config.py (values of
the wrong type, which the CLI's own parser refuses first), tests/test_data.py (every way the
Spambase file can be wrong), tests/test_studies.py (every study-file error).
"""

from __future__ import annotations

import re
import subprocess
import sys
import warnings

import pytest
import yaml

from ray_robust import Config, GuaranteeWarning, train
from ray_robust.algorithm import DivergenceError
from ray_robust.cli import main
from ray_robust.studies import load_study

VALID_AGGREGATORS = r"\['bulyan', 'centered_clipping', 'geometric_median', 'krum', 'mean'"


def _spambase_lines(data_dir) -> list[str]:
    return (data_dir / "spambase.data").read_text().splitlines()


#: the data files of the cases: name → f(data_dir) -> file text
FILES = {
    "truncated.data": lambda d: "\n".join(_spambase_lines(d)[:100]) + "\n",
    "text.data": lambda d: "\n".join([_spambase_lines(d)[0].replace("0.64", "abc", 1),
                                      *_spambase_lines(d)[1:]]) + "\n",
    "nan.data": lambda d: "\n".join([_spambase_lines(d)[0].replace("0.64", "nan", 1),
                                     *_spambase_lines(d)[1:]]) + "\n",
    "labels.data": lambda d: "\n".join(
        [_spambase_lines(d)[0][: _spambase_lines(d)[0].rfind(",")] + ",2",
         *_spambase_lines(d)[1:]]) + "\n",
    "table_text.csv": lambda d: "a,b,y\n1,x,0\n2,3,1\n",
    "table_nan.csv": lambda d: "a,b,y\n1,,0\n2,3,1\n",
    "table_labels.csv": lambda d: "a,b,y\n" + "".join(f"{i},{i % 3},{i % 3}\n"
                                                      for i in range(60)),
}

#: id → (config values; "@name" = a file of FILES, error type, message regex)
CASES = {
    "alpha=1": ({"alpha": 1.0}, ValueError, r"'alpha' parameter of the config.*\[0, 1\)"),
    "alpha<0": ({"alpha": -0.1}, ValueError, r"'alpha' parameter"),
    "beta>1": ({"beta": 1.2}, ValueError, r"'beta' parameter.*Got 1.2"),
    "lam=0": ({"lam": 0.0}, ValueError, r"'lam' parameter"),
    "lam<0": ({"lam": -1.0}, ValueError, r"'lam' parameter"),
    "lam=nan": ({"lam": float("nan")}, ValueError, r"'lam' parameter.*finite.*Got nan"),
    "t_z<0": ({"t_z": -1}, ValueError, r"'t_z' parameter"),
    "eta=0": ({"eta": 0.0}, ValueError, r"'eta' parameter"),
    "eta<0": ({"eta": -0.5}, ValueError, r"'eta' parameter"),
    "eta_z<0": ({"eta_z": -0.1}, ValueError, r"'eta_z' parameter.*Got -0.1"),
    "rounds=0": ({"rounds": 0}, ValueError, r"'rounds' parameter.*integer >= 1. Got 0"),
    "m=0": ({"n_workers": 0}, ValueError, r"'n_workers' parameter.*integer >= 1. Got 0"),
    "beta-screens-all": ({"beta": 0.99}, ValueError,
                         r"'beta' parameter.*leave NBS at least one of the 20 inputs"),
    "m>N": ({"n_workers": 5000}, ValueError, r"'n_workers'.*at most"),
    "all-byzantine": ({"alpha": 0.99}, ValueError, r"at least one honest worker.*alpha < 0.975"),
    "aggregator": ({"aggregator": "avg"}, ValueError, rf"'aggregator'.*{VALID_AGGREGATORS}"),
    "attack": ({"attack": "meteor"}, ValueError, r"'attack'.*\['aggressive', 'alie'"),
    "model": ({"model": "transformer"}, ValueError, r"'model'.*\['least_squares', 'logistic'"),
    "shift_norm": ({"shift_norm": "l3"}, ValueError,
                   r"'shift_norm'.*\['l1', 'l2', 'linf', 'none'\]. Got 'l3'"),
    "missing-file": ({"data_path": "/no/such/spambase.data"}, FileNotFoundError,
                     r"No Spambase file"),
    "truncated": ({"data_path": "@truncated.data"}, ValueError, r"truncated"),
    "non-numeric": ({"data_path": "@text.data"}, ValueError, r"not a valid"),
    "nan-features": ({"data_path": "@nan.data"}, ValueError, r"NaN"),
    "labels": ({"data_path": "@labels.data"}, ValueError, r"0 or 1"),
    "csv-missing": ({"data_path": "/no/such.csv", "label_column": "y"}, FileNotFoundError,
                    r"No data file at /no/such.csv"),
    "csv-non-numeric": ({"data_path": "@table_text.csv", "label_column": "y"}, ValueError,
                        r"\['b'\] are not numeric"),
    "csv-nan": ({"data_path": "@table_nan.csv", "label_column": "y"}, ValueError,
                r"\['b'\] contain NaN"),
    "csv-labels": ({"data_path": "@table_labels.csv", "label_column": "y", "n_workers": 2},
                   ValueError, r"'logistic' model takes at most 2 label values.*\[0, 1, 2\]"),
    "diverges": ({"model": "least_squares", "eta": 1.0}, DivergenceError,
                 r"Round 5 of 300: the run diverged.*use a smaller eta \(now 1\), e.g. 0.1"),
}


def _values(values: dict, tmp_path, data_dir) -> dict:
    out = {}
    for key, value in values.items():
        if isinstance(value, str) and value.startswith("@"):
            path = tmp_path / value[1:]
            path.write_text(FILES[value[1:]](data_dir))
            value = str(path)
        out[key] = value
    return out


def _cli_args(values: dict) -> list[str]:
    return [a for k, v in values.items() for a in (f"--{k.replace('_', '-')}", str(v))]


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("ray-robust: error: "), err
    return err[0].removeprefix("ray-robust: error: ")


@pytest.mark.parametrize("case", list(CASES))
def test_api_and_cli_give_the_same_one_line_error(case, tmp_path, data_dir, capsys):
    values, kind, pattern = CASES[case]
    values = _values(values, tmp_path, data_dir)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. the guarantee warnings of alpha = 0.99
        with pytest.raises(kind, match=pattern) as exc:
            train(Config.from_dict(values))
        assert "\n" not in str(exc.value)
        capsys.readouterr()
        assert main(["train", "--progress", "100000", *_cli_args(values)]) == 2
    assert _one_line_error(capsys) == str(exc.value)


def test_divergence_on_the_ray_engine_is_the_same_clear_error(ray_session, data_dir):
    cfg = Config(model="least_squares", eta=1.0)
    with pytest.raises(DivergenceError, match=r"Round 5 of 300: the run diverged.*smaller eta"):
        train(cfg, engine="ray", actors=2)


def test_divergence_from_the_real_entry_point(data_dir):
    proc = subprocess.run(
        [sys.executable, "-m", "ray_robust.cli", "train", "--model", "least_squares", "--eta",
         "1", "--progress", "100000"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    err = [ln for ln in proc.stderr.splitlines() if ln.startswith("ray-robust: error:")]
    assert len(err) == 1 and "diverged" in err[0] and "smaller eta" in err[0]


@pytest.mark.parametrize(("text", "pattern"), [
    ("rounds: [1, 2\n", r"is not valid YAML"),
    ("- just\n- a list\n", r"must hold a mapping"),
    ("lamda: 3\n", r"Unknown config parameter\(s\) \['lamda'\]. Valid ones: \['algorithm'"),
], ids=["malformed", "not-a-mapping", "unknown-key"])
def test_bad_run_yaml(text, pattern, tmp_path, capsys):
    path = tmp_path / "run.yaml"
    path.write_text(text)
    assert main(["train", "--config", str(path)]) == 2
    assert re.search(pattern, _one_line_error(capsys))


STUDY = {"name": "s", "param_space": {"environment": "E1", "algorithm": "alg2", "rounds": 5,
                                      "seed": {"grid_search": [0, 1]}}, "plot": {"x": "seed"}}


@pytest.mark.parametrize(("text", "pattern"), [
    ("param_space: {seed: [0, 1\n", r"is not valid YAML"),
    (yaml.safe_dump({**STUDY, "param_space": {**STUDY["param_space"],
                                              "lamda": {"grid_search": [1, 2]}}}),
     r"unknown grid axis 'lamda'.*Valid names: \["),
    (yaml.safe_dump({**STUDY, "param_space": {**STUDY["param_space"],
                                              "beta": {"grid_search": [0.1, 1.5]}}}),
     r"'beta' parameter"),
], ids=["malformed-study", "unknown-grid-axis", "bad-grid-value"])
def test_bad_study(text, pattern, tmp_path, capsys):
    """Refused before Ray starts, in one line, by the API and by `ray-robust tune`."""
    path = tmp_path / "study.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match=pattern) as exc:
        load_study(path)
    assert main(["tune", str(path), "--storage", str(tmp_path)]) == 2
    assert _one_line_error(capsys) == str(exc.value)


@pytest.mark.parametrize(("values", "pattern"), [
    ({"alpha": 0.25, "beta": 0.15, "attack": "aggressive"}, r"β·m = 3 < α·m = 5"),
    ({"alpha": 0.35, "beta": 0.35, "attack": "aggressive"}, r"2α \+ β = 1.05 ≥ 1"),
    ({"lam": 30.0, "eta_z": 0.05}, r"η_z·λ = 1.5 ≥ 1.*using the Sec. VI-D step"),
    ({"lam": 0.01, "init_scale": 1.0}, r"λ = 0.01 ≤ L_zz/2 = .*not provably strongly concave"),
], ids=["beta<alpha", "2alpha+beta>=1", "eta_z*lam>=1", "lam<=L_zz/2"])
def test_outside_the_guarantee_only_warns_and_runs(values, pattern, data_dir, tmp_path, capsys):
    with pytest.warns(GuaranteeWarning, match=pattern):
        hist = train(Config.from_dict({**values, "rounds": 2}))
    assert len(hist.metrics) == 2
    with pytest.warns(GuaranteeWarning, match=pattern):  # the CLI shows it, and runs
        assert main(["train", "--rounds", "2", *_cli_args(values)]) == 0
    assert "done in" in capsys.readouterr().out
