"""The parameter table drives validation, stored values, the CLI, the schema and the docs.

The invalid-value test is generated: it walks every entry of ``PARAMS`` and feeds the values
its constraint names as invalid, so a new parameter is covered the moment it is declared.
"""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

import numpy as np
import pytest

from ray_robust import Config, GuaranteeWarning, train
from ray_robust.cli import build_parser, main
from ray_robust.config import (
    DATA_FIELDS,
    GROUPS,
    PARAMS,
    default,
    json_schema,
    reference_markdown,
)

ROOT = Path(__file__).resolve().parents[1]
CASES = [(name, bad) for name, spec in PARAMS.items() for bad in spec.constraint.invalid()]


def test_every_parameter_has_invalid_values_to_try():
    assert {name for name, _ in CASES} == set(PARAMS)


@pytest.mark.parametrize(("name", "bad"), CASES, ids=[f"{n}={b!r}"[:40] for n, b in CASES])
def test_every_invalid_value_is_refused_naming_its_parameter(name, bad):
    with pytest.raises(ValueError, match=f"'{name}'") as exc:
        Config.from_dict({name: bad})
    assert "\n" not in str(exc.value)


@pytest.mark.parametrize("name", list(PARAMS))
def test_defaults_pass_their_own_constraint_and_are_stored_as_given(name):
    value = default(name)
    assert PARAMS[name].constraint.check(value, name, "test") == value
    assert getattr(Config(), name) == value


def test_checked_values_are_stored_normalized():
    """numpy scalars are accepted and stored as Python numbers: to_dict() stays JSON-able."""
    cfg = Config(lam=np.float32(3), n_workers=np.int64(10), wrm=np.bool_(False),
                 eta_z=np.float64(0.05), t_z=np.int32(4), f=np.int16(1), aggregator="krum")
    for name, kind in [("lam", float), ("n_workers", int), ("wrm", bool), ("eta_z", float),
                       ("t_z", int), ("f", int)]:
        assert type(getattr(cfg, name)) is kind, name
    assert json.loads(json.dumps(cfg.to_dict()))["lam"] == 3.0
    assert Config.from_dict(cfg.to_dict()) == cfg


def test_groups_nest_or_flatten_to_the_same_config():
    nested = Config.from_dict({"server": {"aggregator": "krum", "f": 2},
                               "worker": {"lam": 2.0}, "rounds": 5})
    assert nested == Config(aggregator="krum", f=2, lam=2.0, rounds=5)
    with pytest.raises(ValueError, match="'lam' belongs to the 'worker' group"):
        Config.from_dict({"server": {"lam": 2.0}})
    with pytest.raises(ValueError, match="'lam' is given twice"):
        Config.from_dict({"worker": {"lam": 2.0}, "lam": 3.0})
    assert set(GROUPS) == {spec.group for spec in PARAMS.values()}


def test_the_cli_has_one_typed_flag_per_parameter():
    parser = build_parser()
    for name in PARAMS:
        value = default(name)
        if value is None:
            continue
        text = str(value).lower() if isinstance(value, bool) else str(value)
        args = parser.parse_args(["train", f"--{name.replace('_', '-')}", text])
        assert getattr(args, name) == value and type(getattr(args, name)) is type(value), name


def test_a_bad_flag_value_names_what_the_table_expects(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--t-z", "2.5"])
    assert "expected an integer >= 0, got '2.5'" in capsys.readouterr().err


def test_the_schema_and_the_docs_come_from_the_table():
    schema = json_schema()
    assert set(schema["properties"]) == {"algorithm", *PARAMS}
    assert schema["properties"]["beta"]["exclusiveMaximum"] == 1
    assert schema["properties"]["aggregator"]["enum"] == sorted(PARAMS["aggregator"]
                                                                .constraint.options)
    doc = (ROOT / "docs" / "config.md").read_text()
    assert doc == reference_markdown(), "regenerate: ray-robust config --docs > docs/config.md"
    for name in PARAMS:
        assert f"| `{name}` |" in doc


def test_the_yaml_template_is_a_valid_config(tmp_path, capsys):
    assert main(["config"]) == 0
    template = tmp_path / "run.yaml"
    template.write_text(capsys.readouterr().out)
    import yaml

    assert Config.from_dict(yaml.safe_load(template.read_text())) == Config()


def test_the_data_fields_are_declared_once():
    assert DATA_FIELDS == ("n_workers", "sharding", "dirichlet_alpha", "train_fraction",
                           "standardize", "seed", "data_path", "label_column")
    assert Config(seed=1).data_key() != Config().data_key()
    assert Config(lam=9.0, attack="ipm").data_key() == Config().data_key()


def test_guarantee_warnings_come_once_from_train_and_point_at_the_caller(data_dir):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cfg = Config(alpha=0.3, attack="aggressive", rounds=1)  # constructing never warns
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train(cfg)
    ours = [w for w in caught if issubclass(w.category, GuaranteeWarning)]
    assert [str(w.message)[:16] for w in ours] == ["β·m = 3 < α·m = "]
    assert ours[0].filename == __file__


def test_no_silencing_blocks_remain_in_the_library():
    """The warnings left the constructor, so nothing needs to silence them any more."""
    offenders = [str(p.relative_to(ROOT)) for p in (ROOT / "ray_robust").rglob("*.py")
                 if re.search(r"simplefilter\(\"ignore\"\)", p.read_text())]
    assert offenders == []


def test_the_readme_test_command_is_what_ci_runs():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    install = re.search(r'pip install[^\n]*-e "(\.\[[^\]]*\])"', ci).group(1)
    section = readme.split("## Two commands", 1)[1].split("\n## ", 1)[0]
    assert f'pip install -e "{install}"' in section
    assert "python -m pytest" in section and "python -m pytest" in ci


def test_the_readme_run_config_example_is_a_valid_config():
    import yaml

    readme = (ROOT / "README.md").read_text()
    block = readme.split("# my_run.yaml\n", 1)[1].split("```", 1)[0]
    cfg = Config.from_dict(yaml.safe_load(block))
    assert (cfg.algorithm, cfg.attack, cfg.shift_norm, cfg.rounds) == ("alg2", "aggressive",
                                                                       "l2", 300)
