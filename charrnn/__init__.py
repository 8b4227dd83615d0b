"""charrnn: character-level recurrent networks (RNN, GRU, LSTM) on the CPU, compiled by Numba.

Importing this package is cheap: numba is imported only by the modules that run kernels.
"""

__version__ = "0.1.0"

CHECKPOINT_FORMAT_VERSION = 1

# Kernel caches of other sources (earlier edits, upgrades) unused this long are removed.
KERNEL_CACHE_KEEP_DAYS = 14

# The thread-count variables of the BLAS libraries numpy and scipy load.
BLAS_THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def one_blas_thread() -> None:
    """One BLAS thread per call unless the user set otherwise: numpy's and scipy's
    OpenBLAS pools and charrnn's own threads spin-wait against each other on the small
    per-step products (training measured 3.5x slower with all at 2 threads on 2 cores).
    Effective only before numpy is first imported."""
    import os
    for name in BLAS_THREAD_VARIABLES:
        os.environ.setdefault(name, "1")


def keep_freed_memory() -> bool:
    """Ask glibc's malloc to keep freed memory for the next allocation rather than give
    it back to the system, unless the user set any MALLOC_* variable or a malloc
    tunable (GLIBC_TUNABLES); returns whether both settings took. Every training step
    allocates its caches afresh (M: about 30 MB), and by default glibc returns most of
    them when they are freed, so the next step faults every page in again: M trained
    20.8-21.0 ms per step with 139-238k page faults in 120 steps, 17.8-19.0 ms with 38k
    this way, at the same peak RSS (221 MB). Arrays above 32 MB are still mapped and
    unmapped on their own. Elsewhere (no mallopt, or musl's, which ignores it) nothing
    changes."""
    import ctypes
    import os

    if any(name.startswith("MALLOC_") for name in os.environ) or \
            "glibc.malloc." in os.environ.get("GLIBC_TUNABLES", ""):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError, TypeError):  # TypeError: Windows has no CDLL(None)
        return False
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's malloc.h
    return bool(mallopt(M_MMAP_THRESHOLD, 32 << 20)) and bool(mallopt(M_TRIM_THRESHOLD, 1 << 30))


def key_kernel_cache() -> None:
    """Keep Numba's compiled kernels in a directory named after a hash of every kernel
    source, unless NUMBA_CACHE_DIR is set. Numba's cache=True checks only the timestamp
    of the file that defines a function, not of the files it calls and inlines: after an
    edit to activations.py alone, the cached LSTM kernels would still run the old
    sigmoid (a benchmark of an edited checkout measured stale code that way). Any edit
    now starts from a clean cache; unchanged kernels keep theirs. The directory sits in
    kernels/__pycache__ like Numba's own, else in the user's cache (a read-only install);
    caches left there by other sources are pruned (prune_kernel_caches).
    Effective only before numba is first imported."""
    import os
    from pathlib import Path

    if "NUMBA_CACHE_DIR" in os.environ:
        return
    kernels = Path(__file__).resolve().parent / "kernels"
    user_cache = Path(os.environ.get("XDG_CACHE_HOME")
                      or os.path.join(os.path.expanduser("~"), ".cache")) / "charrnn"
    try:
        name = kernel_cache_name(kernels)
    except OSError:
        return  # sources unreadable: leave Numba's own default
    for root in (kernels / "__pycache__", user_cache):
        try:
            (root / name).mkdir(parents=True, exist_ok=True)
        except OSError:
            continue
        if os.access(root / name, os.W_OK):
            os.environ["NUMBA_CACHE_DIR"] = str(root / name)
            prune_kernel_caches(root, name)
            return


def prune_kernel_caches(root, current: str) -> None:
    """Mark root/current as used now and remove the other kernel caches in root unused
    for KERNEL_CACHE_KEEP_DAYS: every kernel edit or upgrade leaves one behind (about
    4 MB each), and an install that shares the directory keeps its own as long as it
    runs within that time."""
    prune_unused(root, r"numba-[0-9a-f]{16}", lambda name: name == current,
                 KERNEL_CACHE_KEEP_DAYS)


def prune_unused(root, pattern: str, in_use, days: float) -> None:
    """In directory root, among the entries whose names fully match the regex
    `pattern`: mark those for which in_use(name) is true as used now, and remove the
    others (files or directories) unused for `days`. Everything else in root stays.
    Failures are ignored: pruning must never stop a command."""
    import os
    import re
    import shutil
    import time

    oldest = time.time() - days * 86400
    try:
        names = os.listdir(root)
    except OSError:
        return
    for name in names:
        if not re.fullmatch(pattern, name):
            continue
        path = os.path.join(root, name)
        try:
            if in_use(name):
                os.utime(path)
            elif os.stat(path).st_mtime < oldest:
                if os.path.isdir(path) and not os.path.islink(path):
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    os.unlink(path)
        except OSError:
            continue


def kernel_cache_name(kernels) -> str:
    """'numba-' and 16 hex digits of a hash of every .py file in the kernels directory."""
    import hashlib
    from pathlib import Path

    digest = hashlib.sha256()
    for path in sorted(Path(kernels).glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return f"numba-{digest.hexdigest()[:16]}"
