"""charrnn.runtime.keep_freed_memory: freed step arrays stay in the process for the next step
instead of being faulted in again."""

import os
import platform
import subprocess
import sys

import pytest

# Allocates and frees 42 MB of 3 MB arrays five times (as training steps allocate their
# caches), printing the minor page faults of each round. (Below numpy's 4 MB, from which
# it asks for huge pages, which would make the count depend on the host.)
ROUNDS = """
import resource, sys
import numpy as np
import charrnn.runtime
print(charrnn.runtime.keep_freed_memory())
for round in range(5):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    arrays = [np.ones(3 << 18, np.float32) for _ in range(14)]
    del arrays
    print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def rounds(**env):
    environment = {key: value for key, value in os.environ.items()
                   if not key.startswith("MALLOC_") and key != "GLIBC_TUNABLES"}
    done = subprocess.run([sys.executable, "-c", ROUNDS], capture_output=True, text=True,
                          env={**environment, **env}, timeout=60)
    assert done.returncode == 0, done.stderr
    kept, *faults = done.stdout.split()
    return kept == "True", [int(count) for count in faults]


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's malloc only")
def test_later_rounds_reuse_the_memory_of_the_first():
    kept, faults = rounds()
    assert kept
    assert faults[0] > 5000  # 42 MB of new pages: the count measures what it should
    assert max(faults[1:]) < faults[0] // 10


@pytest.mark.parametrize("setting", [{"MALLOC_ARENA_MAX": "2"},
                                     {"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=0"}])
def test_a_users_malloc_settings_are_left_alone(setting):
    kept, _ = rounds(**setting)
    assert not kept
