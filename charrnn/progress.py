"""What a training run tells its user as it goes: progress lines on stderr (Reporter)
and one JSON object per evaluation in a --log file (JsonlLog). Both are callbacks of
train.Trainer.run's events (kinds start, step, eval, rollback, done); the command line
and the Python API use them alike.
"""

from __future__ import annotations

import json
import sys
import time

# The keys of an evaluation a --log line keeps (train.Trainer.evaluate_and_record).
LOG_KEYS = ("step", "seconds", "train_bpc", "val_bpc", "lr")


def to_stderr(line: str, end: str = "\n") -> None:
    """Write a line to stderr, if there is one (`2>&-` leaves none)."""
    stream = sys.stderr
    if stream is None:
        return
    try:
        stream.write(line + end)
        stream.flush()
    except (OSError, ValueError):
        pass  # diagnostics are never worth a failed run


class JsonlLog:
    """Appends each evaluation to path as one JSON object per line. A log that cannot
    be written is not worth the training run: warn once (through `warn`) and go on."""

    def __init__(self, path: str, warn=to_stderr):
        self.path, self.warn, self.file = path, warn, None
        try:
            self.file = open(path, "a", encoding="utf-8")
        except OSError as error:
            self.lose(error)

    def __call__(self, event: dict) -> None:
        if event["kind"] != "eval" or self.file is None:
            return
        try:
            self.file.write(json.dumps({key: event[key] for key in LOG_KEYS}) + "\n")
            self.file.flush()
        except OSError as error:
            self.lose(error)

    def close(self) -> None:
        if self.file:
            try:
                self.file.close()
            except OSError as error:
                self.lose(error)

    def lose(self, error: OSError) -> None:
        self.warn(f"warning: cannot write the log {self.path}: {error.strerror or error}; "
                  "training goes on without it")
        file, self.file = self.file, None
        try:
            if file:
                file.close()  # closes the file even when its flush fails
        except OSError:
            pass


class Reporter:
    """Progress on stderr: a live line on a terminal, plain periodic lines otherwise.
    Rollbacks are always told, even when quiet."""

    def __init__(self, quiet: bool = False, interval: float = 5.0):
        self.quiet, self.interval = quiet, interval
        self.live = sys.stderr is not None and sys.stderr.isatty()
        self.last_print = 0.0
        self.chars_since, self.rate_clock = 0, time.perf_counter()
        self.rate = 0.0

    def say(self, line: str, live: bool = False) -> None:
        if self.quiet:
            return
        if self.live:
            to_stderr(f"\r\x1b[K{line}", end="" if live else "\n")
        else:
            to_stderr(line)

    def __call__(self, event: dict) -> None:
        kind = event["kind"]
        if kind == "start":
            total = f"/{event['steps']}" if event["steps"] else ""
            self.say(f"training from step {event['step']}{total}, {event['params']:,} parameters")
        elif kind == "step":
            self.chars_since += event["chars"]
            now = time.perf_counter()
            if now - self.rate_clock >= 1.0:
                self.rate = self.chars_since / (now - self.rate_clock)
                self.chars_since, self.rate_clock = 0, now
            if now - self.last_print >= (0.2 if self.live else self.interval):
                self.last_print = now
                self.say(self.status(event), live=True)
        elif kind == "eval":
            val = "n/a" if event["val_bpc"] is None else f"{event['val_bpc']:.4f}"
            mark = " (best)" if event["improved"] else ""
            self.say(f"step {event['step']}: train {event['train_bpc']:.4f} bits/char, "
                     f"val {val} bits/char{mark}")
        elif kind == "rollback":
            to_stderr(f"step {event['step']}: loss not finite; rolled back to the last good "
                      f"state, learning rate now {event['lr']:.3g}")
        elif kind == "done":
            best = event["best_val_bpc"]
            best = "n/a" if best is None else f"{best:.4f}"
            self.say(f"done at step {event['step']} ({event['reason']}); best val {best} "
                     f"bits/char; saved {event['path']}")

    def status(self, event: dict) -> str:
        parts = [f"step {event['step']}/{event['steps']}" if event["steps"]
                 else f"step {event['step']}",
                 f"train {event['loss_bpc']:.3f} bits/char", f"{self.rate:,.0f} chars/s"]
        left = []
        if event["time_limit"]:
            left.append(event["time_limit"] - event["elapsed"])
        if event["steps"] and self.rate:
            left.append((event["steps"] - event["step"]) * event["chars"] / self.rate)
        if left:
            parts.append(f"ETA {format_seconds(max(0.0, min(left)))}")
        return ", ".join(parts)


def format_seconds(seconds: float) -> str:
    """'4m05s', or '1h02m' from an hour on."""
    seconds = int(round(seconds))
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else \
        f"{seconds // 60}m{seconds % 60:02d}s"
