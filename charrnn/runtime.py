"""Process set-up: BLAS threads, the kernel cache and (for the command line only) the
allocator. `import charrnn` applies what a library user needs (setup_library); the
`charrnn` command applies the rest (setup_command_line). Why each setting is so, with
the measurements, is in docs/threads-and-kernels.md.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import os
import re
import shutil
import sys
import time
import warnings
from pathlib import Path

# Kernel caches of other sources (earlier edits, upgrades) unused this long are removed.
KERNEL_CACHE_KEEP_DAYS = 14

# The thread-count variables of the BLAS libraries numpy and scipy load.
BLAS_THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def setup_library() -> None:
    """What importing charrnn sets up: one BLAS thread per call (when numpy is not yet
    loaded; otherwise see one_blas_thread_now) and the keyed kernel cache. Nothing
    global beyond: no allocator settings, no signal handlers."""
    one_blas_thread()
    key_kernel_cache()


def setup_command_line() -> None:
    """What the `charrnn` command sets up before it runs: the library's set-up, the
    allocator's, and no numpy warnings on stderr (a diverging run overflows in numpy's
    products; training checks for non-finite values itself and says so in one line)."""
    warnings.filterwarnings("ignore", category=RuntimeWarning, module=r"charrnn\.")
    one_blas_thread()
    keep_freed_memory()
    key_kernel_cache()


def one_blas_thread() -> None:
    """One BLAS thread per call unless the user set otherwise: BLAS's own thread pools
    and charrnn's threads spin-wait against each other on the small per-step products.
    Effective only before numpy is first imported."""
    for name in BLAS_THREAD_VARIABLES:
        os.environ.setdefault(name, "1")


@contextlib.contextmanager
def one_blas_thread_now():
    """For the duration of the block, one thread per BLAS call in every OpenBLAS this
    process has loaded, then the counts as they were: for a host program that
    imported numpy before charrnn, whose BLAS already started its pool. Does nothing
    where the user chose a count (BLAS_THREAD_VARIABLES) or no OpenBLAS is found."""
    if any(os.environ.get(name) not in (None, "1") for name in BLAS_THREAD_VARIABLES):
        yield
        return
    controls = openblas_thread_controls()
    before = [(set_count, get_count()) for get_count, set_count in controls]
    for set_count, _ in before:
        set_count(1)
    try:
        yield
    finally:
        for set_count, count in before:
            set_count(count)


_CONTROLS_BY_LIBRARY: dict = {}  # path -> its (get, set) pairs, looked up once
# The controls found, and len(sys.modules) when they were: shared libraries load with
# Python modules, so the memory map is read again only after more modules loaded.
_FOUND: tuple[int, list] = (-1, [])


def openblas_thread_controls() -> list:
    """(get, set) thread-count functions of each OpenBLAS loaded now (Linux: read from
    /proc/self/maps, as libraries may load later, e.g. scipy's with the first kernel);
    empty elsewhere."""
    global _FOUND
    if _FOUND[0] == len(sys.modules):
        return _FOUND[1]
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
            paths = {line.split(None, 5)[-1].strip() for line in maps if "openblas" in line}
    except OSError:
        paths = set()
    controls = []
    for path in sorted(paths):
        if path not in _CONTROLS_BY_LIBRARY:
            _CONTROLS_BY_LIBRARY[path] = thread_controls_of(path)
        controls += _CONTROLS_BY_LIBRARY[path]
    _FOUND = (len(sys.modules), controls)
    return controls


# What an AVX2-only CPU lacks of a newer one's features (Numba's feature names).
BEYOND_AVX2 = ("avx512", "amx", "avx10")


def avx2_environment() -> dict | None:
    """Environment variables that make a child process run as on a CPU with AVX2 but not
    AVX-512 (a laptop, most cloud VMs): Numba compiles for Haswell with this host's
    features short of AVX-512, into a kernel cache of its own; OpenBLAS takes its
    Haswell kernels; PyTorch and oneDNN are capped at AVX2. None when this CPU cannot
    run AVX2 code."""
    import llvmlite.binding as llvm
    features = [feature for feature in llvm.get_host_cpu_features().flatten().split(",")
                if not any(word in feature for word in BEYOND_AVX2)]
    if "+avx2" not in features or "+fma" not in features:
        return None
    cache = os.environ.get("NUMBA_CACHE_DIR")
    return {"NUMBA_CPU_NAME": "haswell", "NUMBA_CPU_FEATURES": ",".join(features),
            **({"NUMBA_CACHE_DIR": cache.rstrip(os.sep) + "-avx2"} if cache else {}),
            "OPENBLAS_CORETYPE": "Haswell", "ATEN_CPU_CAPABILITY": "avx2",
            "ONEDNN_MAX_CPU_ISA": "AVX2"}


def blas_kernels() -> str:
    """Which OpenBLAS kernels this process runs, per library loaded (e.g. numpy's and
    scipy's): 'SkylakeX x1, Haswell x1', from OpenBLAS's own report of its core name;
    'unknown' where none is found. For benchmarks, which must say which BLAS ran."""
    openblas_thread_controls()  # loads what is mapped now
    names = []
    for path, controls in sorted(_CONTROLS_BY_LIBRARY.items()):
        library = ctypes.CDLL(path)
        for prefix in ("openblas", "scipy_openblas"):
            for suffix in ("", "64_"):
                corename = getattr(library, f"{prefix}_get_corename{suffix}", None)
                if corename is None:
                    continue
                corename.restype = ctypes.c_char_p
                threads = controls[0][0]() if controls else "?"
                names.append(f"{corename().decode(errors='replace')} x{threads}")
    return ", ".join(names) or "unknown"


def thread_controls_of(path: str) -> list:
    try:
        library = ctypes.CDLL(path)
    except OSError:
        return []
    found = []
    # OpenBLAS builds prefix and suffix their symbols (scipy's: scipy_openblas...64_).
    for prefix in ("openblas", "scipy_openblas"):
        for suffix in ("", "64_"):
            try:
                get_count = getattr(library, f"{prefix}_get_num_threads{suffix}")
                set_count = getattr(library, f"{prefix}_set_num_threads{suffix}")
            except AttributeError:
                continue
            get_count.restype, set_count.argtypes = ctypes.c_int, [ctypes.c_int]
            found.append((get_count, set_count))
    return found


def keep_freed_memory() -> bool:
    """Ask glibc's malloc to keep freed memory for the next allocation rather than give
    it back to the system, unless the user set any MALLOC_* variable or a malloc tunable
    (GLIBC_TUNABLES); returns whether both settings took. Every training step allocates
    its caches afresh, and glibc would otherwise return them and fault every page in
    again on the next step. Arrays above 32 MB are still mapped and unmapped on their
    own. Elsewhere (no mallopt, or musl's, which ignores it) nothing changes. The
    command line's only: a library must not change its host's allocator."""
    if any(name.startswith("MALLOC_") for name in os.environ) or \
            "glibc.malloc." in os.environ.get("GLIBC_TUNABLES", ""):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError, TypeError):  # TypeError: Windows has no CDLL(None)
        return False
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's malloc.h
    return bool(mallopt(M_MMAP_THRESHOLD, 32 << 20)) and bool(mallopt(M_TRIM_THRESHOLD, 1 << 30))


KERNELS_PACKAGE = __name__.rpartition(".")[0] + ".kernels"  # charrnn.kernels


def load_cached_kernels_directly() -> None:
    """Let Numba load charrnn's cached kernels without first refreshing its compiler.

    Numba's Cache.load_overload refreshes the target context before each load; the first
    refresh imports and registers every implementation Numba has, which only typing and
    lowering new code use: about 0.1 s of a warm `charrnn sample`'s start
    (docs/performance.md, "Start-up"). Cached machine code links against Numba's runtime
    (NRT, started here) and the helpers registered when the context was made; each
    kernel's modules are imported as its environments are unpickled. A kernel that
    compiles still refreshes first (Numba's compiler does), and a load that fails here
    is retried Numba's way. Only charrnn's kernels load like this, and only where Numba
    has the private method it relies on. For the command line only: a library does not
    change Numba for its host program."""
    from numba.core import caching
    from numba.core.runtime import rtsys

    numbas_load = caching.Cache.load_overload
    if getattr(numbas_load, "direct", False) or not hasattr(caching.Cache, "_load_overload"):
        return

    def load_overload(cache, sig, target_context):
        if getattr(cache._py_func, "__module__", "").startswith(KERNELS_PACKAGE + "."):
            try:
                rtsys.initialize(target_context)
                return cache._load_overload(sig, target_context)
            except Exception:
                pass
        return numbas_load(cache, sig, target_context)
    load_overload.direct = True
    caching.Cache.load_overload = load_overload


def user_cache_dir() -> str:
    """charrnn's directory in the user's cache: $XDG_CACHE_HOME/charrnn, else
    ~/.cache/charrnn."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "charrnn")


def key_kernel_cache() -> None:
    """Keep Numba's compiled kernels in a directory named after a hash of every kernel
    source, unless NUMBA_CACHE_DIR is set. Numba's cache=True checks only the timestamp
    of the file that defines a function, not of the files it calls and inlines, so an
    edit to activations.py alone would leave the LSTM kernels running the old code. The
    directory sits in kernels/__pycache__ like Numba's own, else in the user's cache (a
    read-only install); caches left there by other sources are pruned."""
    if "NUMBA_CACHE_DIR" in os.environ:
        return
    kernels = Path(__file__).resolve().parent / "kernels"
    user_cache = Path(user_cache_dir())
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
            if "numba" in sys.modules:  # a host program loaded numba first
                from numba.core import config
                config.reload_config()
            prune_kernel_caches(root, name)
            return


def prune_kernel_caches(root, current: str) -> None:
    """Mark root/current as used now and remove the other kernel caches in root unused
    for KERNEL_CACHE_KEEP_DAYS: every kernel edit or upgrade leaves one behind, and an
    install that shares the directory keeps its own as long as it runs within that time."""
    prune_unused(root, r"numba-[0-9a-f]{16}", lambda name: name == current,
                 KERNEL_CACHE_KEEP_DAYS)


def prune_unused(root, pattern: str, in_use, days: float) -> None:
    """In directory root, among the entries whose names fully match the regex
    `pattern`: mark those for which in_use(name) is true as used now, and remove the
    others (files or directories) unused for `days`. Everything else in root stays.
    Failures are ignored: pruning must never stop a command."""
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
    digest = hashlib.sha256()
    for path in sorted(Path(kernels).glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return f"numba-{digest.hexdigest()[:16]}"
