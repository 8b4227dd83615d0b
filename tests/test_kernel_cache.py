"""Where compiled kernels are cached: a directory named after every kernel source, so an
edit to one kernel file never leaves stale inlined copies of it in another's cache."""

import os
import shutil
import time
from pathlib import Path

import charrnn
from charrnn.runtime import (KERNEL_CACHE_KEEP_DAYS, kernel_cache_name, key_kernel_cache,
                     prune_kernel_caches)

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
