"""Config validation: one clear ValueError naming the field; warnings outside the guarantee."""

from __future__ import annotations

import warnings

import pytest

from ray_robust import Config, GuaranteeWarning


@pytest.mark.parametrize(
    ("values", "pattern"),
    [
        ({"t_z": 2.5}, r"The 't_z' parameter of the config must be an integer >= 0. Got 2.5"),
        ({"wrm": "yes"}, r"The 'wrm' parameter of the config must be a bool. Got 'yes'"),
        ({"algorithm": "sgd"}, r"The 'algorithm' parameter .* one of \['alg2', .*Got 'sgd'"),
    ],
)
def test_wrong_types_name_the_field(values, pattern):
    """Values the CLI's argparse types refuse before Config sees them; every bad value the CLI
    passes on is in tests/test_bad_input.py (API and CLI, the same one-line error)."""
    with pytest.raises(ValueError, match=pattern):
        Config.from_dict(values)


def test_unknown_names_list_the_valid_ones():
    with pytest.raises(ValueError, match=r"Unknown config parameter\(s\) \['lamda'\].*'lam'"):
        Config.from_dict({"lamda": 3})
    with pytest.raises(ValueError, match=r"one of \['aggressive'"):
        Config(attack="agressive")


def test_paper_setting_is_silent_and_outside_settings_warn():
    cfg = Config(alpha=0.15, beta=0.15, attack="aggressive")  # Table I: αm = βm = 3
    assert (cfg.n_byzantine, cfg.n_screened, cfg.algorithm) == (3, 3, "alg2")
    assert cfg.guarantee_warnings() == []
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the constructor never warns: train and the CLI do
        outside = Config(alpha=0.25, beta=0.15, attack="aggressive")
    assert outside.guarantee_warnings() == [
        "β·m = 3 < α·m = 5: NBS cannot screen every byzantine worker; Theorem 1 (β ≥ α) does "
        "not cover this run."]
    with pytest.warns(GuaranteeWarning, match="2α \\+ β"):
        Config(alpha=0.35, beta=0.35, attack="counterexample").warn_outside_guarantee()


def test_unstable_wrm_step_falls_back_with_a_warning():
    cfg = Config(lam=30.0, eta_z=0.05)
    with pytest.warns(GuaranteeWarning, match="diverge"):
        cfg.warn_outside_guarantee()
    assert cfg.step_z == pytest.approx(1 / 60)
    assert Config(eta_z=None).step_z == pytest.approx(1 / 6)
    assert Config().step_z == 0.05


def test_algorithm_shorthand():
    for name, agg, wrm in [("erm", "mean", False), ("nbs", "nbs", False), ("dro", "mean", True),
                           ("alg2", "nbs", True)]:
        cfg = Config.from_dict({"algorithm": name})
        assert (cfg.aggregator, cfg.wrm, cfg.algorithm) == (agg, wrm, name)
