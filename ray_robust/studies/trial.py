"""One trial of a study: its config split into a run :class:`Config` and study knobs, its record
in the study's progress store (``<experiment>/progress/<trial key>.json``), and the Tune
function :func:`trainable` (the only place that calls ``ray.tune.report``).

A trial's flat config dict is parsed once into a :class:`Trial` (:func:`parse_trial`); the
driver hands the parsed trials to Tune's resource request and to the trainable. Importing this
module does not import Ray.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .._validation import check_int
from ..algorithm import RunState, Server, run
from ..config import Config
from ..core.shift import error_rate
from ..data import Problem
from ..engines import ENGINES
from ..engines.local import train_local
from ..reproduce import ENVIRONMENTS
from ..run_state import RecordError, read_record, write_record

#: Trial keys a param_space may hold besides Config's fields and ``algorithm``.
TRIAL_KEYS: dict[str, str] = {
    "environment": "one of Table I's environments 'E0'…'E4' (sets attack, alpha, shift_norm, "
                   "shift_eps; explicit values of those keys win)",
    "beta_offset": "β = α + beta_offset (overrides beta; e.g. 0 for β = α, 1/m for β = α + 1/m)",
    "report_every": "report to Tune (and save the trial's progress) every this many rounds "
                    "(default 50)",
    "eval_shift_eps": "list of shift budgets ε (in the trial's shift_norm) evaluated at every "
                      "report as 'error@eps=<ε>': one training run serves a whole ε axis",
    "engine": "'local' (in-process, default) or 'ray' (Ray actors inside the trial)",
    "actors": "engine 'ray' inside a trial: worker actors to start, an int or 'per-worker' "
              "(default 1); the trial reserves one CPU bundle per actor",
}
EPS_PREFIX = "error@eps="
DEFAULT_REPORT_EVERY = 50
CHECKPOINT_FILE = "run_state.json"
#: The study's progress store: ``<experiment>/progress/<trial key>.json`` (see :func:`trainable`)
PROGRESS_DIR = "progress"
#: the kind of run-state record a trial writes (progress records and its final checkpoint)
RECORD_KIND = "trial"


def split_trial_config(values: Mapping[str, Any]) -> tuple[Config, dict[str, Any]]:
    """A trial's flat config dict → (:class:`Config`, trial options of :data:`TRIAL_KEYS`)."""
    values = dict(values)
    opts = {k: values.pop(k) for k in list(values) if k in TRIAL_KEYS}
    env = opts.get("environment")
    if env is not None:
        if env not in ENVIRONMENTS:
            raise ValueError(f"The 'environment' parameter of the study must be one of "
                             f"{sorted(ENVIRONMENTS)}. Got {env!r} instead.")
        values = {**ENVIRONMENTS[env], **values}
    if opts.get("beta_offset") is not None:
        values["beta"] = float(values.get("alpha", Config.alpha)) + float(opts["beta_offset"])
    report_every = check_int(opts.get("report_every", DEFAULT_REPORT_EVERY), "report_every",
                             "the study", low=1)  # 2.5 was read as 2
    values.setdefault("eval_every", report_every)
    opts["report_every"] = report_every
    engine = opts.setdefault("engine", "local")
    if engine not in ENGINES:
        raise ValueError(f"The 'engine' parameter of the study must be one of {list(ENGINES)}."
                         f" Got {engine!r} instead.")
    opts.setdefault("actors", 1)
    cfg = Config.from_dict(values)
    trial_actors(opts, cfg.n_workers)
    if report_every % cfg.eval_every:
        raise ValueError(f"The 'report_every' parameter ({report_every}) must be a multiple of "
                         f"eval_every ({cfg.eval_every}).")
    return cfg, opts


@dataclass(frozen=True, eq=False)
class Trial:
    """A trial's config dict, parsed once: the run's :class:`Config` and the study knobs."""

    values: dict[str, Any]
    config: Config
    opts: dict[str, Any]

    @property
    def key(self) -> str:
        """The trial's name in the progress store (:func:`trial_key`)."""
        return trial_key(self.values)

    @property
    def bundles(self) -> list[dict[str, float]]:
        """The placement-group bundles the trial reserves (see :func:`trial_bundles`)."""
        bundles = [{"CPU": 1.0}]
        if self.opts["engine"] == "ray":
            from ..engines.ray_placement import ACTOR_CPUS  # (no Ray import)

            per_actor = float(ACTOR_CPUS) or 1.0  # 0 CPUs: a bundle of zeros is invalid
            bundles += [{"CPU": per_actor}] * trial_actors(self.opts, self.config.n_workers)
        return bundles


def parse_trial(values: Mapping[str, Any]) -> Trial:
    """:func:`split_trial_config` as a :class:`Trial` (a study's grid point, parsed once)."""
    cfg, opts = split_trial_config(values)
    return Trial(dict(values), cfg, opts)


_PROBLEMS: dict[tuple, Problem] = {}


def cached_problem(cfg: Config) -> Problem:
    """The problem for ``cfg``, built once per process (trials reuse their actor's copy)."""
    from ..api import load_problem

    key = cfg.data_key()
    if key not in _PROBLEMS:
        if len(_PROBLEMS) >= 16:
            _PROBLEMS.pop(next(iter(_PROBLEMS)))
        _PROBLEMS[key] = load_problem(cfg)
    return _PROBLEMS[key]


def trial_metrics(server: Server, state: RunState, row: dict, opts: dict,
                  resumed_from: int) -> dict[str, Any]:
    """What a trial reports: the round's metrics, ``error`` and the errors at extra ε."""
    cfg, pb = server.config, server.problem
    out = {k: (float(v) if isinstance(v, np.floating) else v) for k, v in row.items()}
    out["error"] = out["test_error_shifted"]
    out["resumed_from"] = resumed_from
    norm = None if cfg.shift_norm == "none" else cfg.shift_norm
    for eps in opts.get("eval_shift_eps") or ():
        out[f"{EPS_PREFIX}{float(eps):g}"] = error_rate(
            server.model, state.theta, pb.X_test, pb.y_test, norm, float(eps))
    return out


def trial_actors(opts: Mapping[str, Any], n_workers: int) -> int:
    """How many worker actors a trial with ``engine: ray`` starts (``actors``: an int,
    'per-worker' = m, or 'auto'). 'auto' is the engine's own rule
    (:func:`~ray_robust.engines.ray_placement.actor_count`) for a trial's resources: its
    bundles are reserved before its problem is loaded, so one CPU on one node, hence 1."""
    actors = opts.get("actors", 1)
    if actors == "per-worker":
        return n_workers
    if actors == "auto":
        from ..engines.ray_placement import actor_count

        return actor_count("auto", n_workers, feature_bytes=0, resources=(1, 1))
    if isinstance(actors, bool) or not isinstance(actors, int) or actors < 1:
        raise ValueError(f"The 'actors' parameter of the study must be an int >= 1, "
                         f"'per-worker' or 'auto'. Got {actors!r} instead.")
    return min(actors, n_workers)


def trial_bundles(values: Mapping[str, Any]) -> list[dict[str, float]]:
    """The placement-group bundles a trial reserves: one CPU for the trial itself, and with
    ``engine: ray`` one bundle per worker actor it starts (each the actor's CPU request, or 1
    CPU when the engine's actors request none: the reservation keeps Tune from running other
    trials on the CPUs the actors use; too few bundles for CPU-requesting actors = a hang)."""
    cfg, opts = split_trial_config(values)
    return Trial(dict(values), cfg, opts).bundles


def trial_resources(values: Mapping[str, Any]):
    """:func:`trial_bundles` as Tune's ``PlacementGroupFactory`` (for ``tune.with_resources``)."""
    from ray import tune

    return tune.PlacementGroupFactory(parse_trial(values).bundles)


class ParsedTrialResources:
    """Tune's resource request for a study's trials, from the trials parsed at load (a config
    not among them is parsed here)."""

    def __init__(self, trials: Mapping[str, Trial]):
        self.trials = dict(trials)

    def __call__(self, values: Mapping[str, Any]):
        from ray import tune

        trial = self.trials.get(trial_key(values)) or parse_trial(values)
        return tune.PlacementGroupFactory(trial.bundles)


def trial_key(values: Mapping[str, Any]) -> str:
    """A trial's name in the progress store: a hash of its config values (the resolved grid
    point), the same in every run of the study whatever trial id or folder Tune gives it."""
    return hashlib.sha256(_canonical(values).encode()).hexdigest()[:20]


def _canonical(values: Mapping[str, Any]) -> str:
    return json.dumps(dict(values), sort_keys=True, default=repr)


def progress_path(exp: str | os.PathLike, values: Mapping[str, Any]) -> Path:
    """Where a trial of the study in ``exp`` saves its progress."""
    return Path(exp) / PROGRESS_DIR / f"{trial_key(values)}.json"


def _write_trial_record(target: Path, values: Mapping[str, Any], state: RunState,
                        config: Config | None) -> Path:
    """A trial's run-state record (:mod:`ray_robust.run_state`: atomic, checksummed, owned by
    the trial's values)."""
    return write_record(target, kind=RECORD_KIND, owner=json.loads(_canonical(values)),
                        config=config, state=state)


def save_trial_progress(exp: str | os.PathLike, values: Mapping[str, Any], state: RunState,
                        config: Config | None = None) -> Path:
    """Save a trial's run state in the study's progress store: what :func:`trial_progress`
    reads back."""
    return _write_trial_record(progress_path(exp, values), values, state, config)


def save_final_state(folder: str | os.PathLike, values: Mapping[str, Any], state: RunState,
                     config: Config | None = None) -> Path:
    """The trial's final state as ``folder/run_state.json`` (the Tune checkpoint's content):
    the same kind of record as its progress."""
    return _write_trial_record(Path(folder) / CHECKPOINT_FILE, values, state, config)


def trial_progress(exp: str | os.PathLike, values: Mapping[str, Any],
                   config: Config | None = None) -> RunState | None:
    """The run state a trial of the study in ``exp`` last saved (θ, round, RNG states, every
    round's row), or None when it has saved none. A record that fails its checks (corrupt,
    edited, another trial's) is not trusted: a warning, and the trial starts from round 0."""
    path = progress_path(exp, values)
    if not path.is_file():
        return None
    try:
        _, state = read_record(path, kind=RECORD_KIND, owner=json.loads(_canonical(values)),
                               config=config)
        return state
    except RecordError as exc:
        warnings.warn(f"{path} is not a usable progress record ({exc.why}); the trial starts "
                      "from round 0 (its result is the same, only the earlier work is redone).",
                      RuntimeWarning, stacklevel=2)
        return None


def trainable(config: dict[str, Any], experiment_dir: str | None = None,
              trials: Mapping[str, Trial] | None = None) -> None:
    """Tune function trainable: one run of Algorithm 2 / a baseline, resumable.

    Every ``report_every`` rounds (and at T) it saves its run state to the study's progress
    store, ``<experiment_dir>/progress/<trial key>.json`` (atomically: a crash leaves the
    previous record), then reports to Tune; a trial that finds its record continues from it,
    so θ ends bit-identical to an uninterrupted run. Resuming thus relies only on this
    store, never on Tune's experiment snapshot (whose writes are not crash-safe: a driver
    killed while writing it left an empty file, and a snapshot can name a trial checkpoint
    Tune has already deleted). The final report carries a Tune checkpoint of the state
    (``result.checkpoint``). ``experiment_dir`` defaults to the Tune experiment's folder on
    its (local or NFS) storage, so ``tune.Tuner(trainable, ...)`` used directly saves progress
    too, and a later run under the same experiment name continues from those records. The key
    covers the config values only: after changing the code or the data, use a new name (or
    ``--overwrite``). ``trials``: the study's trials already parsed, by key (the driver passes
    them; a config not among them is parsed here).
    """
    from ray import tune

    if experiment_dir is None:
        experiment_dir = _tune_experiment_dir()
    trial = (trials or {}).get(trial_key(config)) or parse_trial(config)
    cfg, opts = trial.config, trial.opts
    problem = cached_problem(cfg)
    server = Server(cfg, problem)
    state = trial_progress(experiment_dir, config, cfg) or server.initial_state()
    resumed_from = state.round

    def report(row: dict) -> None:
        metrics = trial_metrics(server, state, row, opts, resumed_from)
        save_trial_progress(experiment_dir, config, state, cfg)
        if state.round < cfg.rounds:
            tune.report(metrics)
            return
        with tempfile.TemporaryDirectory() as d:  # the final state, as the same kind of record
            save_final_state(d, config, state, cfg)
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(d))

    if state.round >= cfg.rounds:  # finished in an earlier run: report the end once more
        report(state.rows[-1])
        return
    if opts["engine"] == "ray":
        _run_ray(server, state, opts, report)
    else:
        train_local(cfg, problem, state=state, progress=report,
                    progress_every=opts["report_every"])


def _tune_experiment_dir() -> str:
    """The folder of the running Tune experiment on its storage (not the per-run staging folder
    that ``get_trial_dir()`` names)."""
    import pyarrow.fs
    from ray import tune

    fix = "Pass one: tune.with_parameters(trainable, experiment_dir=...)."
    try:  # a DeveloperAPI of Ray 2.x's Tune context
        storage = tune.get_context().get_storage()
        filesystem, path = storage.storage_filesystem, storage.experiment_fs_path
    except (AttributeError, RuntimeError) as exc:
        raise ValueError(f"This Ray Tune does not tell a trial its experiment folder ({exc}). "
                         f"{fix}") from None
    if not isinstance(filesystem, pyarrow.fs.LocalFileSystem):
        raise ValueError(
            "The trainable saves its progress to a folder on a local or shared (NFS) file "
            f"system; this experiment's storage is {filesystem.type_name}. {fix}")
    return path


def _run_ray(server: Server, state: RunState, opts: dict, report: Callable) -> None:
    from ..engines.ray_engine import RayTrainer

    trainer = RayTrainer(server.problem,
                         actors=trial_actors(opts, server.config.n_workers))
    try:
        compute = trainer.compute_fn(server.config)
        run(server, compute, state=state, progress=report, progress_every=opts["report_every"])
    finally:
        trainer.close()
