"""What a person sees of a long command: one progress display per stage and one-line results.

`progress(stage, total)` is the display every stage uses (step/total, rate, elapsed, ETA and the
figures that matter). On a terminal it redraws one line; elsewhere (a CI log, a pipe) it writes a
line per tenth of the stage (per minute without a total) and one at the end, so a log stays short.

`quiet_console(log_path)` is how a command runs without `--verbose`: everything other programs
write (Python logging and warnings, C++ logs of Ray's core, Ray workers' output forwarded to the
driver, DeepSpeed, transformers) goes to the log file, and the console keeps what the command
itself prints. Training runs on Ray Train workers report their steps as `progress_text` lines;
the console turns those lines, found among the forwarded worker output, into the same display.

Warnings known to be harmless are silenced where they start (`quiet_worker`, run in every Ray
worker of a job through `worker_process_setup_hook`): Ray Train's placement-group cleaner asks
the State API, which needs Ray's dashboard, about once a second; the embedded Ray starts without
the dashboard (it would cost about 1.1 GB of memory and 5 s per start, measured on 2 cores: the
cleaner only matters when a Train controller dies on a long-lived cluster, where the head runs
the dashboard anyway), so its "Failed to query" warning is noise there.
"""

from __future__ import annotations

import io
import logging
import os
import re
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

_console: Console | None = None  # while a quiet console is active


def stream() -> TextIO:
    """Where progress displays go: the terminal's standard error, kept aside by an active quiet
    console (standard output stays for results: `--json | jq`)."""
    return _console.err if _console is not None else sys.stderr


def active() -> Console | None:
    return _console


def _interval(seconds: float) -> str:
    seconds = int(max(0, seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


class Progress:
    """One stage's progress display (the subset of tqdm's interface cls-ray uses: `update`,
    `set_postfix`, `close`, iteration)."""

    def __init__(
        self,
        stage: str,
        total: int | None,
        unit: str = "it",
        disable: bool = False,
        out: TextIO | None = None,
        every_s: float | None = None,
        iterable=None,
    ):
        self.stage, self.total, self.unit, self.disable = stage, total, unit, disable
        self.out = out or stream()
        try:
            self.tty = self.out.isatty()
        except (AttributeError, ValueError):
            self.tty = False
        self.every_s = every_s if every_s is not None else (0.5 if self.tty else 60.0)
        self.n = 0
        self.figures: dict[str, str] = {}
        self.t0 = time.time()
        self.shown_at = 0.0
        self.shown: str | None = None
        self.shown_n = -1
        self.closed = False
        self.iterable = iterable
        self.lock = threading.RLock()  # updates may come from several threads

    def __iter__(self):
        for item in self.iterable:
            yield item
            self.update(1)
        self.close()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def line(self) -> str:
        elapsed = time.time() - self.t0
        rate = self.n / elapsed if elapsed > 0 else 0.0
        parts = [f"{self.stage}:"]
        if self.total:
            pct = 100 * self.n / self.total
            parts.append(f"{self.n}/{self.total} {self.unit} ({pct:3.0f}%)")
        else:
            parts.append(f"{self.n} {self.unit}")
        parts.append(f"{rate:.1f} {self.unit}/s" if rate >= 1 else f"{rate:.2f} {self.unit}/s")
        parts.append(_interval(elapsed))
        # no ETA from the first step or two (start-up and compilation make their rate a guess)
        if self.total and max(2, self.total / 50) <= self.n < self.total and rate > 0:
            parts.append(f"ETA {_interval((self.total - self.n) / rate)}")
        parts += [f"{k} {v}" for k, v in self.figures.items()]
        return "  ".join(parts)

    def _show(self, final: bool = False) -> None:
        if self.disable or (not self.tty and self.n == 0 and not final):
            return
        now = time.time()
        if not final and now - self.shown_at < self.every_s:
            # off a terminal, a line per tenth of the stage (or per minute without a total)
            if self.tty or not (self.total and self.n >= self.shown_n + self.total / 10):
                return
        text = self.line()
        if final and not self.tty and self.shown is not None and self.shown_n == self.n:
            return  # a log already has this line
        self.shown_at, self.shown, self.shown_n = now, text, self.n
        try:
            if self.tty:
                self.out.write("\r" + text + "\x1b[K" + ("\n" if final else ""))
            else:
                self.out.write(text + "\n")
            self.out.flush()
        except (OSError, ValueError):  # a closed console must not fail the work it shows
            self.disable = True

    def update(self, n: int = 1) -> None:
        with self.lock:
            self.n += n
            self._show()

    def set(self, n: int, elapsed_s: float | None = None, **figures) -> None:
        """Step `n` reached (`elapsed_s` after the stage began, where the clock is elsewhere)."""
        with self.lock:
            self.n = n
            if elapsed_s is not None:
                self.t0 = time.time() - elapsed_s
            self.set_postfix(**figures)

    def set_postfix(self, **figures) -> None:
        with self.lock:
            self.figures.update({k: str(v) for k, v in figures.items()})
            self._show()

    def close(self) -> None:
        with self.lock:
            if not self.closed:
                self.closed = True
                self._show(final=True)


def progress(
    stage: str, total: int | None = None, unit: str = "it", disable: bool = False, iterable=None
) -> Progress:
    """The progress display of one stage; over `iterable` when given (its length the total)."""
    if iterable is not None and total is None:
        total = len(iterable)
    return Progress(stage, total, unit, disable=disable, iterable=iterable)


# A training step as a worker reports it ("sleep sft: step 20/150  loss 0.6582  12 s"): readable
# in a log, and parsed by the driver's console into the stage's progress display.
_STEP = re.compile(
    r"(?P<stage>[A-Za-z][\w .-]*?): step (?P<step>\d+)/(?P<total>\d+)\s+"
    r"loss (?P<loss>[-+.\deE]+|nan)\s+(?P<elapsed>\d+) s"
)


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def progress_text(stage: str, step: int, total: int, loss: float, elapsed_s: float) -> str:
    return f"{stage}: step {step}/{total}  loss {loss:.4f}  {elapsed_s:.0f} s"


def parse_progress(line: str) -> tuple[str, int, int, str, int] | None:
    """(stage, step, total, loss, elapsed seconds) of a `progress_text` line (anywhere in
    `line`), else None."""
    m = _STEP.search(_ANSI.sub("", line))
    if m is None:
        return None
    return m["stage"].strip(), int(m["step"]), int(m["total"]), m["loss"], int(m["elapsed"])


# Known and harmless: silenced in every Ray worker of a cls-ray job (see the module's note).
QUIET_LOGGERS = {
    "ray.train.v2._internal.execution.controller.placement_group_cleaner": logging.ERROR,
    # one "Reporting training result ..." line per rank per report
    "ray.train.v2._internal.execution.context": logging.WARNING,
}
QUIET_WARNINGS = (
    # torch's own DeepSpeed-era call sites, not ours
    (FutureWarning, r".*all_gather_into_tensor.*"),
    (FutureWarning, r".*is_gradient_checkpointing.*"),
)


def quiet_worker() -> None:
    """Runs at the start of every Ray worker process of a cls-ray job (and in the driver)."""
    for name, level in QUIET_LOGGERS.items():
        logging.getLogger(name).setLevel(level)
    for category, message in QUIET_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category)


@dataclass
class Console:
    """An active quiet console: `out` and `err` the terminal's streams, `log` the file that
    takes the rest; `closers` run when it closes."""

    out: TextIO
    err: TextIO
    log: TextIO
    log_path: Path
    stages: dict[str, Progress] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    closers: list[Callable[[], None]] = field(default_factory=list)
    closed: bool = False

    def worker_lines(self, data: dict) -> None:
        """Ray's forwarded output of a worker (a dict with `lines`, `pid`, `actor_name` or
        `task_name`, `is_err`): into the log, its training steps onto the console."""
        who = data.get("actor_name") or data.get("task_name") or ""
        prefix = f"({who} pid={data.get('pid')}) " if who else f"({data.get('pid')}) "
        with self.lock:
            if self.closed:
                return
            try:  # an error here would end Ray's printer thread, and all forwarding with it
                for line in data.get("lines", []):
                    self.log.write(prefix + line + "\n")
                    step = parse_progress(line)
                    if step is not None:
                        self.show_step(*step)
                self.log.flush()
            except (OSError, ValueError):
                pass

    def show_step(self, stage: str, step: int, total: int, loss: str, elapsed_s: int) -> None:
        bar = self.stages.get(stage)
        if bar is None or bar.closed or bar.total != total:
            bar = self.stages[stage] = Progress(stage, total, unit="step", out=self.err)
        bar.set(step, elapsed_s=elapsed_s, loss=loss)
        if step >= total:
            bar.close()


class _Routed(io.TextIOBase):
    """Standard output while a quiet console is active: what cls-ray's own code prints goes to
    the console, what any other code writes (a library's logging handler bound to standard
    output, Ray's printer of its errors) to the log."""

    def __init__(self, out: TextIO, log: TextIO):
        self.out, self.log = out, log
        self.after: TextIO | None = None  # once the console closed: where everything goes

    def write(self, s: str) -> int:
        if self.after is not None:
            return self.after.write(s)
        try:
            frame = sys._getframe(1)
        except ValueError:  # no Python caller
            return self.log.write(s)
        while frame is not None and frame.f_globals.get("__name__", "").startswith(WRAPPERS):
            frame = frame.f_back
        caller = frame.f_globals.get("__name__", "") if frame is not None else ""
        ours = caller.partition(".")[0] in OURS
        return (self.out if ours else self.log).write(s)

    def flush(self) -> None:
        for s in (self.out, self.log) if self.after is None else (self.after,):
            s.flush()

    def isatty(self) -> bool:
        return (self.out if self.after is None else self.after).isatty()

    def fileno(self) -> int:  # writing to the descriptor is writing to the log
        return (self.log if self.after is None else self.after).fileno()

    @property
    def encoding(self) -> str:
        return "utf-8"

    def writable(self) -> bool:
        return True


OURS = {"cls_ray", "actors", "__main__"}
# Code that stands between a caller and this stream: a wrapper around it (colorama's), a
# replacement of `print` (Ray's tqdm_ray, once Ray Data showed a bar).
WRAPPERS = ("colorama", "ray.thirdparty_files.colorama", "ray.experimental.tqdm_ray")


def _terminal(stream_: TextIO, undo: ExitStack) -> TextIO:
    """A stream on a copy of `stream_`'s file descriptor, which stays on the terminal after the
    descriptor is redirected (closed by `undo`); a stream without a descriptor (a test's
    capture) as it is."""
    try:
        fd = stream_.fileno()
    except (AttributeError, OSError, ValueError):
        return stream_
    copy = os.fdopen(os.dup(fd), "w", buffering=1, encoding="utf-8", errors="replace")
    undo.callback(_quietly_close, copy)
    return copy


def _quietly_close(s: TextIO) -> None:
    try:
        s.close()
    except OSError:  # a terminal or pipe gone (`cls-ray demo | head`)
        pass


@contextmanager
def quiet_console(log_path: Path) -> Iterator[Console]:
    """Everything written to this process's standard output and error, at the file-descriptor
    level (C++ and child processes too), goes to `log_path`; `print` goes to the console as
    before, the progress displays and `console.err` to the terminal's standard error. Each
    piece is undone on exit, in reverse, even when one of the undoing steps fails."""
    global _console
    log_path.parent.mkdir(parents=True, exist_ok=True)
    for s in (sys.stdout, sys.stderr):
        s.flush()
    saved_out, saved_err = sys.stdout, sys.stderr
    with ExitStack() as undo:
        log = undo.enter_context(
            open(log_path, "a", buffering=1, encoding="utf-8", errors="replace")  # noqa: SIM115
        )
        out, err = (_terminal(s, undo) for s in (saved_out, saved_err))
        for target in (1, 2):
            try:
                kept = os.dup(target)
            except OSError:
                continue
            undo.callback(os.close, kept)
            os.dup2(log.fileno(), target)
            undo.callback(os.dup2, kept, target)
        routed = _Routed(out, log)
        sys.stdout, sys.stderr = routed, log
        undo.callback(_restore_streams, routed, saved_out, saved_err, log)
        handlers = _log_handlers_to(log, (saved_out, saved_err, sys.__stdout__, sys.__stderr__))
        undo.callback(lambda: [h.setStream(stream_) for h, stream_ in handlers])
        _console = c = Console(out, err, log, log_path)
        undo.callback(_close, c)
        yield c


def _close(c: Console) -> None:
    global _console
    try:
        for close in reversed(c.closers):
            close()
    finally:
        with c.lock:
            c.closed = True
        _console = None
        for bar in c.stages.values():
            bar.close()


def _restore_streams(routed: _Routed, saved_out: TextIO, saved_err: TextIO, log: TextIO) -> None:
    for s in (routed, log):
        try:
            s.flush()
        except (OSError, ValueError):
            pass
    routed.after = saved_out  # for whoever kept it (colorama's exit handler)
    sys.stdout, sys.stderr = saved_out, saved_err
    # handlers made while the console was active (a library imported by the command) bound to
    # its streams: they follow the process's streams from here on
    _log_handlers_to(saved_err, (log, routed))


def _log_handlers_to(log: TextIO, streams) -> list[tuple[logging.StreamHandler, TextIO]]:
    """Logging handlers that write to one of `streams` (the console's) are pointed at the log;
    returns them with their streams, to restore."""
    moved = []
    loggers = [logging.getLogger()] + [
        lg for lg in logging.Logger.manager.loggerDict.values() if isinstance(lg, logging.Logger)
    ]
    for lg in loggers:
        for h in lg.handlers:
            if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler):
                if any(h.stream is s for s in streams):
                    moved.append((h, h.setStream(log)))
    return moved
