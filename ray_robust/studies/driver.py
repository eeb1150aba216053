"""Running a study: in-process (:func:`run_grid_local`) or with Ray Tune (:func:`run_study_full`,
:func:`run_study`): the output folder and its checks, one run of a study at a time (a
``flock``), ``--resume`` / ``--overwrite``, Ray (through the engine's :func:`ray_session`), the
Tuner with its scheduler, and the hand-off to :func:`~.results.finish_study`. Ray is imported
only when a study runs with Tune.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from ..algorithm import Server
from ..engines.local import train_local
from ..run_state import hold_lock, write_json_atomic
from .results import StudyResult, finish_study, rounds_of
from .spec import Study, _axis_values, load_study
from .trial import ParsedTrialResources, cached_problem, trainable, trial_key, trial_metrics

#: The file that marks a folder as a study's output (written before Tune starts): the only
#: kind of folder ``--overwrite`` deletes
STUDY_FILE = "study.json"


def run_grid_local(study: Study | str | os.PathLike | Mapping,
                   log: Callable[[str], None] | None = None) -> pd.DataFrame:
    """Run a study's grid in-process, without Tune: one row per trial, columns as Tune's
    ``ResultGrid.get_dataframe()`` (``config/<key>`` and the final metrics)."""
    if not isinstance(study, Study):
        study = load_study(study)
    rows = []
    for k, trial in enumerate(study.trials):
        cfg, opts = trial.config, trial.opts
        server = Server(cfg, cached_problem(cfg))
        state = server.initial_state()
        train_local(cfg, server.problem, state=state)
        row = trial_metrics(server, state, state.rows[-1], opts, 0)
        row.update({f"config/{key}": v for key, v in trial.values.items()})
        rows.append(row)
        if log and (k + 1) % 20 == 0:
            log(f"  {k + 1} runs done")
    return pd.DataFrame(rows)


def _default_storage() -> Path:
    return Path(os.environ.get("RAY_ROBUST_TUNE_DIR", "results/tune")).resolve()


def run_study_full(
    source: str | os.PathLike | Mapping | Study,
    *,
    quick: bool = False,
    storage: str | os.PathLike | None = None,
    resume: bool = False,
    overwrite: bool = False,
    address: str | None = None,
    verbose: int = 0,
    log: Callable[[str], None] | None = print,
    progress: Callable[[int, int], None] | None = None,
) -> StudyResult:
    """Run (or, with ``resume``, continue) a study with Ray Tune and write CSV + PNG.

    Outputs go to ``<storage>/<name>[_quick]/``: ``<name>_trials.csv`` (the ResultGrid
    DataFrame), ``<name>_summary.csv`` (mean ± sd over seeds), ``<name>.png``; beside them
    ``study.json`` (the study, read by ``resume``), ``progress/`` (each trial's saved run
    state, see :func:`trainable`), Tune's trial folders and, after a resume,
    ``superseded/`` (the trial folders of the interrupted run). One run of a study at a time:
    a second one (in another process) raises ``ValueError`` instead of writing beside it.
    ``progress(done, total)`` is called when the trials start (``done`` = 0) and as each
    one ends (with ``verbose`` = 0), e.g. to drive a progress bar.
    """
    storage_path = Path(storage).resolve() if storage else _default_storage()
    study = source if isinstance(source, Study) else load_study(source, quick=quick)
    check_storage(storage_path)
    check_against_data(study)
    with _one_run_at_a_time(storage_path, study.experiment_name):
        return _run_study_full(study, storage_path, resume=resume, overwrite=overwrite,
                               address=address, verbose=verbose, log=log, progress=progress)


def _one_run_at_a_time(storage_path: Path, name: str):
    """Hold ``<storage>/.<name>.lock`` (:func:`~ray_robust.run_state.hold_lock`: released when
    the process ends, even by SIGKILL) so that two runs of one study never write one folder."""
    return hold_lock(storage_path / f".{name}.lock", f"study '{name}' ({storage_path / name})",
                     "wait for that run to end or stop it, then --resume.")


def check_against_data(study: Study) -> None:
    """Every trial set up against the data it will run on, before Ray starts: its problem is
    built (split, scaling, shards: e.g. more workers than training samples) and its server
    (model, labels, the rule's precondition). A point that cannot run is one clear error
    naming it, not a trial that fails (and, with ``max_failures``, is retried) inside Tune."""
    for trial in study.trials:
        try:
            Server(trial.config, cached_problem(trial.config))
        except (ValueError, FileNotFoundError) as exc:
            point = {k: trial.values[k] for k in study.axes if k in trial.values}
            raise type(exc)(f"The study's trial {point or trial.values} cannot run: {exc}") \
                from None


#: free space (bytes) below which a study does not start: its records and Tune's files
#: would fill the disk mid-run
MIN_FREE_BYTES = 64 * 2**20


def check_storage(storage: Path) -> None:
    """The study's output location must be a folder this process can write (created if
    missing): else one clear ``ValueError`` before any work starts."""
    fix = "pass a folder you can write to as --storage (Python: storage=)"
    if storage.exists() and not storage.is_dir():
        raise ValueError(f"The storage {storage} is a file, not a folder: {fix}; it is "
                         "created if missing.")
    existing = storage
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ValueError(f"The storage {storage} cannot be created ({existing} is a file): "
                         f"{fix}.")
    if not os.access(existing, os.W_OK | os.X_OK):
        where = "" if existing == storage else f" (nor can {existing}, where it would be made)"
        raise ValueError(f"The storage {storage} is not writable{where}: {fix}.")
    free = shutil.disk_usage(existing).free
    if free < MIN_FREE_BYTES:
        raise ValueError(f"The disk holding the storage {storage} has {free / 2**20:.0f} MiB "
                         f"free (a study needs at least {MIN_FREE_BYTES // 2**20} MiB): free "
                         f"some space or {fix}.")


def _not_this_study(exp: Path, study: Study) -> str | None:
    """Why ``exp`` is not a folder that this study wrote (None when it is, or is empty)."""
    if exp.is_symlink():
        return "is a symbolic link"
    if not exp.is_dir():
        return "is not a folder"
    if not any(exp.iterdir()):
        return None
    marker = exp / STUDY_FILE
    if marker.is_symlink() or not marker.is_file():
        return f"has no {STUDY_FILE}"
    try:
        saved = json.loads(marker.read_text())
    except (OSError, ValueError):
        return f"has an unreadable {STUDY_FILE}"
    if not isinstance(saved, dict):
        return f"has an unreadable {STUDY_FILE}"
    name = f"{saved.get('name')}{'_quick' if saved.get('quick') else ''}"
    if name != study.experiment_name:
        return f"holds study '{name}'"
    return None


def _remove_previous_run(exp: Path, study: Study) -> None:
    """``--overwrite``: delete ``exp`` only when it is this study's own folder (its
    :data:`STUDY_FILE` names the study); anything else is a ``ValueError`` naming the folder."""
    why = _not_this_study(exp, study)
    if why is not None:
        raise ValueError(
            f"--overwrite refused: {exp} {why}, so it is not a folder of study "
            f"'{study.experiment_name}' (--overwrite deletes only those): move or delete it "
            "yourself, or pass another --storage.")
    # rmtree removes a symbolic link inside the folder as a link: it never follows one out
    shutil.rmtree(exp)


def _worker_env() -> dict[str, str]:
    """Environment variables a trial needs, absolute: trials run in their own working
    directories (and on other nodes)."""
    return {k: str(Path(os.environ[k]).resolve()) for k in ("RAY_ROBUST_DATA_DIR",)
            if k in os.environ}


def _run_study_full(study: Study, storage_path: Path, *, resume: bool, overwrite: bool,
                    address: str | None, verbose: int, log: Callable[[str], None] | None,
                    progress: Callable[[int, int], None] | None = None) -> StudyResult:
    from ..engines.ray_engine import ray_session

    exp = storage_path / study.experiment_name
    earlier: list[Path] = []
    if resume:
        if not (exp / STUDY_FILE).is_file():
            raise ValueError(f"Nothing to resume at {exp}: run the study without --resume "
                             "first (or pass the --storage it used).")
        try:
            saved = json.loads((exp / STUDY_FILE).read_text())
        except (OSError, ValueError) as exc:
            raise ValueError(f"{exp / STUDY_FILE} is unreadable ({exc}): start the study "
                             "again with --overwrite.") from None
        resumed = load_study(saved)
        if resumed.experiment_name != study.experiment_name:
            raise ValueError(f"{exp / STUDY_FILE} is the study '{resumed.experiment_name}', "
                             f"not '{study.experiment_name}': it cannot be resumed as this one.")
        study = resumed
        check_against_data(study)  # the saved grid is what runs: check it too
        earlier = [d for d in exp.glob("trainable_*") if d.is_dir()]
    elif exp.exists() or exp.is_symlink():
        if not overwrite:
            raise ValueError(f"{exp} already holds an experiment: pass --resume to continue "
                             "it, --overwrite to start again, or another --storage.")
        _remove_previous_run(exp, study)
    with ray_session(address, worker_env=_worker_env(), configure_logging=False):
        return _fit(study, exp, storage_path, resume=resume, earlier=earlier, verbose=verbose,
                    log=log, progress=progress)


def _fit(study: Study, exp: Path, storage_path: Path, *, resume: bool, earlier: list[Path],
         verbose: int, log: Callable[[str], None] | None,
         progress: Callable[[int, int], None] | None = None) -> StudyResult:
    """The study's Tune run, Ray up; its results handed to :func:`finish_study`."""
    from ray import tune

    say = log or (lambda _msg: None)
    n_trials = len(study.trials)
    slots = _check_fits(study, exp)
    shape = " × ".join(f"{a} {len(_axis_values(study.param_space[a]))}" for a in study.axes)
    say(f"study {study.experiment_name}: {n_trials} trials ({shape})"
        f"{', resuming' if resume else ''} -> {exp}")
    t0 = time.perf_counter()
    if progress:
        progress(0, n_trials)
    # a resumed study is a new Tune run of the whole grid: each trial continues from its own
    # record in the progress store (a finished one only reports its end again), never from
    # Tune's experiment snapshot (see trainable)
    if not resume:
        exp.mkdir(parents=True, exist_ok=True)
        write_json_atomic(exp / STUDY_FILE, study.to_dict(), indent=1)
    # the trials parsed at load go to Tune's resource request and to every trial
    parsed = {t.key: t for t in study.trials}
    fn = tune.with_resources(
        tune.with_parameters(trainable, experiment_dir=str(exp), trials=parsed),
        ParsedTrialResources(parsed))
    tuner = tune.Tuner(
        fn,
        param_space=study.param_space,
        tune_config=tune.TuneConfig(metric=study.metric, mode=study.mode,
                                    reuse_actors=True, scheduler=_no_steal_scheduler(),
                                    max_concurrent_trials=slots),
        run_config=tune.RunConfig(
            name=study.experiment_name, storage_path=str(storage_path), verbose=verbose,
            callbacks=[*_loggers(), *([_trial_log_class()(n_trials, say, study.axes, progress)]
                                      if (log or progress) and verbose == 0 else [])],
            failure_config=tune.FailureConfig(max_failures=study.max_failures),
        ),
    )
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    with _env(TUNE_DISABLE_AUTO_CALLBACK_LOGGERS="1"), _without_tune_restore_hint():
        try:
            grid = tuner.fit()  # (TUNE_DISABLE_AUTO_CALLBACK_LOGGERS: loggers are _loggers())
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise
            raise ValueError(f"The disk holding {exp} filled up during the study: free some "
                             "space, then continue with --resume (the saved progress is "
                             "kept).") from None
    seconds = time.perf_counter() - t0
    if resume:
        _set_aside(exp, earlier, replaced={trial_key(r.config or {}) for r in grid})
    results = grid.get_dataframe()
    if grid.num_errors:
        for r in grid:
            if r.error is not None:
                lines = [ln for ln in str(r.error).splitlines() if ln.strip()]
                point = {a: (r.config or {}).get(a) for a in study.axes}
                say(f"  trial {point} failed: {lines[-1] if lines else type(r.error).__name__}")
        say(f"{grid.num_errors} of {len(grid)} trials failed; their rows are missing from the "
            "tables (see the trial logs under the experiment folder).")
    # Tune creates trials as slots free up: an interrupted run may not have created them all
    finished = sum(1 for r in grid if r.error is None and not _unfinished(study, r))
    unfinished = n_trials - finished - grid.num_errors
    if unfinished:
        say(f"{unfinished} of {n_trials} trials did not finish (interrupted): continue with "
            f"--resume (Python: resume=True) and the same storage.")
    res = finish_study(study, results, exp, num_errors=grid.num_errors, seconds=seconds,
                       log=say)
    res.num_unfinished = unfinished
    return res


def _unfinished(study: Study, result) -> bool:
    return int((result.metrics or {}).get("round") or 0) < rounds_of(study, result.config or {})


def _set_aside(exp: Path, earlier: list[Path], replaced: set[str]) -> None:
    """Move the trial folders of the interrupted run(s) whose trials the resumed run ran again
    (``replaced``: their keys) to ``superseded/``: the study's folder then holds one folder per
    trial, with the resumed run's reports (``resumed_from`` = the round it continued from), and
    ``superseded/`` what was logged before. When the resumed run is itself interrupted before
    Tune created every trial, the folders of the others stay for the next resume."""
    for trial_dir in earlier:
        try:
            key = trial_key(json.loads((trial_dir / "params.json").read_text()))
        except (OSError, ValueError):
            key = None  # a folder Tune created without its parameters: nothing to keep apart
        if key is None or key in replaced:
            (exp / "superseded").mkdir(exist_ok=True)
            shutil.move(str(trial_dir), str(exp / "superseded" / trial_dir.name))


def _check_fits(study: Study, exp: Path) -> int:
    """A trial that needs more CPUs than the cluster has would wait forever: fail now.

    Returns how many trials fit on the cluster at once (at most), Tune's
    ``max_concurrent_trials``: see :class:`FifoNoSteal` for why Tune should hold no more
    trials pending than can start."""
    import ray

    cpus = ray.cluster_resources().get("CPU", 0)
    needs = [sum(b["CPU"] for b in trial.bundles) for trial in study.trials]
    if max(needs) > cpus:
        raise ValueError(
            f"Study {study.name}: a trial reserves {max(needs):g} CPUs (1 + one per Ray-engine "
            f"actor) but the cluster has {cpus:g}; lower 'actors' or use a bigger cluster.")
    return max(1, int(cpus // min(needs)))


@contextlib.contextmanager
def _env(**values: str) -> Iterator[None]:
    """Set environment variables inside the block (Tune reads these when ``fit`` starts)."""
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextlib.contextmanager
def _without_tune_restore_hint() -> Iterator[None]:
    """Drop Tune's "Resume experiment with: Tuner.restore(...)" on an interrupted run: a study
    resumes with ``--resume`` (see :func:`trainable`), which the run's own message says."""
    import logging

    def keep(record: logging.LogRecord) -> bool:
        return "Tuner.restore(" not in record.getMessage()

    tune_log = logging.getLogger("ray.tune.tune")
    tune_log.addFilter(keep)
    try:
        yield
    finally:
        tune_log.removeFilter(keep)


def _loggers() -> list:
    """Tune's result loggers minus TensorBoard: ``result.json`` and ``progress.csv`` per trial
    (the ResultGrid reads them). Tune adds a TensorBoard logger too unless
    TUNE_DISABLE_AUTO_CALLBACK_LOGGERS=1: an event file per trial, written and flushed at every
    report, ≈ 20 % of the driver's CPU samples in a Table I study (py-spy, issue 8)."""
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

    return [JsonLoggerCallback(), CSVLoggerCallback()]


def _fifo_no_steal_class() -> type:
    from ray.tune.schedulers import FIFOScheduler

    class FifoNoSteal(FIFOScheduler):
        """Tune's FIFO scheduler without the step that serializes short trials (issue 8, P3).

        Each step Tune asks the scheduler for a trial to run; FIFO names the first pending
        trial, and when that trial already has an actor starting for it while another actor
        sits idle in the reuse cache, Tune gives it the idle actor and kills the starting
        one. With trials shorter than an actor's start-up (Table I: 0.1-0.5 s against 1-5 s)
        every new actor was killed as it came up: a whole study ran on one actor while the
        other CPU started and killed actors. Naming no trial leaves both jobs to Tune's own
        queues: pending trials get actors in FIFO order, and an idle actor goes to a pending
        trial; with ``max_concurrent_trials`` = the trials that fit at once (see
        :func:`run_study_full`) a new trial without an actor is always there to take it, so
        an actor that starts is used (only the study's last trial may take an idle actor
        from one still starting).
        """

        def choose_trial_to_run(self, tune_controller):
            return None

    FifoNoSteal.__module__ = __name__
    FifoNoSteal.__qualname__ = "FifoNoSteal"
    return FifoNoSteal


def _no_steal_scheduler() -> Any:
    """A :class:`FifoNoSteal` (Tune's FIFO scheduler minus its actor stealing)."""
    return __getattr__("FifoNoSteal")()


def __getattr__(name: str) -> Any:
    # FifoNoSteal subclasses a Tune class: built on first use so that importing this module
    # does not import ray.tune; a module attribute, so Tune's pickled run state refers to it
    if name == "FifoNoSteal":
        globals()[name] = cls = _fifo_no_steal_class()
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _discard(_text: str) -> None:
    """A printer that prints nothing."""


def _trial_log_class():
    from ray.tune import Callback

    class TrialLog(Callback):
        """One line per finished trial: '[k/N] axis=value ... -> error=...'."""

        def __init__(self, total: int, say: Callable[[str], None], axes: list[str],
                     progress: Callable[[int, int], None] | None = None):
            self.total, self.say, self.axes, self.done = total, say, axes, 0
            self.progress = progress

        def __getstate__(self) -> dict:
            # Tune pickles its callbacks into the experiment's snapshot: the terminal's
            # printers (a progress bar's stream) stay in this process
            return {**self.__dict__, "say": _discard, "progress": None}

        def on_trial_complete(self, iteration, trials, trial, **info):
            self.done += 1
            res = trial.last_result or {}
            point = " ".join(f"{a}={trial.config.get(a)}" for a in self.axes)
            err = res.get("error")
            self.say(f"  [{self.done}/{self.total}] {point} -> error "
                     f"{err:.4f}" if err is not None else f"  [{self.done}/{self.total}] {point}")
            if self.progress:
                self.progress(self.done, self.total)

        def on_trial_error(self, iteration, trials, trial, **info):
            self.done += 1
            self.say(f"  [{self.done}/{self.total}] {trial} FAILED")
            if self.progress:
                self.progress(self.done, self.total)

    return TrialLog



def run_study(source: str | os.PathLike | Mapping, quick: bool = False,
              storage: str | os.PathLike | None = None, **kwargs) -> pd.DataFrame:
    """Notebook entry point: run a study with Tune and return the per-trial DataFrame.

    The CSVs and PNG are written as by ``ray-robust tune``; ``kwargs`` go to
    :func:`run_study_full` (``resume``, ``overwrite``, ``address``, ``verbose``, ``log``).
    """
    kwargs.setdefault("verbose", 0)
    kwargs.setdefault("log", None)
    return run_study_full(source, quick=quick, storage=storage, **kwargs).results
