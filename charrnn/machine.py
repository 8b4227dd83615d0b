"""What charrnn reads from the machine, or measures once on it and keeps, instead of
constants measured on one host: the size of a core's L2 cache, and how long a spin-wait
iteration takes here.

They are kept in a small JSON file named after this CPU, beside the compiled kernels
(NUMBA_CACHE_DIR, which runtime.key_kernel_cache sets) or else in the user's cache, so
each machine measures once; a file that cannot be read or written only means measuring
again.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import platform
import time
from pathlib import Path

from .runtime import user_cache_dir

# GNU OpenMP's waiting threads spin this long before they sleep, whatever one spin costs
# on this CPU (x86's PAUSE differs widely across generations): long enough to cover most
# gaps between a batch-1 step's team calls (docs/threads-and-kernels.md, "Spinning").
TEAM_SPIN_MICROSECONDS = 300
SPINS_TIMED = 20_000  # spins per timing; the fastest of SPIN_TIMINGS timings counts
SPIN_TIMINGS = 5


@functools.lru_cache(maxsize=1)
def l2_cache_bytes() -> int | None:
    """The L2 cache of one core (the first), in bytes, as Linux describes it in sysfs;
    None where it is not found."""
    caches = Path("/sys/devices/system/cpu/cpu0/cache")
    try:
        for index in sorted(caches.glob("index*")):
            if ((index / "level").read_text().strip() == "2"
                    and (index / "type").read_text().strip() in ("Unified", "Data")):
                return cache_size_bytes((index / "size").read_text())
    except (OSError, ValueError):
        pass
    return None


def cache_size_bytes(text: str) -> int:
    """'1024K' (sysfs's spelling), '2M' or '65536' as bytes; ValueError otherwise."""
    text = text.strip().upper()
    scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:], 1)
    number = int(text[:-1] if scale > 1 else text)
    if number <= 0:
        raise ValueError(f"not a cache size: {text!r}")
    return number * scale


def team_spin_count() -> int:
    """GOMP_SPINCOUNT for TEAM_SPIN_MICROSECONDS on this machine."""
    return spins_for(TEAM_SPIN_MICROSECONDS)


def spins_for(microseconds: float) -> int:
    """The spins of a PAUSE spin-wait (kernels/sync.spin_wait) that last this long on
    this machine, within 1,000 and 1,000,000."""
    nanoseconds = measured("spin_nanoseconds", spin_nanoseconds)
    return max(1000, min(1_000_000, round(microseconds * 1000 / nanoseconds)))


def spin_nanoseconds() -> float:
    """The time of one iteration of a spin-wait with PAUSE (kernels/sync.spin_wait), as
    GNU OpenMP's threads run it: the fastest of a few timings, which the host's other
    work can only slow down."""
    import numpy as np

    from .kernels.sync import spin_wait

    flag = np.zeros(1, np.int64)
    spin_wait(flag, 1)  # loaded or compiled before the timing
    fastest = float("inf")
    for _ in range(SPIN_TIMINGS):
        start = time.perf_counter()
        spin_wait(flag, SPINS_TIMED)
        fastest = min(fastest, time.perf_counter() - start)
    return fastest / SPINS_TIMED * 1e9


def measured(name: str, measure) -> float:
    """This machine's figure `name`: kept from an earlier process, else measure() now
    and kept for the next ones."""
    path = figures_path()
    try:
        figures = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        figures = {}
    if not isinstance(figures, dict):
        figures = {}
    value = figures.get(name)
    if isinstance(value, (int, float)) and value > 0:
        return float(value)
    figures[name] = value = measure()
    partial = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial.write_text(json.dumps(figures), encoding="utf-8")
        os.replace(partial, path)
    except OSError:
        with contextlib.suppress(OSError):
            partial.unlink()
    return value


def figures_path() -> Path:
    """machine-<hash of this CPU's description>.json in the kernel cache, else the
    user's cache."""
    root = os.environ.get("NUMBA_CACHE_DIR") or user_cache_dir()
    digest = hashlib.sha256(cpu_description().encode()).hexdigest()[:16]
    return Path(root) / f"machine-{digest}.json"


def cpu_description() -> str:
    """The architecture and the processor's model name, family, model and stepping
    (Linux: /proc/cpuinfo; a virtual machine may give only a generic model name)."""
    fields = {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as cpuinfo:
            for line in cpuinfo:
                if not line.strip():
                    break  # the first processor's entry is enough
                key, _, value = line.partition(":")
                fields[key.strip()] = value.strip()
    except OSError:
        pass
    described = [fields.get(key, "") for key in ("model name", "cpu family", "model", "stepping")]
    return " ".join([platform.machine(), platform.processor(), *described])
