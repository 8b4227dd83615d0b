"""Process set-up (charrnn.runtime): where compiled kernels are cached (a directory named
after every kernel source, so an edit to one kernel file never leaves stale inlined
copies of it in another's cache), and BLAS at one thread during charrnn's calls."""

import ast
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

import charrnn
from charrnn.runtime import (
    KERNEL_CACHE_KEEP_DAYS,
    kernel_cache_name,
    key_kernel_cache,
    prune_kernel_caches,
)

KERNELS = Path(charrnn.__file__).resolve().parent / "kernels"


def test_any_kernel_edit_changes_the_cache_directory(tmp_path):
    copy = tmp_path / "kernels"
    shutil.copytree(KERNELS, copy, ignore=shutil.ignore_patterns("__pycache__"))
    before = kernel_cache_name(copy)
    assert before == kernel_cache_name(KERNELS) and before.startswith("numba-")
    activations = copy / "activations.py"  # inlined into the cells' compiled loops
    activations.write_text(activations.read_text() + "\n# edited\n")
    assert kernel_cache_name(copy) != before


def test_cache_directory_is_set_beside_the_kernels(monkeypatch):
    monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)
    key_kernel_cache()
    expected = KERNELS / "__pycache__" / kernel_cache_name(KERNELS)
    assert os.environ["NUMBA_CACHE_DIR"] == str(expected) and expected.is_dir()


def test_an_explicit_numba_cache_dir_wins(monkeypatch, tmp_path):
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path / "mine"))
    key_kernel_cache()
    assert os.environ["NUMBA_CACHE_DIR"] == str(tmp_path / "mine")


def test_read_only_install_caches_in_the_users_cache(monkeypatch, tmp_path):
    monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode: (
        False if "__pycache__" in str(path) else real_access(path, mode)))
    key_kernel_cache()
    assert os.environ["NUMBA_CACHE_DIR"] == str(tmp_path / "charrnn" / kernel_cache_name(KERNELS))


def test_caches_of_other_sources_unused_for_weeks_are_pruned(tmp_path):
    now, day = time.time(), 86400
    ages = {"numba-00000000000000aa": KERNEL_CACHE_KEEP_DAYS + 1,  # stale: removed
            "numba-00000000000000bb": KERNEL_CACHE_KEEP_DAYS - 1,  # another install's
            "numba-00000000000000cc": 400,  # the current one, however old
            "numba-notahash": 400, "other": 400}  # not ours to remove
    for name, age in ages.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "index.nbi").write_bytes(b"x")
        os.utime(tmp_path / name, (now - age * day, now - age * day))
    prune_kernel_caches(tmp_path, "numba-00000000000000cc")
    assert sorted(path.name for path in tmp_path.iterdir()) == [
        "numba-00000000000000bb", "numba-00000000000000cc", "numba-notahash", "other"]
    assert (tmp_path / "numba-00000000000000cc").stat().st_mtime > now - day  # marked used
    prune_kernel_caches(tmp_path / "missing", "numba-00000000000000cc")  # no error


BLAS_SCRIPT = """
import numpy  # before charrnn: its BLAS has started its threads
import charrnn.runtime as runtime
controls = runtime.openblas_thread_controls()
for _, set_count in controls:
    set_count(2)
before = [get() for get, _ in controls]
with runtime.one_blas_thread_now():
    inside = [get() for get, _ in controls]
print(len(controls), before, inside, [get() for get, _ in controls])
"""


@pytest.mark.parametrize("user_setting", [None, "3"])
def test_blas_runs_one_thread_in_charrnns_calls_and_the_hosts_count_after(user_setting):
    env = {k: v for k, v in os.environ.items()
           if k not in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    if user_setting:
        env["OPENBLAS_NUM_THREADS"] = user_setting
    done = subprocess.run([sys.executable, "-c", BLAS_SCRIPT], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    count, before, inside, after = done.stdout.split(" ", 1)[0], *eval_lists(done.stdout)
    if count == "0":
        pytest.skip("no OpenBLAS found in this process (another BLAS, or not Linux)")
    assert before == after == [2] * len(before)
    # a user's own setting is theirs to keep; otherwise charrnn's calls run one thread
    assert inside == (before if user_setting else [1] * len(before))


def eval_lists(line: str):
    return [ast.literal_eval(part) for part in re.findall(r"\[[^\]]*\]", line)]


def test_blas_kernels_names_the_kernel_openblas_chose():
    script = "import numpy, scipy.linalg, charrnn.runtime as r; print(r.blas_kernels())"
    env = {**os.environ, "OPENBLAS_CORETYPE": "Haswell"}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    if done.stdout.strip() == "unknown":
        pytest.skip("no OpenBLAS found in this process (another BLAS, or not Linux)")
    assert [name.split(" x")[0] for name in done.stdout.strip().split(", ")] == \
        ["Haswell"] * len(done.stdout.split(", "))
