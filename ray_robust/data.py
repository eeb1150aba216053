"""Spambase loading, the stratified train/test split, standardization and sharding to workers.

Spambase (UCI id 94, CC BY 4.0; Hopkins, Reeber, Forman, Suermondt 1999,
https://doi.org/10.24432/C53G6X): 4601 e-mails × 57 numeric features, label 1 = spam.
The project ships no copy: :func:`load_spambase` reads it from a path, from
``$RAY_ROBUST_DATA_DIR``, from a user cache, or downloads it from UCI into that cache.
"""

from __future__ import annotations

import io
import os
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ._validation import check_choice, check_int, check_real

SPAMBASE_URL = "https://archive.ics.uci.edu/static/public/94/spambase.zip"
SPAMBASE_FILE = "spambase.data"
SPAMBASE_SHAPE = (4601, 58)


def cache_dir() -> Path:
    """Where downloads are cached: ``$XDG_CACHE_HOME/ray_robust`` or ``~/.cache/ray_robust``."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "ray_robust"


def _read_spambase(path: Path) -> tuple[np.ndarray, np.ndarray]:
    fix = (
        f"Replace it with the UCI file ({SPAMBASE_URL}), or delete it so that it is downloaded "
        "again."
    )
    try:
        raw = np.loadtxt(path, delimiter=",", dtype=np.float64, ndmin=2)
    except ValueError as exc:
        raise ValueError(f"{path} is not a valid Spambase file ({exc}). {fix}") from None
    if raw.shape != SPAMBASE_SHAPE:
        raise ValueError(
            f"{path} has shape {raw.shape}, but Spambase is {SPAMBASE_SHAPE[0]} rows × "
            f"{SPAMBASE_SHAPE[1]} columns (57 features and the label); the file is truncated "
            f"or not Spambase. {fix}"
        )
    if not np.isfinite(raw).all():
        raise ValueError(f"{path} contains NaN or infinite values. {fix}")
    y = raw[:, -1]
    if not np.isin(y, (0.0, 1.0)).all():
        raise ValueError(f"{path}: the last column (the label) must be 0 or 1. {fix}")
    return raw[:, :-1], y.astype(np.int64)


def _download(target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    with urllib.request.urlopen(SPAMBASE_URL, timeout=30) as resp:
        payload = resp.read()
    with zipfile.ZipFile(io.BytesIO(payload)) as zf:
        data = zf.read(SPAMBASE_FILE)
    tmp = target.with_suffix(".part")
    tmp.write_bytes(data)
    tmp.replace(target)  # atomic: a crash never leaves a half-written cache file


_LOADED: dict[tuple[str, float, int], tuple[np.ndarray, np.ndarray]] = {}


def _read_cached(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_read_spambase`, parsed once per process per (file, mtime, size)."""
    st = path.stat()
    key = (str(path.resolve()), st.st_mtime, st.st_size)
    if key not in _LOADED:
        X, y = _read_spambase(path)
        X.setflags(write=False)
        y.setflags(write=False)
        _LOADED[key] = (X, y)
    return _LOADED[key]


def load_spambase(path: str | os.PathLike | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Load Spambase as ``(X, y)``: X ``(4601, 57)`` float64, y ``(4601,)`` in {0, 1}.

    Looks, in order, at ``path`` (the file, or a folder holding ``spambase.data``),
    ``$RAY_ROBUST_DATA_DIR/spambase.data``, the user cache (:func:`cache_dir`), and finally
    downloads it from UCI into the cache. Raises ``FileNotFoundError`` naming every place
    looked at when none has it, and ``ValueError`` when the file found is not Spambase.
    The arrays are read-only and parsed once per process.
    """
    if path is not None:
        p = Path(path)
        if p.is_dir():
            p = p / SPAMBASE_FILE
        if not p.is_file():
            raise FileNotFoundError(
                f"No Spambase file at {p}. Pass the path of 'spambase.data' (or of its folder)."
            )
        return _read_cached(p)
    looked: list[str] = []
    env = os.environ.get("RAY_ROBUST_DATA_DIR")
    if env:
        p = Path(env) / SPAMBASE_FILE
        if p.is_file():
            return _read_cached(p)
        looked.append(f"{p} (from RAY_ROBUST_DATA_DIR)")
    cached = cache_dir() / SPAMBASE_FILE
    if cached.is_file():
        return _read_cached(cached)
    looked.append(str(cached))
    try:
        _download(cached)
    except Exception as exc:  # no network, HTTP error, bad zip: all end in one message
        raise FileNotFoundError(
            f"Spambase not found; looked at {', '.join(looked)}, and the download from "
            f"{SPAMBASE_URL} failed ({type(exc).__name__}: {exc}). Set RAY_ROBUST_DATA_DIR to "
            f"a folder holding '{SPAMBASE_FILE}', or pass its path."
        ) from None
    return _read_cached(cached)


@dataclass(frozen=True)
class Shards:
    """Training data split over m workers, stacked for batched computation.

    ``X`` ``(m, n_max, d)``, ``y`` ``(m, n_max)``; ``weights`` ``(m, n_max)`` is 1/n_i on worker
    i's n_i real samples and 0 on padding, so a weighted sum is each worker's local mean.
    """

    X: np.ndarray
    y: np.ndarray
    weights: np.ndarray

    @property
    def n_workers(self) -> int:
        return self.X.shape[0]

    @property
    def sizes(self) -> np.ndarray:
        return (self.weights > 0).sum(axis=1)

    def subset(self, workers) -> Shards:
        """The shards of the given workers (in that order), as one stack."""
        idx = np.asarray(workers, dtype=np.int64)
        return Shards(self.X[idx], self.y[idx], self.weights[idx])


@dataclass(frozen=True)
class Problem:
    """Everything a run needs: the split, its standardization, and the shards."""

    X_train: np.ndarray
    y_train: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    shards: Shards


def stratified_split(
    y: np.ndarray, train_fraction: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Train/test indices with the same class ratio in both (each class split separately,
    ``round(train_fraction · n_class)`` of it to training)."""
    train, test = [], []
    for label in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == label))
        k = round(train_fraction * idx.size)
        train.append(idx[:k])
        test.append(idx[k:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def shard(X: np.ndarray, y: np.ndarray, n_workers: int, rng: np.random.Generator) -> Shards:
    """Shuffle and split N samples over m workers as evenly as possible.

    The N mod m remainder goes one sample each to the first workers, so sizes differ by at
    most one; shorter shards are zero-padded with weight 0 (no sample is dropped).
    """
    n, d = X.shape
    m = n_workers
    order = rng.permutation(n)
    sizes = np.full(m, n // m)
    sizes[: n % m] += 1
    n_max = int(sizes.max())
    Xs = np.zeros((m, n_max, d))
    ys = np.zeros((m, n_max))
    ws = np.zeros((m, n_max))
    start = 0
    for i, size in enumerate(sizes):
        rows = order[start : start + size]
        Xs[i, :size], ys[i, :size], ws[i, :size] = X[rows], y[rows], 1.0 / size
        start += size
    return Shards(Xs, ys, ws)


STANDARDIZE = ("zscore", "none")


def prepare(
    X: np.ndarray,
    y: np.ndarray,
    *,
    n_workers: int,
    train_fraction: float = 0.8,
    standardize: str = "zscore",
    seed: int | np.random.SeedSequence = 0,
) -> Problem:
    """Split (stratified), standardize with training statistics, and shard; all seeded.

    ``standardize='zscore'`` maps each feature to (x − mean_train)/std_train (constant features
    are left centred); ``'none'`` keeps raw features.
    """
    train_fraction = check_real(
        train_fraction, "train_fraction", "prepare", low=0, high=1, low_open=True, high_open=True
    )
    check_choice(standardize, "standardize", "prepare", STANDARDIZE)
    n_workers = check_int(n_workers, "n_workers", "prepare", low=1)
    seq = seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(seed)
    split_seq, shard_seq = seq.spawn(2)
    tr, te = stratified_split(y, train_fraction, np.random.default_rng(split_seq))
    if n_workers > tr.size:
        raise ValueError(
            f"The 'n_workers' parameter must be at most the number of training samples "
            f"({tr.size}). Got {n_workers} instead."
        )
    X_tr, X_te = X[tr], X[te]
    if standardize == "zscore":
        mu, sd = X_tr.mean(axis=0), X_tr.std(axis=0)
        sd = np.where(sd > 0, sd, 1.0)
        X_tr, X_te = (X_tr - mu) / sd, (X_te - mu) / sd
    y_tr, y_te = y[tr].astype(np.float64), y[te].astype(np.float64)
    shards = shard(X_tr, y_tr, n_workers, np.random.default_rng(shard_seq))
    return Problem(X_tr, y_tr, X_te, y_te, shards)
