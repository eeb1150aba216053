"""What long runs show on the user's terminal: a progress bar with ETA, Ray's noise kept out.

A bar (tqdm) is drawn only on an interactive terminal and without ``--quiet``; elsewhere (a
pipe, a log file, CI) the callers keep their periodic lines. :func:`ray_noise_filtered` keeps
Ray's own log lines (the C++ core worker's ``[… E …] core_worker.cc:…`` lines, the Python
``ray`` logger's ``INFO``/``WARNING`` lines such as the token-authentication notice) out of
the terminal; ``--verbose`` shows them.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import sys
import threading
import time
from collections.abc import Iterator
from typing import IO, Any

#: Ray's C++ log line below FATAL: ``[2026-01-02 10:11:12,345 E 123 123] core_worker.cc:2465: …``
_RAY_CPP_LINE = re.compile(rb"^\[\d{4}-\d\d-\d\d [\d:,.]+ [DIWE] \d+ \d+\] \S+:\d+: ")
#: a line of Ray's Python loggers below ERROR: ``2026-01-02 10:11:12,345\tWARNING file.py:85 --``
_RAY_PY_LINE = re.compile(rb"^\d{4}-\d\d-\d\d [\d:,.]+\s+(DEBUG|INFO|WARNING) \S+:\d+ -- ")
#: the token-authentication notice unformatted (a Tune study clears the ``ray`` logger's
#: handlers, so Python's last-resort handler prints the bare message)
_RAY_BARE_LINE = re.compile(rb"^Token authentication is (enabled|disabled) for this Ray cluster")


_IMPORTED = time.perf_counter()


def wall_seconds() -> float:
    """Wall-clock seconds since this process started (Linux: from ``/proc/self/stat``, so the
    interpreter's start and imports count), else since this module was imported."""
    try:
        with open("/proc/self/stat") as fh:
            ticks = int(fh.read().rsplit(")", 1)[1].split()[19])  # field 22: starttime
        return time.clock_gettime(time.CLOCK_BOOTTIME) - ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, AttributeError):
        return time.perf_counter() - _IMPORTED


def wants_bar(quiet: bool, stream: IO[Any] | None = None) -> bool:
    """True when a progress bar should be drawn: not ``quiet`` and ``stream`` (stderr) is a
    terminal."""
    stream = sys.stderr if stream is None else stream
    isatty = getattr(stream, "isatty", None)
    return not quiet and bool(isatty and isatty())


def progress_bar(total: int, desc: str, unit: str, *, stream: IO[Any] | None = None,
                 initial: int = 0):
    """A tqdm bar with ETA on ``stream`` (stderr), for ``total`` steps."""
    from tqdm import tqdm

    # the terminal's width; a terminal that reports none (0 columns) gets 100, not an empty bar
    width = shutil.get_terminal_size((100, 24)).columns
    return tqdm(total=total, desc=desc, unit=unit, initial=initial,
                file=sys.stderr if stream is None else stream, ncols=width, leave=False)


class Progress:
    """A run's progress: a bar on a terminal, else a line every ``every`` steps (none when
    ``quiet``). ``step(n, postfix)`` reports that ``n`` steps of ``total`` are done;
    ``write(text)`` prints a line without breaking the bar (to ``lines_to``, default stdout,
    when there is no bar). ``initial``: steps already done (a resumed run)."""

    def __init__(self, total: int, desc: str, unit: str, *, quiet: bool = False,
                 stream: IO[Any] | None = None, line=None, every: int = 1,
                 lines_to: IO[str] | None = None, initial: int = 0):
        self.quiet, self.every, self.line, self.total = quiet, every, line, total
        self.lines_to = lines_to
        self.bar = progress_bar(total, desc, unit, stream=stream, initial=initial) if wants_bar(
            quiet, stream) else None

    @property
    def per_step(self) -> bool:
        """True when the bar wants every step reported (not only every ``every``)."""
        return self.bar is not None

    def step(self, done: int, postfix: str = "", item: Any = None) -> None:
        if self.bar is not None:
            self.bar.update(done - self.bar.n)
            if postfix:
                self.bar.set_postfix_str(postfix, refresh=False)
        elif not self.quiet and self.line is not None and (
                done % self.every == 0 or done == self.total):
            self.line(item)

    def write(self, text: str) -> None:
        if self.bar is not None:
            self.bar.write(text, file=self.bar.fp)
        elif not self.quiet:
            print(text, file=self.lines_to or sys.stdout, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@contextlib.contextmanager
def ray_noise_filtered(enabled: bool = True) -> Iterator[IO[str]]:
    """Within the block, drop Ray's own log lines (below FATAL for the C++ core worker, below
    ERROR for the Python loggers) from this process's standard error, at the file-descriptor
    level (the C++ lines never pass through ``sys.stderr``). Every other line passes through
    unchanged. Yields a text stream on the real terminal (for a progress bar: the filter
    passes whole lines only). ``enabled=False`` (``--verbose``): nothing is filtered."""
    if not enabled:
        yield sys.stderr
        return
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no standard error (closed): nothing to keep clean
        yield sys.stderr
        return
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)

    def forward() -> None:
        with os.fdopen(read_end, "rb", buffering=0) as pipe:
            pending = b""
            while chunk := pipe.read(65536):
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    if not (_RAY_CPP_LINE.match(line) or _RAY_PY_LINE.match(line)
                            or _RAY_BARE_LINE.match(line)):
                        os.write(saved, line + b"\n")
            if pending:
                os.write(saved, pending)

    thread = threading.Thread(target=forward, name="ray-noise-filter", daemon=True)
    thread.start()
    terminal = os.fdopen(os.dup(saved), "w", buffering=1, encoding="utf-8", errors="replace")
    try:
        yield terminal
    finally:
        sys.stderr.flush()
        terminal.flush()
        os.dup2(saved, 2)  # the pipe's last write end closes: the thread reads its end
        thread.join(timeout=5)
        terminal.close()
        os.close(saved)
