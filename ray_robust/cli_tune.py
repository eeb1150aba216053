"""``ray-robust tune CONFIG``: run a study of ``tune_configs/`` with Ray Tune (CSV + PNG)."""

from __future__ import annotations

import argparse


def add_tune_parser(sub) -> None:
    """Register the ``tune`` subcommand on the ``ray-robust`` subparsers."""
    p = sub.add_parser(
        "tune", help="run a Ray Tune study (tune_configs/*.yaml): CSV, mean ± sd, PNG",
        description="Run a study file with Ray Tune; write the per-trial CSV, the summary "
                    "over seeds (mean ± sd) and the study's plot under STORAGE/<name>/.",
    )
    p.add_argument("config", help="study YAML, e.g. tune_configs/fig1_shift.yaml")
    p.add_argument("--storage", default=None,
                   help="results folder (default: $RAY_ROBUST_TUNE_DIR or ./results/tune); on "
                        "a multi-node cluster a folder every node sees (NFS), as Tune requires")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted run of this study: each trial from the progress "
                        "it saved (STORAGE/<name>[_quick]/progress/)")
    p.add_argument("--overwrite", action="store_true",
                   help="delete a previous run of this study in STORAGE and start again")
    p.add_argument("--address", default=None,
                   help="join an existing Ray cluster (else RAY_ADDRESS, else a local one)")
    p.add_argument("--quick", action="store_true",
                   help="apply the file's 'quick:' overrides (tiny grid, few rounds)")
    p.add_argument("--verbose", type=int, default=0, choices=[0, 1, 2],
                   help="Tune's own progress output (0: one line per finished trial); 1 or 2 "
                        "also show Ray's own log lines")
    p.add_argument("--quiet", action="store_true",
                   help="no progress bar and no per-trial lines (the summary only)")
    p.set_defaults(func=cmd_tune)


def cmd_tune(args: argparse.Namespace) -> int:
    from .studies import run_study_full
    from .terminal import Progress, wall_seconds

    bar: Progress | None = None

    def progress(done: int, total: int) -> None:
        nonlocal bar
        if bar is None:
            bar = Progress(total, "trials", "trial", quiet=args.quiet,
                           stream=getattr(args, "terminal", None))  # set by cli.main
        bar.step(done)

    def say(text: str) -> None:
        if args.quiet and text.startswith("  ["):  # a finished trial's line
            return
        if bar is not None and bar.per_step:  # above the bar
            bar.write(text)
        else:
            print(text, flush=True)

    try:
        res = run_study_full(args.config, quick=args.quick, storage=args.storage,
                             resume=args.resume, overwrite=args.overwrite, address=args.address,
                             verbose=args.verbose, log=say, progress=progress)
    finally:
        if bar is not None:
            bar.close()
    # what the user waited for: Ray's start and stop included, not only Tune's fit
    print(f"done in {wall_seconds():.1f} s (trials {res.seconds:.1f} s)", flush=True)
    if res.num_unfinished:
        return 130
    if res.num_errors:
        print(f"ray-robust: error: {res.num_errors} trial(s) failed; see "
              f"{res.experiment_path}", flush=True)
        return 1
    return 0
