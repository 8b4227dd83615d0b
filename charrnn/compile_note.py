"""A note on stderr while Numba compiles charrnn's kernels (a cold compile cache).

Kernels are `@njit(cache=True)`: the first run on a machine, or after an upgrade or an
edit to a kernel, compiles them (seconds of silence); later runs load the machine code
from Numba's cache (`__pycache__` beside the kernels, or NUMBA_CACHE_DIR). Rather than
predict a cache hit from Numba's index files (a private layout, and whether an entry
fits depends on the argument types of the call), this listens to Numba's public event
API (`numba.core.event`): "numba:compile" is broadcast only when a dispatcher really
compiles, not when it loads from the cache, and before the work starts. So the note
appears exactly when compiling happens, and never on a warm cache.

Nothing here prints: the caller passes `say`. CHARRNN_NO_COMPILE_NOTE=1 silences the
note (the test suite sets it: which test compiles a kernel first depends on test order
and on the state of the cache, and many tests compare stderr exactly).
"""

from __future__ import annotations

import contextlib
import os

NOTE = "charrnn: compiling kernels for this machine (first run only, about {seconds} s)..."
# Cold-cache compile seconds per command, the measured ones rounded up (batch 1 takes
# longer): docs/development.md, "The kernel cache".
COMPILE_SECONDS = {"train": 15, "sample": 9, "score": 12, "bench": 40}
SILENCE_VARIABLE = "CHARRNN_NO_COMPILE_NOTE"
KERNELS_MODULE = __name__.rpartition(".")[0] + ".kernels"  # charrnn.kernels


@contextlib.contextmanager
def note_when_compiling(say, command: str):
    """While active, call say(note) once, as Numba starts compiling one of charrnn's
    kernels. Any failure of the listening itself is swallowed: a note is not worth a
    crash."""
    listener = None
    if not os.environ.get(SILENCE_VARIABLE):
        try:
            from numba.core import event
            listener = _first_compile_listener(event.Listener, say, NOTE.format(
                seconds=COMPILE_SECONDS.get(command, max(COMPILE_SECONDS.values()))))
            event.register("numba:compile", listener)
        except Exception:
            listener = None
    try:
        yield
    finally:
        if listener is not None:
            with contextlib.suppress(Exception):
                event.unregister("numba:compile", listener)


def _first_compile_listener(base, say, note: str):
    class FirstCompile(base):
        # Numba holds its global compiler lock around each compile, so these calls
        # never overlap, even when kernels are first called from several threads.
        said = False

        def on_start(self, event):
            try:
                module = getattr(event.data["dispatcher"].py_func, "__module__", "")
                if not self.said and module.startswith(KERNELS_MODULE + "."):
                    self.said = True
                    say(note)
            except Exception:
                pass

        def on_end(self, event):
            pass
    return FirstCompile()
