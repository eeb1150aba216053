"""``python -m benchmarks [--quick] [--only IDS] [--out CSV] [--profile DIR]``: issue 8.

Runs each selected benchmark (warm-up, interleaved repeats, medians), prints the ratios next
to their targets with the machine's load average, and writes them as CSV. Benchmarks never
gate CI: ``--quick`` runs tiny sizes so a test can check that they still run. ``--profile DIR``
also samples each benchmark's driver process with pyinstrument (the ``profile`` extra) and
writes ``DIR/<id>.txt``; Ray actors run in other processes: sample them with
``py-spy record --pid <actor pid>``.

| id | workload | ratio | target |
| P1 | Spambase, m = 20, T_z = 10, Alg. 2 | Ray auto ÷ (no-op round trip + in-process) | ≤ 1.3 |
| P2 | synthetic 2,000,000 × 100, m = 100 | in-process ÷ Ray auto, per round | ≥ 1.6 |
| P3 | Table I, 5 seeds, `ray-robust tune` | wall ÷ (Σ in-process trial time ÷ cores) | ≤ 1.5 |
| P4 | m = 1000, synthetic 200,000 × 50 | (peak Ray PSS − fixed overhead) ÷ data | ≤ 2 |
| P5 | in-process, 2,000,000 × 100 | Alg. 2 round (T_z = 10) ÷ ERM round | ≤ 1.2 |
| P6 | NBS, m = 10,000 × d = 10,000 | NBS ÷ one pass computing the norms | ≤ 2 |
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import time
from pathlib import Path

from . import suite
from .common import Result

IDS = ("P1", "P2", "P3", "P4", "P5", "P6")
#: the order :func:`run` runs them in, and their rows' order in the CSV
RUN_ORDER = ("P6", "P4", "P1", "P2", "P5", "P3")
RAY_IDS = {"P1", "P2", "P4"}


def _ids(text: str) -> list[str]:
    ids = [s.strip().upper() for s in text.split(",") if s.strip()]
    bad = [i for i in ids if i not in IDS]
    if bad or not ids:
        raise argparse.ArgumentTypeError(
            f"--only takes ids among {', '.join(IDS)} separated by commas; got {text!r}")
    return ids


def _profiled(fn, name: str, profile_dir: Path | None, log):
    """``fn()``, sampled by pyinstrument into ``profile_dir/<name>.txt`` when asked."""
    if profile_dir is None:
        return fn()
    from pyinstrument import Profiler

    profiler = Profiler(interval=0.001)
    with profiler:
        out = fn()
    path = profile_dir / f"{name.replace(', ', '_')}.txt"
    path.write_text(profiler.output_text(unicode=True, color=False))
    log(f"[{name}] profile of the driver: {path}")
    return out


def run(ids: list[str], quick: bool, log=print, profile_dir: Path | None = None,
        on_done=None) -> list[Result]:
    """Run the benchmarks ``ids`` in an order that shares one Ray instance (P3 starts its own,
    after that one is shut down) and returns their results; ``on_done(n)`` after each step
    (``n`` ids done)."""
    results: list[Result] = []

    def step(name: str, fn) -> None:
        t0 = time.perf_counter()
        log(f"[{name}] running{' (quick)' if quick else ''} …")
        out = _profiled(fn, name, profile_dir, log)
        results.extend(out)
        if on_done:
            on_done(len({r.id for r in results}))
        log(f"[{name}] done in {time.perf_counter() - t0:.1f} s: "
            + "; ".join(f"{r.metric} = {r.ratio:.2f}" for r in out))

    if "P6" in ids:
        step("P6", lambda: suite.p6(quick))
    if RAY_IDS & set(ids):
        import ray

        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        ray.init(address="local", include_dashboard=False, log_to_driver=False)
        try:
            if "P4" in ids:  # first: its idle baseline is Ray before any other actor ran
                step("P4", lambda: suite.p4(quick))
            if "P1" in ids:
                step("P1", lambda: suite.p1(quick))
            if "P2" in ids:
                step("P2" + (", P5" if "P5" in ids else ""),
                     lambda: [r for r in suite.p2_p5(quick) if r.id in ids])
        finally:
            ray.shutdown()
    if "P5" in ids and "P2" not in ids:
        step("P5", lambda: [r for r in suite.p2_p5(quick, ray_too=False) if r.id in ids])
    if "P3" in ids:
        step("P3", lambda: suite.p3(quick))
    return results


def format_table(results: list[Result]) -> str:
    lines = [f"{'id':<4} {'ratio':>8} {'target':>7} {'met':>4}  {'numerator':>11} "
             f"{'denominator':>12}  metric — workload"]
    for r in results:
        scale, unit = (1e3, "ms") if r.unit == "s" else (1 / 2**20, "MiB")
        lines.append(f"{r.id:<4} {r.ratio:>8.2f} {r.target:>7} {r.met:>4}  "
                     f"{r.numerator * scale:>8.2f} {unit:<2} {r.denominator * scale:>9.2f} "
                     f"{unit:<2}  {r.metric} — {r.note}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes (CI: they still run)")
    parser.add_argument("--only", type=_ids, default=list(IDS),
                        help="comma-separated ids, e.g. P1,P2 (default: all)")
    parser.add_argument("--out", type=Path, default=None,
                        help="CSV file (default: benchmarks/results[_quick].csv)")
    parser.add_argument("--profile", type=Path, default=None, metavar="DIR",
                        help="sample each benchmark's driver with pyinstrument into DIR/<id>.txt")
    parser.add_argument("--quiet", action="store_true",
                        help="no progress bar and no progress lines (the table only)")
    args = parser.parse_args(argv)
    if args.profile is not None:
        try:
            import pyinstrument  # noqa: F401
        except ImportError:
            parser.error("--profile needs pyinstrument: pip install -e '.[profile]'")
        args.profile.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("RAY_ROBUST_DATA_DIR",
                          str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    from ray_robust.terminal import Progress

    with Progress(len(args.only), "benchmarks", "benchmark", quiet=args.quiet,
                  lines_to=sys.stderr) as bar:  # a bar on a terminal, else the lines
        results = run(args.only, args.quick, log=bar.write, profile_dir=args.profile,
                      on_done=bar.step)
    load_after = os.getloadavg()
    import ray

    context = (f"{'quick' if args.quick else 'full'} run, {time.perf_counter() - t0:.0f} s; "
               f"{os.cpu_count()} CPUs; Ray {ray.__version__}; load average (1 min) "
               f"{load_before[0]:.1f} before, {load_after[0]:.1f} after")
    print(format_table(results))
    print(context)
    out = args.out or Path(__file__).with_name(f"results{'_quick' if args.quick else ''}.csv")
    out.parent.mkdir(parents=True, exist_ok=True)
    rows = [{**r.row(), "quick": args.quick, "load_before": round(load_before[0], 2),
             "load_after": round(load_after[0], 2)} for r in results]
    kept = write_results(out, rows, args.only)
    print(f"wrote {out}" + (f" (kept the rows of {', '.join(kept)})" if kept else ""))
    return 0


def write_results(out: Path, rows: list[dict], ran: list[str]) -> list[str]:
    """Write ``rows`` (the benchmarks ``ran``) to the CSV ``out``, keeping its rows of every other
    id (``--only P6`` replaces P6's rows, never P1's), in the ids' order. Returns the ids kept."""
    old: list[dict] = []
    if out.is_file():
        with open(out, newline="") as fh:
            old = [r for r in csv.DictReader(fh) if r.get("id") not in ran]
    fields = list(dict.fromkeys([*rows[0], *(k for r in old for k in r)]))
    order = {i: k for k, i in enumerate(RUN_ORDER)}
    merged = sorted([*old, *rows], key=lambda r: order.get(r["id"], len(IDS)))  # stable
    tmp = out.with_name(out.name + ".tmp")
    with open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields, restval="")
        writer.writeheader()
        writer.writerows(merged)
    os.replace(tmp, out)
    return sorted({r["id"] for r in old}, key=lambda i: order.get(i, len(IDS)))


if __name__ == "__main__":
    sys.exit(main())
