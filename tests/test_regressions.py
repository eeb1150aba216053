"""Regression tests named after the bug they caught."""

from __future__ import annotations

import numpy as np
import pytest

from ray_robust import Config
from ray_robust.core.models import get_model
from ray_robust.theory import ascent_plan_for


def test_ascent_plan_for_builds_the_model_with_its_options():
    """It called get_model(config.model) without n_classes: softmax K = 3 crashed in matmul."""
    cfg = Config(model="softmax", n_classes=3, lam=3.0)
    model = get_model("softmax", n_classes=3)
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(6, 4)), np.array([0, 1, 2, 2, 1, 0], dtype=float)
    theta = model.init(4, rng, 0.1)
    plan = ascent_plan_for(cfg, theta, X, y, epsilon=1e-3)
    l_zz = model.lipschitz_xx(theta)
    assert plan.lam_g == 2 * cfg.lam - l_zz and 0 < plan.rho < 1 and plan.t_z >= 1


def test_a_study_whose_only_axis_is_seed_aggregates_to_one_row():
    """`aggregate` grouped by no key: pandas raised 'No group keys passed!'."""
    import pandas as pd

    from ray_robust.studies import load_study
    from ray_robust.studies.results import aggregate

    study = load_study({"name": "seeds", "param_space": {"seed": {"grid_search": [0, 1, 2]},
                                                         "rounds": 5}})
    tidy = pd.DataFrame({"seed": [0, 1, 2], "error": [0.1, 0.2, 0.3]})
    (row,) = aggregate(tidy, study).to_dict("records")
    assert (row["y"], row["n_seeds"]) == ("error", 3)
    assert row["mean"] == pytest.approx(0.2) and row["sd"] == pytest.approx(0.1)
