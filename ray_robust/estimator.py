"""A scikit-learn classifier around :func:`ray_robust.train`: :class:`RobustClassifier`.

Needs the ``sklearn`` extra (``pip install 'ray_robust[sklearn]'``); ``import ray_robust``
works without it. The preprocessing (z-scoring, the label encoding) and the predictions are
those of :class:`ray_robust.fitted.FittedModel`: nothing numerical is written here.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

try:
    from sklearn.base import BaseEstimator, ClassifierMixin
    from sklearn.utils.multiclass import check_classification_targets
    from sklearn.utils.validation import check_is_fitted, validate_data
except ImportError:  # pragma: no cover - depends on the environment
    raise ImportError(
        "ray_robust.RobustClassifier needs scikit-learn >= 1.6: install the extra with "
        "`pip install 'ray_robust[sklearn]'` (or `pip install 'scikit-learn>=1.6'`)."
    ) from None

from .api import train
from .config import Config
from .data import BINARY_MODELS, LabelEncoding, prepare_all
from .fitted import FittedModel
from .seeds import SeedStreams


class RobustClassifier(ClassifierMixin, BaseEstimator):
    """Algorithm 2 (or a baseline) as a scikit-learn classifier, trained on all of ``X``.

    ``algorithm``: 'alg2' (WRM + NBS, the default), 'erm', 'nbs', 'dro', or None to give
    ``aggregator``/``wrm`` in ``options``; ``alpha``, ``attack``: the simulated byzantine
    workers; ``n_workers`` = m, ``rounds`` = T, ``lam`` = λ, ``eta`` = η; ``model``: 'auto'
    (logistic for two classes, softmax for more), 'logistic', 'mlp' (binary) or 'softmax';
    ``hidden``: the MLP's units; ``standardize``: 'zscore' (training statistics, kept in the
    model) or 'none'; ``sharding``: the split over workers; ``engine``: 'local' or 'ray';
    ``random_state``: the run's seed (an int: the same fit gives the same θ, on either
    engine); ``options``: any other :class:`ray_robust.Config` field as a dict (e.g.
    ``{"shift_norm": "l2", "shift_eps": 0.1}``); by default only the last round is evaluated;
    ``engine_options``: keywords of the Ray engine (``address``, ``actors``, ...).

    Labels may be any values (numbers or strings): ``classes_`` is ``np.unique(y)``, and
    ``predict`` returns them. After ``fit``: ``model_`` (the :class:`FittedModel`, with
    ``save``), ``history_`` (the run's :class:`ray_robust.History`), ``n_features_in_``.

    scikit-learn's ``check_estimator`` passes (``tests/test_fitted_model.py``), with one
    documented condition rather than a skipped check: every worker needs a sample, so ``fit``
    raises a clear ``ValueError`` when ``X`` has fewer rows than ``n_workers`` — the checks on
    tiny data (10 rows) run with ``n_workers=4``. No ``sample_weight`` (the paper's workers
    weigh their samples equally), so the sample-weight checks do not apply.
    """

    def __init__(self, algorithm: str | None = "alg2", alpha: float = 0.0,
                 attack: str = "none", n_workers: int = 20, engine: str = "local",
                 rounds: int = 300, lam: float = 3.0, eta: float = 1.0, model: str = "auto",
                 hidden: int = 16, standardize: str = "zscore", sharding: str = "iid",
                 random_state: int = 0, options: dict | None = None,
                 engine_options: dict | None = None):
        self.algorithm = algorithm
        self.alpha = alpha
        self.attack = attack
        self.n_workers = n_workers
        self.engine = engine
        self.rounds = rounds
        self.lam = lam
        self.eta = eta
        self.model = model
        self.hidden = hidden
        self.standardize = standardize
        self.sharding = sharding
        self.random_state = random_state
        self.options = options
        self.engine_options = engine_options

    def _config(self, n_classes: int) -> Config:
        model = self.model
        if model == "auto":
            model = "logistic" if n_classes == 2 else "softmax"
        if model in BINARY_MODELS and n_classes > 2:
            raise ValueError(f"The '{model}' model is binary, but y has {n_classes} classes; "
                             "use model='softmax' or 'auto'.")
        if model not in (*BINARY_MODELS, "softmax"):
            raise ValueError(f"The 'model' parameter of RobustClassifier must be 'auto', "
                             f"'logistic', 'mlp' or 'softmax'. Got {model!r} instead.")
        values: dict[str, Any] = {"eval_every": self.rounds, **(self.options or {})}
        if self.algorithm is not None:
            values["algorithm"] = self.algorithm
        values.update(alpha=self.alpha, attack=self.attack, n_workers=self.n_workers,
                      rounds=self.rounds, lam=self.lam, eta=self.eta, model=model,
                      hidden=self.hidden, n_classes=max(n_classes, 2),
                      standardize=self.standardize, sharding=self.sharding,
                      seed=self.random_state)
        return Config.from_dict(values)

    def fit(self, X, y) -> RobustClassifier:
        """Train on every row of ``X`` with labels ``y`` (any values: they are encoded)."""
        X, y = validate_data(self, X, y, dtype=np.float64)
        check_classification_targets(y)
        classes = np.unique(y)
        if classes.size < 2:
            raise ValueError(f"RobustClassifier needs samples of at least 2 classes; y has "
                             f"{classes.size} class ({classes.tolist()}).")
        cfg = self._config(classes.size)
        labels = LabelEncoding(classes)
        problem = prepare_all(X, labels.encode(y), n_workers=cfg.n_workers,
                              standardize=cfg.standardize, seed=SeedStreams(cfg.seed).data,
                              sharding=cfg.sharding, dirichlet_alpha=cfg.dirichlet_alpha)
        names = getattr(self, "feature_names_in_", None)
        problem = dataclasses.replace(
            problem, labels=labels,
            feature_names=None if names is None else tuple(str(n) for n in names))
        self.history_ = train(cfg, engine=self.engine, problem=problem,
                              **(self.engine_options or {}))
        self.model_: FittedModel = self.history_.model
        self.classes_ = classes
        return self

    def _features(self, X) -> np.ndarray:
        check_is_fitted(self)
        return validate_data(self, X, reset=False, dtype=np.float64)

    def predict(self, X) -> np.ndarray:
        """The predicted class of each row, in ``classes_``' values."""
        X = self._features(X)
        return self.model_.predict(X)

    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities ``(n, K)``, columns in ``classes_`` order."""
        X = self._features(X)
        return self.model_.predict_proba(X)
