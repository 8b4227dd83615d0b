"""Work on all cores: disjoint pieces run on a small thread pool.

Numba kernels compiled with nogil=True and numpy's matrix products release the GIL, so
plain threads run them in parallel. This replaces multi-threaded BLAS, whose pools
(numpy's and scipy's OpenBLAS, plus Numba's) spin-wait against each other on the small
per-step products. Every piece writes only its own rows; partial sums are merged
serially.

Handing a piece to a pool thread costs a sleeping thread's wake-up and the GIL, so
compiled loops that run often and briefly (a batch-1 layer's time loop, Adam, matrix
products of few rows) start on Numba's own thread team instead, a prange over the parts
(`*_team` kernels), with no GIL involved; see team_runs for when that is allowed. The
measurements behind each threshold: docs/threads-and-kernels.md, "Threads".
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import numpy as np

from .workers import Workers

# The measurements behind each: docs/threads-and-kernels.md, "Products of few rows", "Threads".
MIN_ROWS_PER_PART = 8  # below this, splitting costs more than it saves
MIN_ROWS_PER_PRODUCT = 64  # rows of a matrix product per thread, at least
MIN_UNITS_PER_PART = 32  # a recurrent layer's units per thread, at least
MIN_PANELS_PER_TEAM_PART = 2  # column panels of a product per team thread, at least
MIN_TEAM_PRODUCT = 1 << 21  # multiply-adds of a product split on the team, at least
UNIT_SPLIT_WIDTH = 256  # layers this wide split their units when the batch is not split
TEAM_SPLIT_WIDTH = 128  # ... or this wide, when the parts start on Numba's team
PIECES_BELOW_WIDTH = 384  # where the L2 is unknown, narrower layers' batches split (splits_units)
UNIT_ALIGN = 16  # 16 float32 = one 64-byte cache line
_pool: ThreadPoolExecutor | None = None
_workers: Workers | None = None
_threads = 0
_cores = 0  # the cores this process may use, asked once
_team_size: int | None = None  # threads of Numba's OpenMP team; 0: none (asked once)
_team_pid = 0  # the process that loaded the team: a fork() of it may not use it
_team_setters = None  # (set_num_threads, set_parallel_chunksize): _setters, asked once


class _ThisThread(threading.local):
    alone = False  # this thread runs one piece of a split batch


_this_thread = _ThisThread()


def set_thread_count(count: int) -> None:
    global _threads
    _threads = max(1, int(count))


def thread_count() -> int:
    """Threads to use: set_thread_count's value, else the cores this process may use;
    1 inside one_thread_per_piece."""
    global _cores
    if _this_thread.alone:
        return 1
    if _threads:
        return _threads
    if not _cores:  # a system call: a train step asks about 20 times
        _cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (
            os.cpu_count() or 1)
    return _cores


def row_ranges(rows: int, min_rows: int = MIN_ROWS_PER_PART) -> list[tuple[int, int]]:
    """Split range(rows) into up to thread_count() contiguous (lo, hi) pieces."""
    parts = max(1, min(thread_count(), rows // max(min_rows, 1)))
    return [(k * rows // parts, (k + 1) * rows // parts) for k in range(parts)]


def batch_pieces(rows: int, units: int, gates: int = 4, itemsize: int = 4
                 ) -> list[tuple[int, int]]:
    """How threads share a batch of `rows` rows through a network of `units`-wide
    layers of `gates` gates and weights of `itemsize` bytes: [(lo, hi)] row pieces,
    each run start to finish by one thread, or the whole batch, [(0, rows)], whose
    layers then split their units (layer_units), as splits_units decides. A batch of
    one row has no pieces: its layers split their units instead (layer_units)."""
    if splits_units(units, gates, itemsize):
        return [(0, rows)]
    return row_ranges(rows, 1)


def splits_units(units: int, gates: int = 4, itemsize: int = 4) -> bool:
    """Whether a batch's layers split their units between the threads rather than the
    batch its rows. Pieces need no meetings and only two hand-offs per step, but every
    thread streams all of each Wh every step; splitting units keeps each thread's share
    of Wh in its own core's cache, but the threads meet once per time step and hand off
    at every stage. So units split when a thread's share of a layer's Wh fits its
    core's L2 and the whole does not (docs/threads-and-kernels.md, "Threads", the
    table); where the L2 is unknown, from PIECES_BELOW_WIDTH units."""
    from .machine import l2_cache_bytes
    l2 = l2_cache_bytes()
    if l2 is None:
        return units >= PIECES_BELOW_WIDTH
    layer = units * gates * units * itemsize
    return l2 < layer <= l2 * thread_count()


def layer_units(units: int) -> list[tuple[int, int]]:
    """The (j0, j1) unit ranges of a recurrent layer, one per thread; the threads meet
    once per step. Boundaries fall on multiples of UNIT_ALIGN, so each thread writes its
    own cache lines of the shared arrays. Layers split from TEAM_SPLIT_WIDTH units when
    the parts start on Numba's team (team_runs), else from UNIT_SPLIT_WIDTH: narrower
    layers lose more to the meetings than they gain (docs/threads-and-kernels.md,
    "Threads", "The team").
    Inside a batch piece there is one thread (one_thread_per_piece)."""
    if units < min(TEAM_SPLIT_WIDTH, UNIT_SPLIT_WIDTH):
        return [(0, units)]
    ranges = unit_ranges(units)
    if units >= UNIT_SPLIT_WIDTH or _team_fits(len(ranges)):
        return ranges
    return [(0, units)]


@contextmanager
def one_thread_per_piece(pieces: int):
    """While more than one piece of a batch runs, each on its own thread, the work of
    each stays on its thread: thread_count() is 1 there."""
    if pieces == 1:
        yield
        return
    before, _this_thread.alone = _this_thread.alone, True
    try:
        yield
    finally:
        _this_thread.alone = before


def unit_ranges(units: int) -> list[tuple[int, int]]:
    """Split range(units) into up to thread_count() pieces of at least MIN_UNITS_PER_PART,
    with boundaries on multiples of UNIT_ALIGN where the pieces are that wide."""
    parts = max(1, min(thread_count(), units // MIN_UNITS_PER_PART))
    align = UNIT_ALIGN if units // parts >= UNIT_ALIGN else 1
    bounds = [0] + [k * units // parts // align * align for k in range(1, parts)] + [units]
    return [(bounds[k], bounds[k + 1]) for k in range(parts)]


def compiled_ranges(rows: int, min_rows: int, min_rows_on_team: int
                    ) -> tuple[list[tuple[int, int]], bool]:
    """row_ranges for the parts of a compiled loop, and whether they run as its `*_team`
    kernel (team_runs, which then sized the team): parts start so cheaply there that
    each needs fewer rows (min_rows_on_team rather than min_rows) to be worth a thread."""
    if thread_count() > 1:
        ranges = row_ranges(rows, min_rows_on_team)
        if team_runs(len(ranges)):
            return ranges, True
    return row_ranges(rows, min_rows), False


def team_runs(parts: int) -> bool:
    """Whether `parts` parts of a compiled loop run as one call of its `*_team` kernel
    on Numba's thread team rather than on the pool; if so, the team is set, for this
    thread's next calls, to exactly `parts` threads and one part each (whatever a
    caller set before: fewer threads, or chunks of several iterations, would put two
    parts on one thread).

    Parts that meet need a thread each, at once: OpenMP's static schedule gives each of
    them its own, but TBB and Numba's workqueue may run two parts one after the other on
    one thread, whose first meeting would then wait forever, so only OpenMP's team is
    used. Not in a child fork()ed after the team started: GNU OpenMP is not fork-safe
    (Numba ends such a child with SIGTERM), so there the pool runs them."""
    global _team_setters
    if not _team_fits(parts):
        return False
    if _team_setters is None:
        _team_setters = _setters()
    set_threads, set_chunk_size = _team_setters
    set_threads(parts)
    set_chunk_size(0)
    return True


def _team_fits(parts: int) -> bool:
    """team_runs' answer, without sizing the team (layer_units only decides a split)."""
    return 1 < parts <= team_size() and os.getpid() == _team_pid


def team_size() -> int:
    """How many threads Numba's team may have if its threading layer is GNU OpenMP
    (chosen here when the user did not choose a layer), else 0. The first call loads
    the layer, once per process."""
    global _team_size, _team_pid
    if _team_size is None:
        _team_size, _team_pid = _load_team(), os.getpid()
    return _team_size


def _setters() -> tuple:
    """numba.set_num_threads and numba.set_parallel_chunksize, or rather, as the
    threading layer is loaded by now, the layer's own functions that they call after
    their checks (that the layer is loaded, that the count is an int within the team):
    team_runs has made those checks, and the public calls take several times as long,
    which a batch-1 step pays at each of its dozen or so team calls. A Numba without
    these internals gets the public calls."""
    import numba
    try:
        from numba.np.ufunc import parallel as layer
        return layer._set_num_threads, layer._set_parallel_chunksize
    except (ImportError, AttributeError):
        return numba.set_num_threads, numba.set_parallel_chunksize


def _load_team() -> int:
    """Load Numba's threading layer, as OpenMP unless the user chose another; the team's
    largest size if it is GNU OpenMP (the one measured), else 0.

    After a parallel region GNU OpenMP's threads spin for GOMP_SPINCOUNT iterations
    before they sleep; by default long enough to take a core from the pool threads that
    run the next step's batch pieces, while a thread that slept must be woken at the
    next call. Unless the user set it, it is the count that lasts
    machine.TEAM_SPIN_MICROSECONDS on this machine, which covers most gaps between a
    batch-1 step's team calls (docs/threads-and-kernels.md, "Spinning"). libgomp reads
    the variable once, when loaded; it is then taken out of the environment again, so
    child processes (the PyTorch peer of `bench`) keep their own default."""
    import numba

    if os.environ.get("OMP_DYNAMIC", "").strip().lower() in ("1", "true", "yes", "on"):
        return 0  # OpenMP may then start fewer threads than parts
    size = numba.config.NUMBA_NUM_THREADS
    if os.environ.get("OMP_THREAD_LIMIT", "").strip():
        try:
            size = min(size, int(os.environ["OMP_THREAD_LIMIT"]))
        except ValueError:
            return 0
    spin_chosen = "GOMP_SPINCOUNT" in os.environ
    if not spin_chosen:
        from .machine import team_spin_count
        os.environ["GOMP_SPINCOUNT"] = str(team_spin_count())
    chosen = numba.config.THREADING_LAYER
    if chosen == "default":
        numba.config.THREADING_LAYER = "omp"
    try:
        from numba.np.ufunc import omppool

        from .kernels.sync import team_probe
        team_probe(np.zeros(2))
        gnu_openmp = numba.threading_layer() == "omp" and omppool.openmp_vendor == "GNU"
    except Exception:  # no OpenMP runtime here: Numba cannot load the layer
        numba.config.THREADING_LAYER = chosen
        return 0
    finally:
        if not spin_chosen:
            os.environ.pop("GOMP_SPINCOUNT", None)
    return size if gnu_openmp else 0


def _forget_threads() -> None:
    """In a child fork()ed from this process: the pool's threads were not copied, and
    the affinity may differ; both are made anew when needed."""
    global _pool, _workers, _cores
    _pool, _workers, _cores = None, None, 0


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_threads)


def run_parts(function, arguments: list[tuple]) -> list:
    """Call function(*args) for each args, concurrently; the first runs on this thread.
    Returns the results in order, once every part has returned; the first error any
    part raised is raised then."""
    global _pool, _workers
    if len(arguments) == 1:
        return [function(*arguments[0])]
    if _workers is not None and _workers.count < len(arguments) - 1 \
            and _workers.busy.acquire(blocking=False):  # in use: the executor serves this
        _workers.retire()  # a larger set replaces it; its lock stays taken
        _workers = None
    if _workers is None:
        _workers = Workers(max(len(arguments) - 1, thread_count() - 1))
    workers = _workers
    if workers.count >= len(arguments) - 1 and workers.busy.acquire(blocking=False):
        try:
            return workers.run(function, arguments)
        finally:
            workers.busy.release()
    # another thread is using the workers (a host program's own threads, or a part)
    if _pool is None or _pool._max_workers < len(arguments) - 1:
        _pool = ThreadPoolExecutor(max_workers=max(len(arguments) - 1, thread_count()),
                                   thread_name_prefix="charrnn")
    futures = [_pool.submit(function, *args) for args in arguments[1:]]
    first = function(*arguments[0])
    return [first] + [future.result() for future in futures]


def run_meeting_parts(function, arguments: list[tuple], counters: np.ndarray) -> list:
    """run_parts for a compiled loop whose threads meet on counters (kernels/sync.py):
    a part that raises first releases its partners' meetings, so the error surfaces
    instead of the others waiting for it forever."""
    from .kernels.sync import release_meetings

    def part(*args):
        try:
            return function(*args)
        except BaseException:
            release_meetings(counters)
            raise
    return run_parts(part, arguments)


def matmul(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> np.ndarray:
    """out = a @ b, rows of a split across threads. a (M, K), b (K, P), out (M, P).
    Large products of fewer rows split their columns on Numba's team instead
    (team_product)."""
    if a.shape[0] < 2 * MIN_ROWS_PER_PRODUCT or thread_count() == 1:
        if not team_product(a, b, out):
            np.matmul(a, b, out=out)  # one piece: no closure, no hand-off
        return out

    def piece(lo, hi):
        np.matmul(a[lo:hi], b, out=out[lo:hi])
    run_parts(piece, row_ranges(a.shape[0], MIN_ROWS_PER_PRODUCT))
    return out


def matmul_tn(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> np.ndarray:
    """out = a.T @ b, the shared rows split across threads, each summing into its own
    buffer; the buffers are added afterwards. a (M, K), b (M, P), out (K, P). Large
    products with fewer shared rows split out's columns on Numba's team instead
    (team_product)."""
    if a.shape[0] < 2 * MIN_ROWS_PER_PRODUCT or thread_count() == 1:
        if not team_product(a.T, b, out):
            np.matmul(a.T, b, out=out)
        return out
    ranges = row_ranges(a.shape[0], MIN_ROWS_PER_PRODUCT)
    partials = [out] + [np.empty_like(out) for _ in ranges[1:]]

    def piece(k, lo, hi):
        np.matmul(a[lo:hi].T, b[lo:hi], out=partials[k])
    run_parts(piece, [(k, lo, hi) for k, (lo, hi) in enumerate(ranges)])
    for partial in partials[1:]:
        out += partial
    return out


def team_product(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> bool:
    """out = a @ b (either operand may be a transposed view), its columns split among
    Numba's team (kernels/products.py), if that runs here and the product is large
    enough; returns whether it did. For products of few rows, which the pool does not
    split. Anything else (other dtypes, mismatched shapes, an out that overlaps an
    operand, strided operands) is left to numpy, as are products below
    MIN_TEAM_PRODUCT, where reading what the other core wrote costs more than the split
    saves (docs/threads-and-kernels.md, "Products of few rows")."""
    if (thread_count() == 1 or a.shape[0] * a.shape[1] * b.shape[1] < MIN_TEAM_PRODUCT
            or out.dtype not in (np.float32, np.float64) or not a.dtype == b.dtype == out.dtype
            or a.shape[1] != b.shape[0] or out.shape != (a.shape[0], b.shape[1])):
        return False  # numpy multiplies it, or says what is wrong
    stored_a, stored_b = _row_major(a), _row_major(b)
    if (stored_a is None or stored_b is None or not out.flags.c_contiguous
            or np.may_share_memory(out, a) or np.may_share_memory(out, b)):
        return False
    from .kernels.panels import panel_width
    width = panel_width(out.dtype)
    panels = -(-out.shape[1] // width)
    parts = min(thread_count(), panels // MIN_PANELS_PER_TEAM_PART)
    if parts < 2 or not team_runs(parts):
        return False
    from .kernels.products import matmul_team
    bounds = np.array([k * panels // parts * width for k in range(parts)] + [out.shape[1]])
    matmul_team(stored_a[0], stored_b[0], out, stored_a[1], stored_b[1], bounds)
    return True


def _row_major(x: np.ndarray):
    """(x, False) if x is C-contiguous, (x.T, True) if its transpose is, else None."""
    if x.flags.c_contiguous:
        return x, False
    if x.flags.f_contiguous:
        return x.T, True
    return None
