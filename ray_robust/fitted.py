"""A trained model you can use: θ with the preprocessing it was trained with.

:class:`FittedModel` holds θ, the model spec (name, options, number of features), the
standardization statistics, the feature names and the label encoding, so that
:meth:`~FittedModel.predict`, :meth:`~FittedModel.predict_proba` and
:meth:`~FittedModel.score` take *raw* new data (a numpy array, or a DataFrame whose columns are
matched by name) and give labels back in the original values. :meth:`~FittedModel.save` writes
a folder of JSON (``model.json``) and numpy arrays (``model.npz``) — no pickle —, which
:func:`load_model` reads back with validation.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ._files import write_bytes_atomic
from .config import Config
from .core.models import MODEL_OPTIONS, MODELS, get_model, sigmoid, softmax
from .data import BINARY_MODELS, LabelEncoding, Problem, Scaler

MODEL_JSON = "model.json"
MODEL_ARRAYS = "model.npz"
FORMAT = "ray_robust.model"
VERSION = 1
_LABEL_KINDS = {"int": np.int64, "float": np.float64, "str": str, "bool": bool}


@dataclass(frozen=True, repr=False)
class FittedModel:
    """θ of ``model`` (options ``options``) on ``n_features`` features, and its preprocessing.

    ``scaler``: the z-score statistics of the training data (None: raw features);
    ``feature_names``: the training columns (None: positional, e.g. Spambase or a numpy
    array); ``labels``: the encoding of the original label values (None for least squares);
    ``config``: the run's config as a dict (provenance; not needed to predict).
    """

    theta: np.ndarray
    model: str
    options: dict
    n_features: int
    scaler: Scaler | None = None
    feature_names: tuple[str, ...] | None = None
    labels: LabelEncoding | None = None
    config: dict | None = None

    @classmethod
    def from_problem(cls, config: Config, problem: Problem, theta: np.ndarray) -> FittedModel:
        """The model ``config`` trained to ``theta`` on ``problem`` (its preprocessing)."""
        options = {k: v for k, v in config.model_options().items()
                   if k in MODEL_OPTIONS.get(config.model, ())}
        labels = problem.labels
        if labels is None and config.model in (*BINARY_MODELS, "softmax"):
            # labels given as codes (``train`` checked them): 0 ↔ 0, …, K − 1 ↔ K − 1
            k = 2 if config.model in BINARY_MODELS else config.n_classes
            labels = LabelEncoding(np.arange(k))
        return cls(np.array(theta, dtype=np.float64), config.model, options,
                   int(problem.X_train.shape[1]), problem.scaler, problem.feature_names,
                   labels, config.to_dict())

    def __repr__(self) -> str:
        scaled = "z-scored" if self.scaler is not None else "raw"
        classes = "" if self.labels is None else f", classes={self.labels.classes.tolist()}"
        options = "".join(f", {k}={v}" for k, v in self.options.items())
        return f"FittedModel({self.model!r}{options}, {self.n_features} {scaled} features{classes})"

    @property
    def classes(self) -> np.ndarray | None:
        """The original label values, in the order of :meth:`predict_proba`'s columns."""
        return None if self.labels is None else self.labels.classes

    @property
    def is_classifier(self) -> bool:
        return self.model in (*BINARY_MODELS, "softmax")

    def _core(self):
        return get_model(self.model, **self.options)

    def transform(self, X) -> np.ndarray:
        """Raw rows ``X`` → the standardized float64 features the model was trained on."""
        if hasattr(X, "columns"):  # a pandas DataFrame: columns by name
            columns = [str(c) for c in X.columns]
            if self.feature_names is not None:
                missing = [c for c in self.feature_names if c not in columns]
                if missing:
                    raise ValueError(
                        f"The data lacks feature column(s) {missing[:5]}"
                        f"{' …' if len(missing) > 5 else ''}; the model was trained on "
                        f"{list(self.feature_names)[:8]}{' …' if self.n_features > 8 else ''}.")
                X = X.set_axis(columns, axis=1)[list(self.feature_names)]
            bad = [c for c in X.columns if not _is_numeric(X[c])]
            if bad:
                raise ValueError(f"Column(s) {bad[:5]} are not numeric; the features must be "
                                 "numbers.")
            X = X.to_numpy(dtype=np.float64)
        else:
            try:
                X = np.asarray(X, dtype=np.float64)
            except (TypeError, ValueError):
                raise ValueError("The data must be numbers: a 2-D numpy array or a DataFrame "
                                 "of numeric feature columns.") from None
        if X.ndim != 2:
            raise ValueError(f"The data must be 2-D (rows × {self.n_features} features). Got "
                             f"shape {X.shape}; for one row use X.reshape(1, -1).")
        if X.shape[1] != self.n_features:
            raise ValueError(f"The model takes {self.n_features} feature columns; the data has "
                             f"{X.shape[1]}." + (" Drop the label column." if X.shape[1] ==
                                                 self.n_features + 1 else ""))
        if not np.isfinite(X).all():
            raise ValueError("The data contains NaN or infinite values; drop or impute those "
                             "rows first.")
        return X if self.scaler is None else self.scaler.transform(X)

    def predict(self, X) -> np.ndarray:
        """Predicted labels of raw rows ``X``, in the original label values (least squares:
        the predicted targets)."""
        pred = self._core().predict(self.theta, self.transform(X))
        return pred if self.labels is None else self.labels.decode(pred)

    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities ``(n, K)`` of raw rows ``X``, columns in :attr:`classes` order."""
        if not self.is_classifier:
            raise ValueError(f"The '{self.model}' model is a regression: it has no class "
                             "probabilities; use predict.")
        core, Z = self._core(), self.transform(X)
        if self.model == "softmax":
            return softmax(core.logits(self.theta, Z), axis=-1)
        p = sigmoid(core.margins(self.theta, Z))
        return np.column_stack([1.0 - p, p])

    def score(self, X, y) -> float:
        """Accuracy on raw rows ``X`` with labels ``y`` in the original values (least squares:
        the coefficient of determination R²)."""
        y = np.asarray(y)
        pred = self.predict(X)
        if y.shape != pred.shape:
            raise ValueError(f"y must hold one label per row: {pred.shape[0]} rows, y has shape "
                             f"{y.shape}.")
        if not self.is_classifier:
            y = y.astype(np.float64)
            return float(1.0 - ((y - pred) ** 2).sum() / ((y - y.mean()) ** 2).sum())
        return float(np.mean(pred == y))

    # ---- saving and loading -------------------------------------------------------------

    def save(self, folder: str | os.PathLike) -> Path:
        """Write ``folder/model.json`` (spec, names, encoding, config) and ``folder/model.npz``
        (θ, the standardization statistics), each atomically; returns the folder."""
        folder = Path(folder)
        arrays = {"theta": self.theta}
        if self.scaler is not None:
            arrays.update(mean=self.scaler.mean, scale=self.scaler.scale)
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        payload = buf.getvalue()
        labels = None
        if self.labels is not None:
            kind = _label_kind(self.labels.classes)
            labels = {"kind": kind, "classes": [_TO_JSON[kind](v) for v in self.labels.classes]}
        body = {"format": FORMAT, "version": VERSION, "model": self.model,
                "options": self.options, "n_features": self.n_features,
                "standardize": "zscore" if self.scaler is not None else "none",
                "feature_names": None if self.feature_names is None else list(self.feature_names),
                "labels": labels, "config": self.config,
                "arrays_sha256": hashlib.sha256(payload).hexdigest()}
        write_bytes_atomic(folder / MODEL_ARRAYS, payload)
        write_bytes_atomic(folder / MODEL_JSON,
                           json.dumps(body, indent=1, default=str).encode())
        return folder


_TO_JSON = {"int": int, "float": float, "str": str, "bool": bool}


def _is_numeric(column) -> bool:
    import pandas as pd

    return pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column) \
        and not pd.api.types.is_complex_dtype(column)


def _label_kind(classes: np.ndarray) -> str:
    if classes.dtype == bool:
        return "bool"
    if np.issubdtype(classes.dtype, np.integer):
        return "int"
    if np.issubdtype(classes.dtype, np.floating):
        return "float"
    return "str"


def load_model(folder: str | os.PathLike) -> FittedModel:
    """The :class:`FittedModel` saved in ``folder`` (by :meth:`FittedModel.save` or
    ``ray-robust train --out``), checked: a missing, corrupted or edited file is one clear
    ``ValueError`` (``FileNotFoundError`` when the folder holds no model)."""
    folder = Path(folder)
    meta, arrays = folder / MODEL_JSON, folder / MODEL_ARRAYS
    for path in (meta, arrays):
        if not path.is_file():
            raise FileNotFoundError(f"No saved model at {folder} ({path.name} is missing); give "
                                    "the folder written by `ray-robust train --out` or "
                                    "FittedModel.save.")

    def bad(why: str) -> ValueError:
        return ValueError(f"{folder} is not a valid saved model: {why}. Save it again "
                          "(retrain with --out) or restore the folder.")

    try:
        body = json.loads(meta.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise bad(f"{MODEL_JSON} is not JSON ({exc})") from None
    keys = {"format", "version", "model", "options", "n_features", "standardize",
            "feature_names", "labels", "config", "arrays_sha256"}
    if not isinstance(body, dict) or set(body) != keys:
        raise bad(f"{MODEL_JSON} must hold exactly the keys {sorted(keys)}")
    if body["format"] != FORMAT or body["version"] != VERSION:
        raise bad(f"{MODEL_JSON} is format {body['format']!r} version {body['version']!r}, "
                  f"expected {FORMAT!r} version {VERSION}")
    payload = arrays.read_bytes()
    if hashlib.sha256(payload).hexdigest() != body["arrays_sha256"]:
        raise bad(f"{MODEL_ARRAYS} does not match the checksum in {MODEL_JSON} (corrupted or "
                  "edited)")
    name, options, d = body["model"], body["options"], body["n_features"]
    if name not in MODELS:
        raise bad(f"unknown model {name!r}; one of {sorted(MODELS)}")
    if not isinstance(options, dict) or set(options) != set(MODEL_OPTIONS.get(name, ())) or \
            not all(isinstance(v, int) and not isinstance(v, bool) for v in options.values()):
        raise bad(f"the options of '{name}' must be integers {list(MODEL_OPTIONS.get(name, ()))}")
    if not isinstance(d, int) or isinstance(d, bool) or d < 1:
        raise bad(f"n_features must be a positive integer, got {d!r}")
    try:
        core = get_model(name, **options)
        p = core.n_params(d)
    except ValueError as exc:
        raise bad(str(exc)) from None
    try:
        with np.load(io.BytesIO(payload), allow_pickle=False) as npz:
            stored = {k: npz[k] for k in npz.files}
    except Exception as exc:  # a zip/npy format error of any kind: one message
        raise bad(f"{MODEL_ARRAYS} is not a numpy archive ({type(exc).__name__})") from None
    scaled = body["standardize"] == "zscore"
    if body["standardize"] not in ("zscore", "none"):
        raise bad(f"standardize must be 'zscore' or 'none', got {body['standardize']!r}")
    want = {"theta": (p,), **({"mean": (d,), "scale": (d,)} if scaled else {})}
    if set(stored) != set(want):
        raise bad(f"{MODEL_ARRAYS} must hold the arrays {sorted(want)}, it holds {sorted(stored)}")
    for key, shape in want.items():
        a = stored[key]
        if a.dtype != np.float64 or a.shape != shape or not np.isfinite(a).all():
            raise bad(f"array {key!r} must be {shape} finite float64, got {a.shape} {a.dtype}")
    if scaled and not (stored["scale"] > 0).all():
        raise bad("the standardization scale must be positive")
    names = body["feature_names"]
    if names is not None and (not isinstance(names, list) or len(names) != d
                              or not all(isinstance(n, str) for n in names)):
        raise bad(f"feature_names must be null or {d} strings")
    labels = _load_labels(body["labels"], name, options, bad)
    config = body["config"]
    if config is not None and not isinstance(config, dict):
        raise bad("config must be a mapping or null")
    return FittedModel(stored["theta"], name, options, d,
                       Scaler(stored["mean"], stored["scale"]) if scaled else None,
                       None if names is None else tuple(names), labels, config)


def _load_labels(spec: Any, name: str, options: dict, bad) -> LabelEncoding | None:
    k = 2 if name in BINARY_MODELS else options.get("n_classes")
    if k is None:
        if spec is not None:
            raise bad(f"the '{name}' model has no label encoding")
        return None
    if not isinstance(spec, dict) or set(spec) != {"kind", "classes"} or \
            spec["kind"] not in _LABEL_KINDS or not isinstance(spec["classes"], list):
        raise bad(f"labels must be {{'kind': one of {list(_LABEL_KINDS)}, 'classes': [...]}}")
    kind, values = spec["kind"], spec["classes"]
    types = {"int": (int,), "float": (int, float), "str": (str,), "bool": (bool,)}[kind]
    if len(values) != k or not all(isinstance(v, types) and (kind == "bool" or not
                                                             isinstance(v, bool))
                                   for v in values):
        raise bad(f"labels must be {k} values of kind {kind!r}")
    if kind == "float" and not all(math.isfinite(v) for v in values):
        raise bad("the label values must be finite")
    classes = np.asarray(values, dtype=_LABEL_KINDS[kind])
    if classes.size != np.unique(classes).size or not (np.sort(classes) == classes).all():
        raise bad("the label values must be distinct and sorted")
    return LabelEncoding(classes)
