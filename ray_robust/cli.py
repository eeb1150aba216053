"""The ``ray-robust`` command line: ``train`` one configuration, ``predict`` with its saved
model, ``reproduce table1``.

Bad input (and a diverging run: eta too large) prints one line ``ray-robust: error: …`` and
exits with status 2 (no traceback); a run that fails (more faults than the aggregator
tolerates, a dead Ray server actor) prints one line and exits with status 1.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path
from typing import Any

from ._validation import load_yaml_mapping
from .config import ALGORITHMS, GROUPS, PARAMS, Config, default, flatten_groups
from .engines import ENGINES
from .terminal import Progress, ray_noise_filtered, wall_seconds


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error (``ray-robust: error: …`` and where the help is) instead
    of the usage block first; exit status 2 as argparse's."""

    def error(self, message: str):
        self.exit(2, f"ray-robust: error: {message} (see `{self.prog} --help`)\n")


def _elapsed() -> float:
    """Seconds the user has waited for this command so far (Ray's start and stop included)."""
    return wall_seconds()


def _text_parser(name: str, constraint):
    """argparse ``type=``: the constraint's own text parser, with argparse's error form."""
    def parse(text: str):
        try:
            return constraint.parse_text(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected {constraint.describe()}, got {text!r}") from None

    parse.__name__ = name
    return parse


def _add_config_flags(parser: argparse.ArgumentParser) -> None:
    """One ``--flag`` per entry of the parameter table, grouped as the table groups them."""
    parser.add_argument("--algorithm", choices=list(ALGORITHMS),
                        help="shorthand for --aggregator and --wrm (Table I's four)")
    for group, title in GROUPS.items():
        section = parser.add_argument_group(f"{group}: {title}")
        for name, spec in PARAMS.items():
            if spec.group != group:
                continue
            choices = getattr(spec.constraint, "options", None)
            section.add_argument(
                f"--{name.replace('_', '-')}", dest=name,
                type=_text_parser(name, spec.constraint), default=argparse.SUPPRESS,
                metavar="{" + ",".join(choices) + "}" if choices else None,
                help=f"{spec.doc} (default: {default(name)})")


def _add_engine_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--engine", choices=list(ENGINES), default="local",
                        help="'local': all workers in-process (default); 'ray': Ray actors")
    parser.add_argument("--address", default=None,
                        help="join an existing Ray cluster (else RAY_ADDRESS, else a local one)")
    parser.add_argument("--actors", default="auto",
                        help="Ray engine: 'auto' (one actor per node, up to one per CPU for "
                             "large data), 'per-worker', or a number of worker actors")
    parser.add_argument("--round-timeout", type=float, default=60.0,
                        help="Ray engine: seconds a round waits for worker actors; later "
                             "messages count as missing (default 60)")
    parser.add_argument("--dashboard", action="store_true",
                        help="Ray engine: start the Ray dashboard with a local Ray instance")


def _load_yaml(path: str) -> dict[str, Any]:
    return load_yaml_mapping(path, "config", "of config parameters")


def _say(text: str) -> None:
    print(text, flush=True)


def _add_terminal_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quiet", action="store_true",
                        help="no progress bar and no progress lines (the summary only)")
    parser.add_argument("--verbose", action="store_true",
                        help="show Ray's own log lines (start-up notices, core worker lines)")


def _theory_line(cfg: Config) -> str:
    """The paper's verdict for ``cfg`` (Theorems 1–3) and, for certified ε, the ε schedule."""
    from .core.schedule import schedule_spec
    from .theory import verdict

    line = verdict(cfg).text
    if cfg.wrm and (cfg.epsilon is not None or cfg.epsilon_schedule is not None):
        eps = cfg.epsilon if cfg.epsilon is not None else schedule_spec(cfg.epsilon_schedule)
        line += f"; certified WRM ε = {eps} (cap t_z_max = {cfg.t_z_max})"
    return line


def cmd_train(args: argparse.Namespace) -> int:
    from .api import check_output_dir, resume, train

    if args.out:
        check_output_dir(args.out, "--out")  # before the work, not after it
    if args.resume:
        changed = [f"--{name.replace('_', '-')}" for name in PARAMS if hasattr(args, name)]
        changed += ["--config"] * bool(args.config) + ["--algorithm"] * bool(args.algorithm)
        if changed:
            raise ValueError(
                f"--resume continues the checkpointed run with its own config; {changed} would "
                "change it. Drop them, or start a new run with --checkpoint-dir.")
        if args.checkpoint_dir and Path(args.checkpoint_dir).resolve() != Path(
                args.resume).resolve():
            raise ValueError(
                f"--resume {args.resume} keeps checkpointing into that folder; "
                f"--checkpoint-dir {args.checkpoint_dir} contradicts it. Drop --checkpoint-dir.")
        _say(f"ray-robust train: resuming from {args.resume}")
        from .checkpoint import load_checkpoint

        config, state = load_checkpoint(args.resume)
        with _round_progress(args, config.rounds, done=state.round) as bar:
            hist = resume(args.resume, engine=args.engine, checkpoint_every=args.checkpoint_every,
                          **_progress_kwargs(args, bar), **_engine_kwargs(args))
        return _summarize(hist, args)
    values = flatten_groups(_load_yaml(args.config)) if args.config else {}
    overrides = {name: getattr(args, name) for name in PARAMS if hasattr(args, name)}
    if args.algorithm:
        for key in ("aggregator", "wrm"):
            values.pop(key, None)
        values["algorithm"] = args.algorithm
    values.update(overrides)
    cfg = Config.from_dict(values)
    data = "Spambase" if cfg.label_column is None else cfg.data_path
    _say(f"ray-robust train: {cfg.algorithm or cfg.aggregator} on {data}, m = {cfg.n_workers}, "
         f"{cfg.n_byzantine} byzantine ({cfg.attack}), T = {cfg.rounds}, engine = {args.engine}")
    _say(f"theory: {_theory_line(cfg)}")

    with _round_progress(args, cfg.rounds) as bar:
        hist = train(cfg, engine=args.engine, checkpoint_dir=args.checkpoint_dir,
                     checkpoint_every=args.checkpoint_every, **_progress_kwargs(args, bar),
                     **_engine_kwargs(args))
    return _summarize(hist, args)


def _round_progress(args: argparse.Namespace, rounds: int, done: int = 0) -> Progress:
    """The rounds' progress: a bar on a terminal, else a line every ``--progress`` rounds."""
    return Progress(rounds, "training", "round", quiet=args.quiet, stream=_terminal(args),
                    line=_progress, every=args.progress, initial=done)


def _terminal(args: argparse.Namespace):
    """The user's terminal (standard error before :func:`main` filtered Ray's lines out)."""
    return getattr(args, "terminal", None)


def _progress_kwargs(args: argparse.Namespace, bar: Progress) -> dict:
    """``progress``/``progress_every`` for :func:`train`: every round for a bar, every
    ``--progress`` rounds for lines, none with ``--quiet``."""
    if args.quiet:
        return dict(progress=None, progress_every=args.progress)

    def report(row: dict) -> None:
        bar.step(row["round"], f"loss {row['train_loss']:.4f}, error {row['test_error']:.4f}",
                 row)

    return dict(progress=report, progress_every=1 if bar.per_step else args.progress)


def _progress(row: dict) -> None:
    _say(f"  round {row['round']:>5}  loss {row['train_loss']:.4f}  "
         f"error {row['test_error']:.4f}  shifted {row['test_error_shifted']:.4f}  "
         f"screened {row['n_screened']}" + (
             f"  ε {row['epsilon']:g}  cert {row['wrm_certificate_max']:.2g}  "
             f"ascent steps {row['wrm_steps_total']}" if "wrm_steps_total" in row else ""))


def _engine_kwargs(args: argparse.Namespace) -> dict:
    if args.engine != "ray":
        return {}
    return dict(address=args.address, actors=args.actors, round_timeout=args.round_timeout,
                include_dashboard=args.dashboard)


def _summarize(hist, args: argparse.Namespace) -> int:
    cfg = hist.config
    fin = hist.final
    _say(f"done in {_elapsed():.1f} s (training {hist.seconds:.1f} s): test error "
         f"{fin['test_error']:.4f}, under the {cfg.shift_norm} shift ε = {cfg.shift_eps:g}: "
         f"{fin['test_error_shifted']:.4f}")
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        hist.metrics.to_csv(out / "metrics.csv", index=False)
        import numpy as np

        np.save(out / "theta.npy", hist.theta)
        _say(f"wrote {out / 'metrics.csv'} and {out / 'theta.npy'}")
        hist.model.save(out)
        _say(f"wrote the model to {out} (model.json, model.npz): "
             f"ray-robust predict --model {out} --data NEW.csv")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    """Predict the rows of a data file (CSV, .npy, .npz, Parquet) with a saved model: the
    label (and, for a classifier, each class's probability) per row, as CSV to ``--out`` or to
    stdout."""
    import pandas as pd

    from .api import check_output_dir
    from .data import read_table
    from .fitted import load_model

    if args.out:
        if Path(args.out).is_dir():
            raise ValueError(f"--out {args.out} is a folder; give the path of the CSV file to "
                             "write.")
        check_output_dir(Path(args.out).parent, "--out")
    model = load_model(args.model)
    # named features: a header row; positional (e.g. Spambase): none; .npy/.npz/Parquet too
    table = read_table(args.data, header=None if model.feature_names is None else True)
    out = pd.DataFrame({"prediction": model.predict(table)})
    if model.is_classifier:
        proba = model.predict_proba(table)
        for k, label in enumerate(model.classes):
            out[f"proba_{label}"] = proba[:, k]
    if args.out:
        out.to_csv(args.out, index=False)
        _say(f"wrote {len(out)} predictions to {args.out}")
    else:
        try:
            out.to_csv(sys.stdout, index=False)
            sys.stdout.flush()
        except BrokenPipeError:  # `… | head`: the reader stopped early, not an error
            import os

            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


def cmd_reproduce(args: argparse.Namespace) -> int:
    from .reproduce import (
        format_table1,
        outside_guarantee_summary,
        run_table1,
        summarize_table1,
    )

    seeds = range(args.seed0, args.seed0 + args.seeds)
    if args.seeds < 1:
        raise ValueError(f"--seeds must be at least 1. Got {args.seeds}.")
    overrides = {"rounds": args.rounds} if args.rounds is not None else {}
    if args.data_path:
        overrides["data_path"] = args.data_path
    _say(f"Table I: 5 environments × 4 algorithms × {args.seeds} seed(s) on Spambase, "
         f"engine = {args.engine}")
    kwargs = _engine_kwargs(args)
    with Progress(20 * args.seeds, "Table I", "run", quiet=args.quiet,
                  stream=_terminal(args)) as bar:
        runs = run_table1(seeds, engine=args.engine, log=bar.write, engine_options=kwargs,
                          on_run=lambda k, row: bar.step(k), **overrides)
    summary = summarize_table1(runs)
    _say("")
    _say(format_table1(summary))
    note = outside_guarantee_summary(runs)
    if note:
        _say(note)
    _say(f"(done in {_elapsed():.1f} s; training {runs['seconds'].sum():.1f} s)")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    runs.to_csv(out / "table1_runs.csv", index=False)
    summary.to_csv(out / "table1.csv", index=False)
    _say(f"wrote {out / 'table1.csv'} (summary) and {out / 'table1_runs.csv'} (every run)")
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    """Print the parameter table as a YAML template (default), a JSON schema, or markdown."""
    from .config import config_template, json_schema, reference_markdown

    if args.schema:
        import json

        print(json.dumps(json_schema(), indent=2, ensure_ascii=False))
    elif args.docs:
        print(reference_markdown(), end="")
    else:
        print(config_template(), end="")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="ray-robust",
        description="Distributed learning robust to distributional shifts and byzantine "
                    "workers (Zhou, Xu, Wang, Tian; TNNLS 2025).",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p_train = sub.add_parser("train", help="run one configuration and print a summary")
    p_train.add_argument("--config", help="YAML file of config parameters (flags override it)")
    p_train.add_argument("--progress", type=int, default=50, help="print every N rounds")
    p_train.add_argument("--out", help="folder for metrics.csv, theta.npy and the model "
                         "(model.json, model.npz; see `predict`)")
    p_train.add_argument("--checkpoint-dir", default=None,
                         help="write a checkpoint (θ, round, RNG states, history) here")
    p_train.add_argument("--checkpoint-every", type=int, default=50,
                         help="rounds between checkpoints (default 50)")
    p_train.add_argument("--resume", metavar="DIR", default=None,
                         help="continue the run checkpointed in DIR (its config is used)")
    _add_engine_flags(p_train)
    _add_terminal_flags(p_train)
    _add_config_flags(p_train)
    p_train.set_defaults(func=cmd_train)

    p_pred = sub.add_parser("predict", help="predict new rows with a model saved by "
                                            "`train --out`")
    p_pred.add_argument("--model", required=True, metavar="DIR",
                        help="the folder written by `ray-robust train --out DIR`")
    p_pred.add_argument("--data", required=True, metavar="CSV",
                        help="rows to predict: the training feature columns by name (other "
                             "columns are ignored); Spambase models: 57 columns, no header")
    p_pred.add_argument("--out", default=None, metavar="CSV",
                        help="write the predictions here (default: stdout)")
    p_pred.set_defaults(func=cmd_predict)

    p_rep = sub.add_parser("reproduce", help="reproduce a result of the paper")
    p_rep.add_argument("what", choices=["table1"])
    p_rep.add_argument("--seeds", type=int, default=5, help="number of seeds (default 5)")
    p_rep.add_argument("--seed0", type=int, default=0, help="first seed (default 0)")
    p_rep.add_argument("--rounds", type=int, default=None, help="override T (default 300)")
    p_rep.add_argument("--out", default="results/table1", help="output folder")
    p_rep.add_argument("--data-path", default=None, help="Spambase file or folder")
    _add_engine_flags(p_rep)
    _add_terminal_flags(p_rep)
    p_rep.set_defaults(func=cmd_reproduce)
    p_cfg = sub.add_parser("config", help="the run-config parameters: a YAML template, the "
                                          "JSON schema, or the reference")
    shown = p_cfg.add_mutually_exclusive_group()
    shown.add_argument("--schema", action="store_true",
                       help="print the JSON schema of a run-config YAML file")
    shown.add_argument("--docs", action="store_true",
                       help="print the parameter reference (docs/config.md)")
    p_cfg.set_defaults(func=cmd_config)
    from .cli_tune import add_tune_parser

    add_tune_parser(sub)  # `ray-robust tune STUDY.yaml` (Ray Tune studies)
    return parser


def _run_failures() -> tuple[type[Exception], ...]:
    """Errors that end a run with a clear message (no traceback, exit status 1)."""
    from .core.aggregators import AggregationError

    ray_engine = sys.modules.get("ray_robust.engines.ray_engine")  # loaded only if Ray ran
    return (AggregationError, *((ray_engine.ServerDiedError,) if ray_engine else ()))


def _format_warning(message, category, filename, lineno, line=None) -> str:
    """A GuaranteeWarning as one line for the terminal (the library's source line means nothing
    to a CLI user); other warnings as Python formats them."""
    from .config import GuaranteeWarning

    if issubclass(category, GuaranteeWarning):
        return f"ray-robust: warning: {message}\n"
    return _PYTHON_FORMAT(message, category, filename, lineno, line)


_PYTHON_FORMAT = warnings.formatwarning


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    warnings.formatwarning = _format_warning
    # Ray's own log lines stay off the terminal of a long command unless --verbose
    filtered = args.command in ("train", "reproduce", "tune") and not getattr(args, "verbose", 0)
    try:
        with ray_noise_filtered(filtered) as terminal:
            args.terminal = terminal
            return _main(args)
    finally:
        warnings.formatwarning = _PYTHON_FORMAT


def _main(args: argparse.Namespace) -> int:
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError) as exc:  # incl. DivergenceError (eta too large)
        print(f"ray-robust: error: {exc}", file=sys.stderr)
        return 2
    except RuntimeError as exc:  # the run failed, not its input: too many faults, dead server
        if not isinstance(exc, _run_failures()):
            raise
        print(f"ray-robust: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("ray-robust: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
