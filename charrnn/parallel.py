"""Work on all cores: disjoint pieces run on a small thread pool.

Numba kernels compiled with nogil=True and numpy's matrix products release the GIL, so
plain threads run them in parallel. This replaces multi-threaded BLAS, whose pools
(numpy's and scipy's OpenBLAS, plus Numba's) spin-wait against each other on the small
per-step products, and Numba's parallel=True, which cannot cache kernels that call
np.dot. Every piece writes only its own rows; partial sums are merged serially.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

MIN_ROWS_PER_PART = 8  # below this, splitting costs more than it saves
MIN_UNITS_PER_PART = 32  # a recurrent layer's units per thread, at least
UNIT_SPLIT_WIDTH = 256  # layers this wide split units rather than rows (layer_parts)
UNIT_ALIGN = 16  # 16 float32 = one 64-byte cache line
_pool: ThreadPoolExecutor | None = None
_threads = 0


def set_thread_count(count: int) -> None:
    global _threads
    _threads = max(1, int(count))


def thread_count() -> int:
    """Threads to use: set_thread_count's value, else the cores this process may use."""
    if _threads:
        return _threads
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def row_ranges(rows: int, min_rows: int = MIN_ROWS_PER_PART) -> list[tuple[int, int]]:
    """Split range(rows) into up to thread_count() contiguous (lo, hi) pieces."""
    parts = max(1, min(thread_count(), rows // max(min_rows, 1)))
    return [(k * rows // parts, (k + 1) * rows // parts) for k in range(parts)]


def layer_parts(rows: int, units: int) -> tuple[list[tuple[int, int, int, int]], int]:
    """How threads share a recurrent layer of `units` units over `rows` batch rows:
    ([(lo, hi, j0, j1) per thread], how many threads meet every step).

    Splitting rows needs no meetings, but every thread streams all of Wh each step;
    splitting units keeps each thread's share of Wh in its own cache, but the threads
    meet once per step and read each other's halves of the state. Measured per step
    (2 cores, batch 32): rows win at 128 units (47 vs 55 us), units at 256 (145 vs
    186 us) and 512 (587 vs 1,474 us); at batch 1 and 128 units, one thread beats two
    that meet (2.0 vs 2.8 ms per train step). Unit boundaries fall on multiples of
    UNIT_ALIGN, so each thread writes its own cache lines of the shared arrays."""
    ranges = unit_ranges(units) if units >= UNIT_SPLIT_WIDTH else []
    if len(ranges) > 1:
        return [(0, rows, j0, j1) for j0, j1 in ranges], len(ranges)
    return [(lo, hi, 0, units) for lo, hi in row_ranges(rows, 1)], 1


def unit_ranges(units: int) -> list[tuple[int, int]]:
    """Split range(units) into up to thread_count() pieces of at least MIN_UNITS_PER_PART,
    with boundaries on multiples of UNIT_ALIGN where the pieces are that wide."""
    parts = max(1, min(thread_count(), units // MIN_UNITS_PER_PART))
    align = UNIT_ALIGN if units // parts >= UNIT_ALIGN else 1
    bounds = [0] + [k * units // parts // align * align for k in range(1, parts)] + [units]
    return [(bounds[k], bounds[k + 1]) for k in range(parts)]


def run_parts(function, arguments: list[tuple]) -> None:
    """Call function(*args) for each args, concurrently; the first runs on this thread."""
    global _pool
    if len(arguments) == 1:
        function(*arguments[0])
        return
    if _pool is None or _pool._max_workers < len(arguments) - 1:
        _pool = ThreadPoolExecutor(max_workers=max(len(arguments) - 1, thread_count()),
                                   thread_name_prefix="charrnn")
    futures = [_pool.submit(function, *args) for args in arguments[1:]]
    function(*arguments[0])
    for future in futures:
        future.result()


def matmul(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> np.ndarray:
    """out = a @ b, rows of a split across threads. a (M, K), b (K, P), out (M, P)."""
    def piece(lo, hi):
        np.matmul(a[lo:hi], b, out=out[lo:hi])
    run_parts(piece, row_ranges(a.shape[0], 64))
    return out


def matmul_tn(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> np.ndarray:
    """out = a.T @ b, the shared rows split across threads, each summing into its own
    buffer; the buffers are added afterwards. a (M, K), b (M, P), out (K, P)."""
    ranges = row_ranges(a.shape[0], 64)
    partials = [out] + [np.empty_like(out) for _ in ranges[1:]]

    def piece(k, lo, hi):
        np.matmul(a[lo:hi].T, b[lo:hi], out=partials[k])
    run_parts(piece, [(k, lo, hi) for k, (lo, hi) in enumerate(ranges)])
    for partial in partials[1:]:
        out += partial
    return out
