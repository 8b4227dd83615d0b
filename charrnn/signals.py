"""SIGINT and SIGTERM during training: before the loop starts they end the command
(exit_on_signals), during it they ask the loop to stop after the current step and save
(StopFlag). A signal the process was started to ignore stays ignored, and the caller's
handlers come back afterwards.
"""

from __future__ import annotations

import contextlib
import signal
import sys


def handle_stop_signals(handler) -> dict:
    """Point SIGINT and SIGTERM at handler, except a signal the process was started
    to ignore (a script's background job, `trap '' INT`): Ctrl-C meant for the
    foreground must not stop it. Returns the handlers replaced, to restore them."""
    replaced = {}
    try:
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous = signal.getsignal(sig)
            if previous is not signal.SIG_IGN:
                signal.signal(sig, handler)
                replaced[sig] = previous
    except ValueError:  # not the main thread (e.g. some test runners)
        pass
    return replaced


def restore_signals(replaced: dict) -> None:
    for sig, handler in replaced.items():
        signal.signal(sig, handler)


def exit_on_signals() -> dict:
    """Until training starts (and StopFlag takes over): SIGINT and SIGTERM end the run
    with 128 + the signal, as an exception, so what reading the corpus leaves (a spool
    of stdin, a half-written cache entry) is removed on the way out. Python's default
    SIGTERM kills at once. Returns the handlers replaced."""
    def leave(signum, frame):
        sys.exit(128 + signum)
    return handle_stop_signals(leave)


class StopFlag:
    """Turns SIGINT/SIGTERM into a request the training loop honours between steps."""

    def __init__(self):
        self.signum = 0

    def __call__(self) -> int:
        """The signal received, 0 if none."""
        return self.signum

    def _handle(self, signum, frame):
        self.signum = signum

    @contextlib.contextmanager
    def installed(self):
        previous = handle_stop_signals(self._handle)
        try:
            yield self
        finally:
            restore_signals(previous)
