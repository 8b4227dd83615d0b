"""charrnn.parallel: how work is shared among threads, and that every sharing gives the
product or split it promises."""

import os
import subprocess
import sys
import threading

import numpy as np
import pytest

from charrnn import parallel
from charrnn.kernels.sync import meet


@pytest.fixture
def threads(monkeypatch):
    def use(count):
        monkeypatch.setattr(parallel, "_threads", count)
    return use


@pytest.mark.parametrize("count", [1, 2, 3])
@pytest.mark.parametrize("rows, columns", [(500, 65), (500, 512), (130, 40), (20, 512)])
def test_products_equal_numpy_on_any_thread_count(threads, count, rows, columns):
    threads(count)
    rng = np.random.default_rng([rows, columns])
    a = rng.standard_normal((rows, 48))
    b = rng.standard_normal((rows, columns))
    out = np.full((48, columns), np.nan)
    assert parallel.matmul_tn(a, b, out) is out
    np.testing.assert_allclose(out, a.T @ b, rtol=1e-12, atol=1e-12)
    w = rng.standard_normal((48, columns))
    out = np.full((rows, columns), np.nan)
    assert parallel.matmul(a, w, out) is out
    np.testing.assert_allclose(out, a @ w, rtol=1e-12, atol=1e-12)


@pytest.fixture
def team(monkeypatch):
    """Pretend Numba's thread team has this many threads (0: no usable team)."""
    def use(size):
        monkeypatch.setattr(parallel, "_team_size", size)
        monkeypatch.setattr(parallel, "_team_pid", os.getpid())
    return use


@pytest.fixture
def l2(monkeypatch):
    """Pretend a core's L2 cache holds this many bytes (None: unknown)."""
    from charrnn import machine

    def use(size):
        monkeypatch.setattr(machine, "l2_cache_bytes", lambda: size)
    return use


@pytest.mark.parametrize("l2_size", [2 << 20, None])  # the second: from 384 units on
def test_batch_pieces_split_rows_below_384_units_and_wide_layers_their_units(
        threads, team, l2, l2_size):
    threads(2)
    team(2)
    l2(l2_size)
    assert parallel.batch_pieces(50, 128) == [(0, 25), (25, 50)]
    assert parallel.batch_pieces(50, 512) == [(0, 50)]
    assert parallel.layer_units(512) == [(0, 256), (256, 512)]
    assert parallel.batch_pieces(1, 128) == [(0, 1)]
    assert parallel.layer_units(128) == [(0, 64), (64, 128)]  # B1: two threads on the team
    assert parallel.layer_units(64) == [(0, 64)]
    assert parallel.batch_pieces(32, 256) == [(0, 16), (16, 32)]
    assert parallel.batch_pieces(1, 256) == [(0, 1)]  # scoring one stream
    assert parallel.layer_units(256) == [(0, 128), (128, 256)]
    team(0)  # no team: parts go to the pool, whose hand-offs cost more at 128 units
    assert parallel.layer_units(128) == [(0, 128)]
    assert parallel.layer_units(256) == [(0, 128), (128, 256)]
    threads(3)
    team(2)  # more parts than the team has threads: the pool, and so one thread at 128
    assert parallel.layer_units(128) == [(0, 128)]
    threads(1)
    assert parallel.batch_pieces(50, 128) == [(0, 50)]
    assert parallel.layer_units(512) == [(0, 512)]


def test_units_split_when_a_share_of_wh_fits_the_l2_and_the_whole_does_not(threads, l2):
    threads(2)
    l2(1 << 20)  # 1 MiB per core
    assert parallel.batch_pieces(50, 256) == [(0, 25), (25, 50)]  # Wh 1 MiB: fits whole
    assert parallel.batch_pieces(50, 384) == [(0, 25), (25, 50)]  # a half, 1.1 MiB, does not
    assert parallel.batch_pieces(50, 512) == [(0, 25), (25, 50)]
    assert parallel.batch_pieces(50, 300) == [(0, 50)]  # 1.4 MiB, a half 0.7 MiB
    assert parallel.batch_pieces(50, 384, gates=3) == [(0, 50)]  # a GRU: 1.7 MiB
    assert parallel.batch_pieces(50, 256, itemsize=8) == [(0, 50)]  # float64: 2 MiB
    l2(2 << 20)
    assert parallel.batch_pieces(50, 384) == [(0, 50)]
    assert parallel.batch_pieces(50, 512) == [(0, 50)]  # a half is 2 MiB
    assert parallel.batch_pieces(50, 768) == [(0, 25), (25, 50)]
    threads(8)  # an eighth, 1.1 MiB, fits where a half did not
    assert parallel.batch_pieces(50, 768) == [(0, 50)]
    threads(1)
    assert parallel.batch_pieces(50, 384) == [(0, 50)]


@pytest.mark.parametrize("text, size", [("1024K", 1 << 20), ("2M", 2 << 20), ("48K\n", 48 << 10),
                                        ("65536", 65536)])
def test_cache_sizes_read_as_sysfs_writes_them(text, size):
    from charrnn.machine import cache_size_bytes
    assert cache_size_bytes(text) == size


@pytest.mark.parametrize("text", ["", "K", "big", "-1K", "0"])
def test_a_cache_size_that_is_not_one_is_refused(text):
    from charrnn.machine import cache_size_bytes
    with pytest.raises(ValueError):
        cache_size_bytes(text)


def test_this_machine_l2_is_read_or_unknown():
    from charrnn.machine import l2_cache_bytes
    size = l2_cache_bytes()
    assert size is None or (64 << 10) <= size <= (64 << 20)


def test_the_team_runs_parts_that_each_get_a_thread_of_it(threads, team):
    team(2)
    assert not parallel.team_runs(1)  # one part: called directly
    assert parallel.team_runs(2) and not parallel.team_runs(3)
    threads(2)
    assert parallel.compiled_ranges(1000, 400, 100) == ([(0, 500), (500, 1000)], True)
    assert parallel.compiled_ranges(150, 400, 100) == ([(0, 150)], False)
    team(0)
    assert not parallel.team_runs(2)
    assert parallel.compiled_ranges(1000, 400, 100) == ([(0, 500), (500, 1000)], False)
    assert parallel.compiled_ranges(700, 400, 100) == ([(0, 700)], False)


def run_script(script, **env):
    """Run a Python script in a fresh process (the threading layer and the OpenMP
    runtime load once per process), with a timeout: a part waiting for a partner that
    never comes would spin forever. Returns its stdout's words."""
    environment = {key: value for key, value in os.environ.items()
                   if key not in ("GOMP_SPINCOUNT", "OMP_DYNAMIC", "OMP_THREAD_LIMIT")}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env={**environment, **env}, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


@pytest.mark.slow  # a subprocess or a compile: `make test-fast` leaves it out
def test_the_team_is_gnu_openmp_and_leaves_the_environment_as_it_was():
    script = ("import os; from charrnn import parallel; size = parallel.team_size(); "
              "print(size, os.environ.get('GOMP_SPINCOUNT'))")
    size, spin = run_script(script)
    if size == "0":
        pytest.skip("no GNU OpenMP runtime here")
    # libgomp read charrnn's short spin when it loaded; children get their own default
    assert spin == "None"
    assert run_script(script, GOMP_SPINCOUNT="77") == [size, "77"]  # the user's stays
    # OpenMP could start fewer threads than parts: no team, or one of a single thread
    assert run_script(script, OMP_DYNAMIC="true")[0] == "0"
    assert run_script(script, OMP_THREAD_LIMIT="1")[0] in ("0", "1")


@pytest.mark.slow  # a subprocess or a compile: `make test-fast` leaves it out
def test_the_team_gives_each_part_a_thread_whatever_the_caller_set_before():
    # Two threads, a batch of one row at 128 units: its layers' parts run on the team,
    # even after the caller shrank Numba's team to one thread or asked for chunks.
    script = """
import numba
import numpy as np
from charrnn import parallel
from charrnn.model import Model, ModelConfig
parallel.set_thread_count(2)
if parallel.team_size() < 2:
    print("skip"); raise SystemExit
numba.set_num_threads(1)
numba.set_parallel_chunksize(4)
model = Model(ModelConfig("lstm", 5, 128, 2, 0))
model.initialise(np.random.default_rng(0))
x = np.zeros((1, 6), np.int64)
h, c = model.zero_state(1)
assert parallel.team_runs(2) and numba.get_num_threads() == 2
model.forward(x, x, h, c)
model.backward()
print("done")
"""
    result = run_script(script)
    if result == ["skip"]:
        pytest.skip("no GNU OpenMP team here")
    assert result == ["done"]


def test_inside_a_piece_work_stays_on_its_thread(threads):
    threads(3)
    seen = parallel.run_parts(lambda k: (k, parallel.thread_count()), [(0,), (1,)])
    assert seen == [(0, 3), (1, 3)]  # results in order; outside pieces, all threads

    def piece(k):
        with parallel.one_thread_per_piece(2):
            return parallel.thread_count(), len(parallel.row_ranges(1000, 1))
    assert parallel.run_parts(piece, [(0,), (1,)]) == [(1, 1), (1, 1)]
    assert parallel.thread_count() == 3  # and back to all threads afterwards


@pytest.mark.parametrize("pause", [0.0, 0.05])  # the workers spinning, then asleep
def test_parts_run_on_threads_of_their_own_and_return_in_order(threads, pause):
    import time
    threads(3)
    for _ in range(3):
        time.sleep(pause)  # longer than the workers spin: they must be woken
        seen = parallel.run_parts(lambda k: (k, threading.get_ident()), [(0,), (1,), (2,)])
        assert [k for k, _ in seen] == [0, 1, 2]
        assert len({ident for _, ident in seen}) == 3
        assert seen[0][1] == threading.get_ident()  # the first part on the caller's thread


def test_an_error_in_any_part_comes_out_after_every_part_has_returned(threads):
    import time
    threads(2)
    finished = []

    def part(k):
        if k == 1:
            raise KeyError("part 1")
        time.sleep(0.05)
        finished.append(k)
    with pytest.raises(KeyError, match="part 1"):
        parallel.run_parts(part, [(0,), (1,)])
    assert finished == [0]
    assert parallel.run_parts(lambda k: k * k, [(2,), (3,)]) == [4, 9]  # still serving


def test_callers_on_two_threads_both_get_their_parts_run(threads):
    threads(2)
    results = {}

    def caller(name):
        results[name] = [parallel.run_parts(lambda k: (name, k), [(0,), (1,)])
                         for _ in range(200)][-1]
    callers = [threading.Thread(target=caller, args=(name,)) for name in "ab"]
    for thread in callers:
        thread.start()
    for thread in callers:
        thread.join(60)
    assert results == {"a": [("a", 0), ("a", 1)], "b": [("b", 0), ("b", 1)]}


def test_a_part_that_raises_releases_the_meetings_of_the_others(threads):
    # Part 1 fails before its first meeting; part 0 must not wait for it forever (it
    # would spin in compiled code, deaf even to Ctrl-C): the error comes out instead.
    threads(2)
    counters = np.zeros(1, np.int64)
    passed = []

    def part(k):
        if k == 1:
            raise ValueError("part 1 stopped")
        for meeting in range(1, 4):
            meet(counters, 2, meeting)
        passed.append(k)

    outcome = []

    def run():
        try:
            parallel.run_meeting_parts(part, [(0,), (1,)], counters)
        except ValueError as error:
            outcome.append(str(error))
    watcher = threading.Thread(target=run, daemon=True)
    watcher.start()
    watcher.join(30)
    assert not watcher.is_alive(), "part 0 still waits for the part that raised"
    assert outcome == ["part 1 stopped"] and passed == [0]


@pytest.mark.slow  # a subprocess or a compile: `make test-fast` leaves it out
@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork() here")
def test_a_child_forked_after_the_team_and_the_pool_started_trains_on_a_new_pool():
    # GNU OpenMP is not fork-safe: Numba ends a forked child that enters a parallel
    # region with SIGTERM. A batch-1 step in such a child must use the pool instead, and
    # the parent's pool threads do not exist in the child.
    script = """
import os, sys
import numpy as np
from charrnn import parallel
from charrnn.model import Model, ModelConfig
parallel.set_thread_count(2)
model = Model(ModelConfig("lstm", 5, 128, 1, 0))
model.initialise(np.random.default_rng(0))
x = np.zeros((1, 3), np.int64)
h, c = model.zero_state(1)
model.forward(x, x, h, c)
model.backward()  # in the parent: the team, when there is one
batch = np.zeros((8, 6), np.int64)
model.forward(batch, batch, *model.zero_state(8))  # and the pool: two batch pieces
wide = Model(ModelConfig("lstm", 5, 256, 1, 0))
wide.initialise(np.random.default_rng(1))
pid = os.fork()
if pid == 0:
    import signal
    signal.alarm(60)  # a child stuck in compiled code ends; the test's timeout is the parent's
    ok = not parallel.team_runs(2) and len(parallel.layer_units(128)) == 1
    model.forward(x, x, h, c)
    model.backward()
    # 256 units split on the pool, whose threads the fork did not copy: a new pool
    ok = ok and len(parallel.layer_units(256)) == 2
    wide.forward(x, x, *wide.zero_state(1))
    wide.backward()
    os._exit(0 if ok else 3)
_, status = os.waitpid(pid, 0)
print(parallel.team_size(), os.waitstatus_to_exitcode(status))
"""
    size, child = run_script(script)
    if size == "0":
        pytest.skip("no GNU OpenMP team here")
    assert child == "0"  # not -15 (SIGTERM), 3 (still on the team) nor a timeout


def test_more_threads_replace_the_workers_and_end_the_old_ones(threads):
    import time
    if parallel._workers is not None:  # start from one worker
        parallel._workers.retire()
        parallel._workers = None
    threads(2)
    parallel.run_parts(lambda k: k, [(0,), (1,)])
    old = [thread for thread in threading.enumerate()
           if thread.name.startswith("charrnn-") and thread.is_alive()]
    threads(4)
    assert parallel.run_parts(lambda k: k, [(k,) for k in range(4)]) == [0, 1, 2, 3]
    deadline = time.monotonic() + 10
    while any(thread.is_alive() for thread in old) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert old and not any(thread.is_alive() for thread in old)


def test_a_part_may_run_parts_of_its_own_even_more_than_there_are_workers(threads):
    # the workers are busy with the outer parts: the inner ones run on the executor,
    # and replacing the workers with a larger set must wait for nobody
    threads(2)

    def outer(k):
        return parallel.run_parts(lambda j: (k, j), [(j,) for j in range(3)])
    done = []
    caller = threading.Thread(target=lambda: done.append(
        parallel.run_parts(outer, [(0,), (1,)])), daemon=True)
    caller.start()
    caller.join(30)
    assert done == [[[(0, 0), (0, 1), (0, 2)], [(1, 0), (1, 1), (1, 2)]]]
