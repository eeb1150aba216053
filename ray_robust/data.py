"""Spambase loading, the stratified train/test split, standardization and sharding to workers.

Spambase (UCI id 94, CC BY 4.0; Hopkins, Reeber, Forman, Suermondt 1999,
https://doi.org/10.24432/C53G6X): 4601 e-mails × 57 numeric features, label 1 = spam.
The project ships no copy: :func:`load_spambase` reads it from a path, from
``$RAY_ROBUST_DATA_DIR``, from a user cache, or downloads it from UCI into that cache.

Other data: :func:`load_table` reads a user's file (CSV with or without a header row, ``.npy``,
``.npz``, Parquet: :func:`read_table`), pandas DataFrame or numpy array, the label column given
by name or 0-based position; :func:`make_synthetic` draws seeded synthetic tasks (logistic, softmax,
regression, and the nonconvex 'circles'). :func:`prepare` also shards non-iid
(``sharding='dirichlet' | 'sorted' | 'quantity'``, see :func:`make_shards`).
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
#: what :func:`read_table` reads, by file extension (anything else is read as CSV)
TABLE_FORMATS = {".npy": "numpy array", ".npz": "numpy archive", ".parquet": "Parquet",
                 ".pq": "Parquet"}


def cache_dir() -> Path:
    """Where downloads are cached: ``$XDG_CACHE_HOME/ray_robust`` or ``~/.cache/ray_robust``."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "ray_robust"


#: how a file that is not Spambase is fixed, by where it was found (:func:`load_spambase`)
SPAMBASE_FIX = {
    "path": "If it is your own data, it is not Spambase: name its label column with "
            "--label-column NAME, or '#N' for the column at 0-based position N (label_column "
            "in a config or study; quote '#N' in the shell and in YAML). For Spambase, give the "
            f"UCI file ({SPAMBASE_URL}).",
    "env": f"Replace it with the UCI file ({SPAMBASE_URL}), or unset RAY_ROBUST_DATA_DIR to "
           "use the cache (downloaded when missing).",
    "cache": f"Replace it with the UCI file ({SPAMBASE_URL}), or delete it so that it is "
             "downloaded again.",
}


def _read_spambase(path: Path, found: str = "path") -> tuple[np.ndarray, np.ndarray]:
    """Read and check Spambase at ``path``; ``found``: where it was found (a key of
    :data:`SPAMBASE_FIX`), which decides the advice of an error: a file the user named is
    never advised to be deleted."""
    fix = SPAMBASE_FIX[found]
    kind = TABLE_FORMATS.get(path.suffix.lower())
    if kind is not None:  # read as text it would fail with a UTF-8 decode error
        raise ValueError(f"{path} is a {kind} file, not Spambase (a comma-separated text "
                         f"file). {fix}")
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


def _read_cached(path: Path, found: str) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_read_spambase`, parsed once per process per (file, mtime, size)."""
    st = path.stat()
    key = (str(path.resolve()), st.st_mtime, st.st_size)
    if key not in _LOADED:
        X, y = _read_spambase(path, found)
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
                f"No Spambase file at {p}. Pass the path of 'spambase.data' (or of its folder); "
                "for a file of your own, also name its label column (--label-column)."
            )
        return _read_cached(p, "path")
    looked: list[str] = []
    env = os.environ.get("RAY_ROBUST_DATA_DIR")
    if env:
        p = Path(env) / SPAMBASE_FILE
        if p.is_file():
            return _read_cached(p, "env")
        looked.append(f"{p.resolve()} (from RAY_ROBUST_DATA_DIR={env})")
    cached = cache_dir() / SPAMBASE_FILE
    if cached.is_file():
        return _read_cached(cached, "cache")
    looked.append(str(cached))
    try:
        _download(cached)
    except Exception as exc:  # no network, HTTP error, bad zip: all end in one message
        raise FileNotFoundError(
            f"Spambase not found; looked at {', '.join(looked)}, and the download from "
            f"{SPAMBASE_URL} failed ({type(exc).__name__}: {exc}). Set RAY_ROBUST_DATA_DIR to "
            f"a folder holding '{SPAMBASE_FILE}', or pass its path."
        ) from None
    return _read_cached(cached, "cache")


@dataclass(frozen=True)
class Shards:
    """Training data split over m workers, stacked for batched computation.

    ``X`` ``(m, n_max, d)``, ``y`` ``(m, n_max)``; ``weights`` ``(m, n_max)`` is 1/n_i on worker
    i's n_i real samples and 0 on padding, so a weighted sum is each worker's local mean.
    ``workers``: the global worker index of each shard (None = 0, …, m − 1), kept by
    :meth:`subset` so that a stack of some workers' shards knows whose they are.
    """

    X: np.ndarray
    y: np.ndarray
    weights: np.ndarray
    workers: np.ndarray | None = None

    @property
    def worker_ids(self) -> np.ndarray:
        """The global worker index of each shard."""
        return np.arange(self.X.shape[0]) if self.workers is None else self.workers

    @property
    def n_workers(self) -> int:
        return self.X.shape[0]

    @property
    def sizes(self) -> np.ndarray:
        return (self.weights > 0).sum(axis=1)

    def subset(self, workers) -> Shards:
        """The shards of the given workers (in that order), as one stack."""
        idx = np.asarray(workers, dtype=np.int64)
        return Shards(self.X[idx], self.y[idx], self.weights[idx], self.worker_ids[idx])


@dataclass(frozen=True)
class Scaler:
    """The z-score standardization fitted on training data: x ↦ (x − mean)/scale.

    ``scale`` is the training standard deviation, 1 for constant features (left centred).
    """

    mean: np.ndarray
    scale: np.ndarray

    @classmethod
    def fit(cls, X: np.ndarray) -> Scaler:
        """The statistics of ``X`` (training rows); a clear error when they overflow."""
        with np.errstate(over="ignore", invalid="ignore"):
            mu, sd = X.mean(axis=0), X.std(axis=0)
        bad = np.flatnonzero(~(np.isfinite(mu) & np.isfinite(sd)))
        if bad.size:
            raise ValueError(
                f"Feature column(s) {bad[:5].tolist()} are too large to standardize (their mean "
                f"or standard deviation overflows float64). Rescale those columns, or use "
                f"standardize='none'."
            )
        return cls(mu, np.where(sd > 0, sd, 1.0))

    def transform(self, X: np.ndarray) -> np.ndarray:
        return (X - self.mean) / self.scale


@dataclass(frozen=True)
class LabelEncoding:
    """The original label values ↔ the codes a model trains on: ``classes[k]`` ↔ k.

    Built by :func:`encode_labels`; ``classes`` keeps the original values' dtype (numbers or
    strings), so :meth:`decode` gives predictions back in the user's values.
    """

    classes: np.ndarray

    def encode(self, y) -> np.ndarray:
        """Codes 0, …, K − 1 (float64) of labels ``y``; a clear error for an unseen value."""
        y = np.asarray(y)
        codes = np.searchsorted(self.classes, y)
        codes = np.minimum(codes, self.classes.size - 1)
        unseen = self.classes[codes] != y
        if np.any(unseen):
            raise ValueError(f"Label value(s) {np.unique(y[unseen])[:5].tolist()} were not seen "
                             f"in training; the classes are {self.classes.tolist()}.")
        return codes.astype(np.float64)

    def decode(self, codes: np.ndarray) -> np.ndarray:
        """The original label values of integer ``codes``."""
        return self.classes[np.asarray(codes, dtype=np.int64)]


#: the models that train on labels 0/1, and the one on 0, …, K − 1
BINARY_MODELS = ("logistic", "mlp")


def encode_labels(y, model: str, *, n_classes: int = 2, where: str = "the labels"
                  ) -> tuple[np.ndarray, LabelEncoding | None]:
    """``(codes, encoding)`` of labels in any values for ``model``.

    The binary models ('logistic', 'mlp') take two values (−1/+1, 1/2, 'ham'/'spam', …):
    the smaller (sorted) one ↦ 0, the larger ↦ 1; labels already in {0, 1} are kept as they
    are (encoding 0 ↔ 0, 1 ↔ 1). 'softmax' takes up to ``n_classes`` = K values, sorted ↦
    0, …, K − 1 (integer labels within 0, …, K − 1 are kept). 'least_squares' (regression)
    has no encoding: ``(y as float64, None)``. A clear error names the values otherwise.
    """
    y = np.asarray(y)
    if y.ndim != 1:
        raise ValueError(f"{where.capitalize()} must be one column (1-D). Got shape {y.shape}.")
    if model not in (*BINARY_MODELS, "softmax"):
        if not np.issubdtype(y.dtype, np.number) and not np.issubdtype(y.dtype, np.bool_):
            raise ValueError(f"The '{model}' model needs numeric targets; {where} are "
                             f"{y.dtype}.")
        return y.astype(np.float64), None
    if y.dtype == object:
        if not all(isinstance(v, str) for v in y):
            raise ValueError(f"{where.capitalize()} must be numbers or strings (one type); got "
                             f"{sorted({type(v).__name__ for v in y})}.")
        y = y.astype(str)
    if np.issubdtype(y.dtype, np.floating) and not np.isfinite(y).all():
        raise ValueError(f"{where.capitalize()} contain NaN or infinite values.")
    if np.issubdtype(y.dtype, np.floating) and np.all(np.mod(y, 1) == 0):
        y = y.astype(np.int64)  # −1.0/+1.0 read from a CSV are the classes −1 and 1
    classes = np.unique(y)
    k = 2 if model in BINARY_MODELS else n_classes
    if classes.size > k:
        fix = (f"use model='softmax' with n_classes={classes.size}" if model in BINARY_MODELS
               else f"set n_classes={classes.size}")
        raise ValueError(f"The '{model}' model takes at most {k} label values; found "
                         f"{classes.size} in {where}: {classes[:6].tolist()}"
                         f"{' …' if classes.size > 6 else ''}. {fix.capitalize()}.")
    if np.issubdtype(classes.dtype, np.integer) and classes.min() >= 0 and classes.max() < k:
        classes = np.arange(k, dtype=classes.dtype)  # already codes: kept as they are
    elif classes.size < k:
        raise ValueError(f"The '{model}' model needs {k} label values; found only "
                         f"{classes.size} in {where}: {classes.tolist()}.")
    encoding = LabelEncoding(classes)
    return encoding.encode(y), encoding


def check_model_labels(y: np.ndarray, model: str, n_classes: int = 2) -> None:
    """A clear error when the float labels ``y`` are not what ``model`` trains on (0/1 for
    the binary models), rather than a silently mistrained run; :func:`encode_labels` fixes
    them."""
    if model in BINARY_MODELS and not np.isin(y, (0.0, 1.0)).all():
        odd = np.unique(y[~np.isin(y, (0.0, 1.0))])[:5].tolist()
        raise ValueError(
            f"The '{model}' model needs labels 0 or 1. Got also {odd}; encode the labels first "
            f"(ray_robust.data.encode_labels(y, {model!r}) maps any two values to 0/1), or "
            f"train from a file with label_column, which encodes them."
        )


@dataclass(frozen=True)
class Problem:
    """Everything a run needs: the split, its standardization, and the shards.

    ``scaler`` (None: raw features), ``feature_names`` and ``labels`` (the label encoding, None
    when the labels are used as they are) record the preprocessing, so that the trained model
    can be applied to raw new data (:class:`ray_robust.fitted.FittedModel`).
    """

    X_train: np.ndarray
    y_train: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    shards: Shards
    scaler: Scaler | None = None
    feature_names: tuple[str, ...] | None = None
    labels: LabelEncoding | None = None


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
    n, m = X.shape[0], n_workers
    order = rng.permutation(n)
    sizes = np.full(m, n // m)
    sizes[: n % m] += 1
    return stack_shards(X, y, np.split(order, np.cumsum(sizes)[:-1]))


STANDARDIZE = ("zscore", "none")


def prepare(
    X: np.ndarray,
    y: np.ndarray,
    *,
    n_workers: int,
    train_fraction: float = 0.8,
    standardize: str = "zscore",
    seed: int | np.random.SeedSequence = 0,
    sharding: str = "iid",
    dirichlet_alpha: float = 1.0,
) -> Problem:
    """Split (stratified), standardize with training statistics, and shard; all seeded.

    ``standardize='zscore'`` maps each feature to (x − mean_train)/std_train (constant features
    are left centred); ``'none'`` keeps raw features. The split is stratified by class when the
    labels are class labels (integer-valued, at most 100 distinct values), else uniformly
    random (regression). ``sharding`` and ``dirichlet_alpha``: see :func:`make_shards`.

    Labels are used as given (numbers; the binary models need 0/1, which ``train`` checks):
    labels in other values (−1/+1, strings) are encoded first with :func:`encode_labels`
    (:func:`ray_robust.load_problem` does it for a user's file). The fitted standardization
    is kept as ``Problem.scaler``.
    """
    n_workers = _check_inputs(y, n_workers, standardize, sharding, "prepare")
    train_fraction = check_real(
        train_fraction, "train_fraction", "prepare", low=0, high=1, low_open=True, high_open=True
    )
    split_seq, shard_seq = _seed_sequence(seed).spawn(2)
    if is_classification(y):
        tr, te = stratified_split(y, train_fraction, np.random.default_rng(split_seq))
    else:
        order = np.random.default_rng(split_seq).permutation(y.size)
        k = round(train_fraction * y.size)
        tr, te = np.sort(order[:k]), np.sort(order[k:])
    if te.size == 0 or tr.size == 0:
        raise ValueError(
            f"The 'train_fraction' parameter leaves {'no test' if te.size == 0 else 'no training'}"
            f" sample of the {y.size}. Got {train_fraction!r} instead; use a fraction that "
            f"keeps both sets non-empty (e.g. 0.8)."
        )
    return _scale_and_shard(X[tr], y[tr], X[te], y[te], n_workers, standardize, shard_seq,
                            sharding, dirichlet_alpha)


def prepare_all(
    X: np.ndarray,
    y: np.ndarray,
    *,
    n_workers: int,
    standardize: str = "zscore",
    seed: int | np.random.SeedSequence = 0,
    sharding: str = "iid",
    dirichlet_alpha: float = 1.0,
) -> Problem:
    """As :func:`prepare`, but every sample trains (no test split: the run's "test" metrics are
    on the training data); used by :class:`ray_robust.RobustClassifier`. The shards come from
    the same seed stream as :func:`prepare`'s."""
    n_workers = _check_inputs(y, n_workers, standardize, sharding, "prepare_all")
    return _scale_and_shard(X, y, None, None, n_workers, standardize,
                            _seed_sequence(seed).spawn(2)[1], sharding, dirichlet_alpha)


def _seed_sequence(seed: int | np.random.SeedSequence) -> np.random.SeedSequence:
    return seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(seed)


def _check_inputs(y, n_workers, standardize: str, sharding: str, owner: str) -> int:
    """The checks :func:`prepare` and :func:`prepare_all` share; the checked ``n_workers``."""
    _check_numeric_labels(y, owner)
    check_choice(standardize, "standardize", owner, STANDARDIZE)
    n_workers = check_int(n_workers, "n_workers", owner, low=1)
    check_choice(sharding, "sharding", owner, SHARDINGS)
    return n_workers


def _scale_and_shard(X_tr, y_tr, X_te, y_te, n_workers: int, standardize: str,
                     shard_seq: np.random.SeedSequence, sharding: str,
                     dirichlet_alpha: float) -> Problem:
    """Standardize with the training statistics and shard the training set (``X_te`` None:
    the training set is also the test set)."""
    if n_workers > y_tr.size:
        raise ValueError(
            f"The 'n_workers' parameter must be at most the number of training samples "
            f"({y_tr.size}). Got {n_workers} instead; use fewer workers or more samples."
        )
    scaler = Scaler.fit(X_tr) if standardize == "zscore" else None
    if scaler is not None:
        X_tr, X_te = scaler.transform(X_tr), None if X_te is None else scaler.transform(X_te)
    y_tr = y_tr.astype(np.float64)
    if X_te is None:
        X_te, y_te = X_tr, y_tr
    else:
        y_te = y_te.astype(np.float64)
    shards = make_shards(X_tr, y_tr, n_workers, np.random.default_rng(shard_seq),
                         sharding=sharding, dirichlet_alpha=dirichlet_alpha)
    return Problem(X_tr, y_tr, X_te, y_te, shards, scaler)


def _check_numeric_labels(y, owner: str) -> None:
    dtype = np.asarray(y).dtype
    if not (np.issubdtype(dtype, np.number) or np.issubdtype(dtype, np.bool_)):
        raise ValueError(
            f"{owner} needs numeric labels; got {dtype}. Encode them first: "
            "ray_robust.data.encode_labels(y, model) maps any two values (or K for softmax) "
            "to 0, …, K − 1."
        )


# ---- non-iid sharding ------------------------------------------------------------------------

#: how training samples are split over workers (:func:`make_shards`)
SHARDINGS = ("iid", "dirichlet", "sorted", "quantity")


def is_classification(y: np.ndarray) -> bool:
    """True when ``y`` holds class labels: integer-valued with at most 100 distinct values."""
    y = np.asarray(y)
    return bool(np.all(np.mod(y, 1) == 0)) and np.unique(y).size <= 100


def stack_shards(X: np.ndarray, y: np.ndarray, groups: list[np.ndarray]) -> Shards:
    """Stack workers' sample index arrays ``groups`` (each non-empty) into padded
    :class:`Shards` (weight 1/n_i on worker i's n_i samples, 0 on padding)."""
    sizes = np.array([g.size for g in groups])
    if (sizes == 0).any():
        raise ValueError(f"Worker(s) {np.flatnonzero(sizes == 0).tolist()} got no sample.")
    m, n_max, d = len(groups), int(sizes.max()), X.shape[1]
    Xs, ys, ws = np.zeros((m, n_max, d)), np.zeros((m, n_max)), np.zeros((m, n_max))
    for i, rows in enumerate(groups):
        Xs[i, : rows.size], ys[i, : rows.size], ws[i, : rows.size] = X[rows], y[rows], 1 / rows.size
    return Shards(Xs, ys, ws)


def _cut(order: np.ndarray, proportions: np.ndarray) -> list[np.ndarray]:
    """Split ``order`` into consecutive pieces with sizes ∝ ``proportions`` (rounded so they
    sum to ``order.size``)."""
    cuts = np.round(np.cumsum(proportions) / proportions.sum() * order.size).astype(np.int64)
    return np.split(order, cuts[:-1])


def _redraw(draw, n_workers: int, what: str, fix: str, tries: int = 100) -> list[np.ndarray]:
    """Call ``draw()`` until every worker gets at least one sample (seeded: same RNG stream)."""
    for _ in range(tries):
        groups = draw()
        if min(g.size for g in groups) > 0:
            return groups
    raise ValueError(
        f"{what}: {tries} draws left some of the {n_workers} workers without a sample. {fix}"
    )


def make_shards(
    X: np.ndarray,
    y: np.ndarray,
    n_workers: int,
    rng: np.random.Generator,
    *,
    sharding: str = "iid",
    dirichlet_alpha: float = 1.0,
) -> Shards:
    """Split N training samples over m workers.

    - ``'iid'``: :func:`shard` (shuffled, sizes differ by at most one).
    - ``'dirichlet'``: label skew (Hsu, Qi, Brown 2019): for each class c, draw
      p_c ~ Dir(α·1_m) and give worker i a share p_c,i of class c's samples. Small α: each
      worker holds few classes; α → ∞: iid. Shard sizes are uneven.
    - ``'sorted'``: the extreme split: samples sorted by label (shuffled within a label), cut
      into m contiguous, even shards, so most workers see a single class.
    - ``'quantity'``: iid labels but uneven sizes ∝ q ~ Dir(α·1_m).

    Uneven shards are padded with weight 0 (``Shards.weights``); each worker's message stays
    its local mean, and the server counts every worker once (see ``Config.weighted``).
    Draws that leave a worker empty are redrawn (seeded).
    """
    check_choice(sharding, "sharding", "make_shards", SHARDINGS)
    m = check_int(n_workers, "n_workers", "make_shards", low=1)
    if sharding == "iid":
        return shard(X, y, m, rng)
    alpha = check_real(dirichlet_alpha, "dirichlet_alpha", "make_shards", low=0, low_open=True)
    n = y.size
    if m > n:
        raise ValueError(f"The 'n_workers' parameter must be at most the number of samples "
                         f"({n}). Got {m} instead.")
    if sharding == "quantity":
        def draw() -> list[np.ndarray]:
            return _cut(rng.permutation(n), rng.dirichlet(np.full(m, alpha)))

        groups = _redraw(draw, m, "Quantity skew", "Use a larger dirichlet_alpha.")
        return stack_shards(X, y, groups)
    if not is_classification(y):
        raise ValueError(
            f"The 'sharding' parameter {sharding!r} needs class labels (integer-valued); these "
            "look like regression targets. Use sharding='iid' or 'quantity'."
        )
    if sharding == "sorted":
        perm = rng.permutation(n)
        order = perm[np.argsort(y[perm], kind="stable")]
        return stack_shards(X, y, _cut(order, np.ones(m)))
    classes = np.unique(y)

    def draw_labels() -> list[np.ndarray]:
        pieces: list[list[np.ndarray]] = [[] for _ in range(m)]
        for c in classes:
            parts = _cut(rng.permutation(np.flatnonzero(y == c)), rng.dirichlet(np.full(m, alpha)))
            for i, part in enumerate(parts):
                pieces[i].append(part)
        return [np.sort(np.concatenate(p)) for p in pieces]

    groups = _redraw(draw_labels, m, "Dirichlet sharding",
                     "Use a larger dirichlet_alpha or fewer workers.")
    return stack_shards(X, y, groups)


# ---- user data and synthetic data ----------------------------------------------------------


#: the prefix of a label given by its column position in a string: ``"#57"`` (0-based)
POSITION_PREFIX = "#"


def label_position(label: str | int) -> int | None:
    """The 0-based column position that ``label`` names (an int, or ``"#N"``; ``-1`` = the
    last column), or None for a column name. ``"#"`` followed by no integer is an error."""
    if isinstance(label, int | np.integer) and not isinstance(label, bool):
        return int(label)
    if isinstance(label, str) and label.startswith(POSITION_PREFIX):
        digits = label[len(POSITION_PREFIX):]
        try:
            return int(digits)
        except ValueError:
            raise ValueError(
                f"The label column {label!r} starts with {POSITION_PREFIX!r}, which names a "
                f"column by its 0-based position: give an integer after it, e.g. '#57' (the "
                f"58th column) or '#-1' (the last).") from None
    return None


def read_table(path: str | os.PathLike, *, header: bool | None = None):
    """A user's data file as a pandas DataFrame, by extension:

    - ``.npy``: a 2-D numeric array; its columns are named 0, 1, … (pick the label by index);
    - ``.npz``: arrays ``X`` (2-D) and ``y`` (1-D), read as the columns 0, …, d − 1 of X and
      a last column named ``"y"`` (the label: ``label="y"``); or a single 2-D array, read as a
      ``.npy``;
    - ``.parquet`` / ``.pq``: a Parquet table (needs pyarrow: ``pip install
      "ray_robust[parquet]"``);
    - anything else: CSV. ``header=None`` (auto) reads the first row as column names unless
      every field in it is a number (a headerless file: columns 0, 1, …); ``True`` / ``False``
      force it.

    Numpy files are read with ``allow_pickle=False``: an object array is an error, never code.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No data file at {path}. Pass the path of a CSV, .npy, .npz or "
                                f"Parquet file.")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        return _read_npy(path)
    if suffix == ".npz":
        return _read_npz(path)
    if suffix in (".parquet", ".pq"):
        return _read_parquet(path)
    return _read_csv(path, header)


def _csv_has_header(path: Path) -> bool:
    """Whether the first row of a CSV holds names: some field in it is not a number."""
    import pandas as pd

    first = pd.read_csv(path, header=None, nrows=1, dtype=str, keep_default_na=False)
    return bool(pd.to_numeric(first.iloc[0], errors="coerce").isna().any())


def _read_csv(path: Path, header: bool | None):
    import pandas as pd

    try:
        if header is None:
            header = _csv_has_header(path)
        return pd.read_csv(path, header=0 if header else None)
    except pd.errors.EmptyDataError:
        raise ValueError(f"{path} is empty; give a CSV file with rows of data.") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path} is not a readable CSV file ({type(exc).__name__}: "
                         f"{str(exc).strip().splitlines()[0]}). Give a comma-separated text "
                         "file, or a .npy / .npz / .parquet file by its extension.") from None


def _load_numpy(path: Path):
    try:
        return np.load(path, allow_pickle=False)
    except ValueError as exc:  # an object array (pickled), or a file that is not .npy / .npz
        raise ValueError(f"{path} is not a numeric numpy file ({exc}); save a numeric array with "
                         "numpy.save / numpy.savez (no objects, no pickle).") from None
    except (OSError, EOFError) as exc:
        raise ValueError(f"{path} is not a readable numpy file ({type(exc).__name__}: {exc}).") \
            from None


def _frame_of_array(array: np.ndarray, path: Path, what: str):
    import pandas as pd

    if array.ndim != 2:
        raise ValueError(f"{path}: {what} must be 2-D (rows × columns). Got shape "
                         f"{array.shape}.")
    return pd.DataFrame(array)


def _read_npy(path: Path):
    return _frame_of_array(_load_numpy(path), path, "the array")


def _read_npz(path: Path):
    with _load_numpy(path) as archive:
        names = list(archive.files)
        if {"X", "y"} <= set(names):
            X, y = archive["X"], archive["y"]
            df = _frame_of_array(X, path, "the array 'X'")
            if y.ndim != 1 or y.shape[0] != X.shape[0]:
                raise ValueError(f"{path}: 'y' must be 1-D with one label per row of 'X' "
                                 f"({X.shape[0]}). Got shape {y.shape}.")
            return df.assign(y=y)
        if len(names) == 1:
            return _frame_of_array(archive[names[0]], path, f"the array {names[0]!r}")
    raise ValueError(f"{path} holds the arrays {names}; an .npz file must hold 'X' and 'y' "
                     "(numpy.savez(path, X=X, y=y)), or a single 2-D array.")


class MissingExtraError(ImportError, ValueError):
    """An optional dependency is not installed (an ImportError that the CLI reports, like
    any bad input, in one line)."""


def _read_parquet(path: Path):
    import pandas as pd

    try:
        import pyarrow  # noqa: F401 (pandas' Parquet engine)
    except ImportError:
        raise MissingExtraError(f"Reading the Parquet file {path} needs pyarrow: pip install "
                                '"ray_robust[parquet]" (or pip install pyarrow).') from None
    try:
        return pd.read_parquet(path)
    except Exception as exc:  # pyarrow's errors (ArrowInvalid, ...) are not ValueErrors
        raise ValueError(f"{path} is not a readable Parquet file ({type(exc).__name__}: "
                         f"{exc}).") from None


def _label_key(df, label: str | int):
    """The column of ``df`` that ``label`` names (a name, an int position or ``"#N"``)."""
    position = label_position(label)
    columns = list(df.columns)
    if position is not None and not (isinstance(label, int) and label in columns):
        if not -len(columns) <= position < len(columns):
            raise ValueError(f"The label column {label!r} is position {position}, but the data "
                             f"has {len(columns)} columns (positions 0 to {len(columns) - 1}, or "
                             f"-1 for the last).")
        return columns[position]
    if label not in columns and all(isinstance(c, int) for c in columns):
        raise ValueError(f"The label column {label!r} is not in the data, which has no column "
                         f"names (a headerless file: its first row is all numbers). Name the "
                         f"label by its 0-based position: label=57, or label_column '#57' "
                         f"({len(columns)} columns).")
    return label


def load_table(source, label: str | int, *, features: list | None = None,
               header: bool | None = None, with_names: bool = False):
    """``(X, y)`` from a user's table, the label column given by name or position
    (``with_names``: ``(X, y, features)``, the feature columns' labels).

    ``source``: a file path (CSV, with or without a header row, ``.npy``, ``.npz`` or Parquet:
    see :func:`read_table`, which ``header`` is passed to), a pandas DataFrame, or a 2-D numpy
    array. ``label``: a column name, or its 0-based position as an int or a string ``"#N"``
    (``-1`` / ``"#-1"``: the last column). ``features``: the feature columns (default: all
    others). X is float64; y is float64 for a numeric label column, and the label strings (a
    numpy ``str`` array) for a text or boolean one: :func:`encode_labels` maps them to codes.
    Raises a one-line ``ValueError`` naming the column for a missing label or feature column,
    non-numeric features, or NaN/Inf (or a missing label).
    """
    import pandas as pd

    if isinstance(source, (str, os.PathLike)):
        df = read_table(source, header=header)
    elif isinstance(source, pd.DataFrame):
        df = source
    elif isinstance(source, np.ndarray):
        if source.ndim != 2:
            raise ValueError(f"A numpy data array must be 2-D (rows × columns). Got shape "
                             f"{source.shape}.")
        df = pd.DataFrame(source)
    else:
        raise ValueError(f"The data source must be a file path, a pandas DataFrame or a 2-D "
                         f"numpy array. Got {type(source).__name__}.")
    label = _label_key(df, label)
    columns = list(df.columns)
    if label not in columns:
        raise ValueError(f"The label column {label!r} is not in the data. Columns: {columns}.")
    feats = [c for c in columns if c != label] if features is None else list(features)
    missing = [c for c in feats if c not in columns]
    if missing:
        raise ValueError(f"Feature column(s) {missing} are not in the data. Columns: {columns}.")
    if label in feats:
        raise ValueError(f"The label column {label!r} is also listed as a feature.")
    if not feats:
        raise ValueError("The data has no feature column besides the label.")
    out = []
    labels, text_labels = df[label], None
    if not pd.api.types.is_numeric_dtype(labels) or pd.api.types.is_bool_dtype(labels):
        if labels.isna().any():
            raise ValueError(f"The label column {label!r} has missing values; drop those rows "
                             "first.")
        text_labels = labels.astype(str).to_numpy().astype(str)
    for cols in (feats, [label]) if text_labels is None else (feats,):
        part = df[cols]
        bad = [c for c in cols if not pd.api.types.is_numeric_dtype(part[c])
               or pd.api.types.is_bool_dtype(part[c])]
        if bad:
            raise ValueError(f"Column(s) {bad} are not numeric; encode them as numbers first.")
        complex_cols = [c for c in cols if pd.api.types.is_complex_dtype(part[c])]
        if complex_cols:  # to_numpy(float64) would drop the imaginary part with a warning only
            raise ValueError(f"Column(s) {complex_cols} are complex; give real features (e.g. "
                             "the real and imaginary parts as two columns).")
        arr = part.to_numpy(dtype=np.float64)
        nonfinite = [c for c, ok in zip(cols, np.isfinite(arr).all(axis=0), strict=True) if not ok]
        if nonfinite:
            raise ValueError(f"Column(s) {nonfinite} contain NaN or infinite values; drop or "
                             "impute those rows first.")
        out.append(arr)
    y = out[1][:, 0] if text_labels is None else text_labels
    if with_names:
        return out[0], y, tuple(feats)
    return out[0], y


SYNTHETIC_TASKS = ("logistic", "softmax", "regression", "circles")


def make_synthetic(
    n: int,
    d: int,
    *,
    task: str = "logistic",
    n_classes: int = 3,
    noise: float = 0.1,
    margin: float = 0.0,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """A seeded synthetic task ``(X (n, d), y (n,))`` with x ~ N(0, I_d):

    - ``'logistic'``: y ~ Bernoulli(σ(xᵀw*/noise')) with w* a random unit vector, i.e. labels
      flip near the boundary (``noise`` = the logistic temperature; 0 = separable).
    - ``'softmax'``: y = argmax_k (W*x)_k + noise·Gumbel, K = ``n_classes``.
    - ``'regression'``: y = xᵀw* + noise·N(0, 1).
    - ``'circles'``: y = 1 when x₁² + x₂² > 2 ln 2 (the median radius of a 2-D Gaussian), a
      nonconvex boundary no linear model can fit; ``noise``: the fraction of flipped labels;
      ``margin``: no sample lies within this distance of the circle (they are redrawn), so
      a classifier robust to shifts smaller than the margin exists.
    """
    n = check_int(n, "n", "make_synthetic", low=1)
    d = check_int(d, "d", "make_synthetic", low=1)
    check_choice(task, "task", "make_synthetic", SYNTHETIC_TASKS)
    noise = check_real(noise, "noise", "make_synthetic", low=0)
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    if task == "circles":
        if d < 2:
            raise ValueError(f"The 'd' parameter of make_synthetic must be >= 2 for 'circles'. "
                             f"Got {d} instead.")
        margin = check_real(margin, "margin", "make_synthetic", low=0)
        r0 = np.sqrt(2 * np.log(2))
        for _ in range(1000):  # redraw the samples inside the band |r − r0| < margin
            band = np.abs(np.hypot(X[:, 0], X[:, 1]) - r0) < margin
            if not band.any():
                break
            X[band] = rng.standard_normal((int(band.sum()), d))
        else:
            raise ValueError(f"The 'margin' parameter of make_synthetic is too large: "
                             f"{margin!r}. Use a margin below 1.")
        y = (X[:, 0] ** 2 + X[:, 1] ** 2 > 2 * np.log(2)).astype(np.float64)
        flip = rng.random(n) < min(noise, 1.0)
        return X, np.where(flip, 1.0 - y, y)
    if task == "softmax":
        K = check_int(n_classes, "n_classes", "make_synthetic", low=2)
        W = rng.standard_normal((d, K))
        logits = X @ W + noise * rng.gumbel(size=(n, K))
        return X, logits.argmax(axis=1).astype(np.float64)
    w = rng.standard_normal(d)
    w /= np.linalg.norm(w)
    if task == "regression":
        return X, X @ w + noise * rng.standard_normal(n)
    s = X @ w
    p = (s > 0).astype(np.float64) if noise == 0 else 1.0 / (1.0 + np.exp(-s / noise))
    return X, (rng.random(n) < p).astype(np.float64)
