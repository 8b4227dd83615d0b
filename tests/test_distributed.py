"""Data-parallel training: K ranks train the model one process would.

Two layers of tests. In-process, K ranks run as K threads joined by ThreadComm (the
communicator's collectives over a barrier), so the trainer's share-out, gradient
reduction, dropout slicing, state gathering and resume across K are checked on every
machine. Then the real thing: `mpiexec -n 2 charrnn train` through the installed console
script (skipped with a message where mpi4py or mpiexec is absent; `make install`
installs them), against the same run on one process, across --resume with K changed,
and with a rank that fails or is killed, which must end the job rather than hang.

Tolerance: K ranks sum the same float32 gradient terms in another order, so weights
differ from K = 1 by float32 rounding carried through training. Measured: under 3e-7
after 40 steps on weights of order 1; asserted: ATOL = 1e-5 (about 100 float32 ulps at
1.0), far below what one real difference (a row, a mask, a scale) makes.
"""

import functools
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from test_trainer import text_of

from charrnn.batches import split_ids
from charrnn.checkpoint import load_trained
from charrnn.corpus import Corpus, corpus_ids
from charrnn.distributed import BroadcastReader, LocalComm, rank_rows
from charrnn.model import Model, ModelConfig
from charrnn.trainer import Trainer, TrainOptions, evaluate
from charrnn.vocab import Vocab

ATOL = 1e-5
BIN = Path(sys.executable).parent
SMALL = ["--hidden", "16", "--layers", "2", "--embed", "8", "--seq-len", "16",
         "--batch-size", "8", "--threads", "1", "--seed", "3"]
TIMEOUT = 120  # seconds for any one command: a hang fails the test instead of CI


# ------------------------------------------------------------------ K ranks as threads
class Board:
    """What the threads of one job share: a barrier and one slot per rank."""

    def __init__(self, size):
        self.barrier = threading.Barrier(size, timeout=60)
        self.slots = [None] * size


class ThreadComm:
    """The communicator's collectives for K threads of this process: every rank posts
    its value, waits for the others, and combines all of them in rank order (as MPI
    does, so every rank gets the same bytes)."""

    def __init__(self, rank, board):
        self.rank, self.size, self.board = rank, len(board.slots), board

    def _everyone(self, value):
        self.board.slots[self.rank] = value
        self.board.barrier.wait()
        values = list(self.board.slots)
        self.board.barrier.wait()  # nobody posts the next value before all have read
        return values

    def allreduce_sum(self, array):
        array[...] = functools.reduce(np.add, self._everyone(array.copy()))
        return array

    def allreduce_max(self, array):
        array[...] = functools.reduce(np.maximum, self._everyone(array.copy()))
        return array

    def allgather(self, value):
        return self._everyone(value)

    def allgather_rows(self, local, axis):
        return np.concatenate(self._everyone(local.copy()), axis=axis)

    def bcast(self, value):
        return self._everyone(value)[0]

    def local_size(self):
        return self.size


def on_ranks(size, work):
    """Run work(comm) on `size` threads, one rank each; returns their results in rank
    order, or raises the first error (the barrier is broken so no rank waits for ever)."""
    board = Board(size)
    results, errors = [None] * size, []

    def rank_main(rank):
        try:
            results[rank] = work(ThreadComm(rank, board))
        except BaseException as error:  # noqa: BLE001 - handed to the main thread
            errors.append(error)
            board.barrier.abort()

    threads = [threading.Thread(target=rank_main, args=(rank,)) for rank in range(size)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT)
    if errors:
        raise errors[0]
    assert not any(thread.is_alive() for thread in threads), "a rank hangs"
    return results


@pytest.fixture(scope="module")
def data():
    text = text_of()
    vocab = Vocab.from_text(text)
    ids, _ = corpus_ids(text, vocab)
    return vocab, *split_ids(ids, 0.1)


def make_trainer(data, out, comm=None, resume_from=None, cls=Trainer, **options):
    """A tiny LSTM with dropout; its streams wrap after 28 steps."""
    vocab, train_ids, val_ids = data
    state = arrays = None
    if resume_from:
        model, _, record, arrays = load_trained(resume_from)
        from charrnn.trainer import TrainState
        state = TrainState(**record["state"])
    else:
        model = Model(ModelConfig(cell="lstm", vocab_size=vocab.size, hidden=16, layers=2,
                                  embed=8, dropout=0.1))
        model.initialise(np.random.default_rng(0), vocab.counts)
    options = TrainOptions(**{"seq_len": 16, "batch_size": 8, "eval_every": 7,
                              "save_every": 10, **options})
    return cls(model, vocab, train_ids, val_ids, options, str(out), state, arrays, comm)


def checkpoint(path):
    model, _, record, arrays = load_trained(path)
    return {"params": model.flat, **arrays}, record["state"]


def assert_close_runs(a, b):
    """Two checkpoints of the same run made with different K."""
    (arrays_a, state_a), (arrays_b, state_b) = a, b
    for key in ("step", "cursor", "chars_seen", "rng_state", "best_step"):
        assert state_a[key] == state_b[key], key
    assert set(arrays_a) == set(arrays_b)
    for name in arrays_a:
        np.testing.assert_allclose(arrays_b[name], arrays_a[name], rtol=0, atol=ATOL,
                                   err_msg=name)
    # (A run cut in two also evaluates where it was cut.)
    val_a = {h["step"]: h["val_bpc"] for h in state_a["history"]}
    val_b = {h["step"]: h["val_bpc"] for h in state_b["history"]}
    common = sorted(set(val_a) & set(val_b))
    assert common[-1] == state_a["step"]
    np.testing.assert_allclose([val_b[k] for k in common], [val_a[k] for k in common],
                               rtol=1e-5)


def test_rank_rows_cut_the_batch_into_contiguous_nearly_equal_shares():
    for total in (1, 7, 8, 32):
        for size in range(1, total + 1):
            shares = [rank_rows(total, rank, size) for rank in range(size)]
            assert shares[0][0] == 0 and shares[-1][1] == total
            assert all(a[1] == b[0] for a, b in zip(shares, shares[1:]))
            assert max(hi - lo for lo, hi in shares) - min(hi - lo for lo, hi in shares) <= 1


@pytest.mark.parametrize("size", [2, 3])  # 3 ranks share 8 streams unevenly: 2, 3, 3
def test_k_ranks_train_the_weights_one_process_trains(data, tmp_path, size):
    assert make_trainer(data, tmp_path / "one.ckpt", steps=40).run() == "steps"

    def work(comm):
        trainer = make_trainer(data, tmp_path / "k.ckpt", comm, steps=40)
        return trainer.run(), trainer

    reasons, trainers = zip(*on_ranks(size, work))
    assert reasons == ("steps",) * size
    assert [(t.lo, t.hi) for t in trainers] == [rank_rows(8, r, size) for r in range(size)]
    for trainer in trainers[1:]:  # the same optimizer step everywhere: identical replicas
        assert np.array_equal(trainer.model.flat, trainers[0].model.flat)
        assert np.array_equal(trainer.adam.v, trainers[0].adam.v)
    assert_close_runs(checkpoint(tmp_path / "one.ckpt"), checkpoint(tmp_path / "k.ckpt"))


def test_a_wrong_share_would_show(data, tmp_path):
    # The tolerance is not loose: the same run with one dropout mask row shifted
    # between ranks is far outside it.
    class ShiftedMasks(Trainer):
        def dropout_masks(self):
            masks = super().dropout_masks()
            return np.roll(masks, 1, axis=2) if self.comm.rank == 1 else masks

    one = make_trainer(data, tmp_path / "one.ckpt", steps=10)
    one.run()

    def work(comm):
        shifted = make_trainer(data, tmp_path / "k.ckpt", comm, cls=ShiftedMasks, steps=10)
        shifted.run()
        return shifted.model.flat

    flat = on_ranks(2, work)[0]
    assert np.abs(flat - one.model.flat).max() > 100 * ATOL


@pytest.mark.parametrize("first, second", [(2, 1), (1, 3), (3, 2)])
def test_resume_with_another_number_of_ranks(data, tmp_path, first, second):
    whole = make_trainer(data, tmp_path / "whole.ckpt", steps=40)
    whole.run()
    out = tmp_path / "split.ckpt"

    def leg(size, work):
        return on_ranks(size, work) if size > 1 else [work(LocalComm())]

    leg(first, lambda comm: make_trainer(data, out, comm, steps=20).run())
    assert checkpoint(out)[0]["state_h"].shape == (2, 8, 16)  # all N streams' state
    leg(second, lambda comm: make_trainer(data, out, comm, resume_from=out, steps=40).run())
    assert_close_runs(checkpoint(tmp_path / "whole.ckpt"), checkpoint(out))


def test_validation_is_split_across_ranks_and_reduced(data):
    vocab, _, val_ids = data
    model = Model(ModelConfig(cell="gru", vocab_size=vocab.size, hidden=16, layers=1,
                              embed=8))
    model.initialise(np.random.default_rng(1), vocab.counts)
    for ids in (val_ids, val_ids[:40]):  # 8 streams; 2 streams, so 3 ranks leave one idle
        one = evaluate(model, ids, 8, 16)
        for size in (2, 3):
            values = on_ranks(size, lambda comm, ids=ids: evaluate(model, ids, 8, 16, comm))
            assert len(set(values)) == 1  # every rank gets the same value
            assert values[0] == pytest.approx(one, rel=1e-6)


def test_a_signal_on_one_rank_stops_every_rank_at_the_same_step(data, tmp_path):
    def work(comm):
        trainer = make_trainer(data, tmp_path / "m.ckpt", comm, steps=1000, eval_every=0,
                               save_every=0)
        steps = iter(range(10 ** 6))
        # Rank 1 alone is signalled, before its 6th step.
        stop = (lambda: signal.SIGTERM if next(steps) >= 5 else 0) if comm.rank == 1 \
            else (lambda: 0)
        return trainer.run(stop_requested=stop), trainer.state.step, trainer.stop_signal

    assert on_ranks(2, work) == [("interrupted", 5, signal.SIGTERM)] * 2
    assert checkpoint(tmp_path / "m.ckpt")[1]["step"] == 5


def test_the_clock_is_rank_zeros(data, tmp_path):
    def work(comm):
        trainer = make_trainer(data, tmp_path / "m.ckpt", comm, steps=None, time_limit=0.2,
                               eval_every=0, save_every=0)
        return trainer.run(), trainer.state.step, trainer.elapsed

    (reason, step, elapsed), other = on_ranks(2, work)
    assert reason == "time" and step > 0 and elapsed >= 0.2
    assert other == (reason, step, elapsed)  # the very same reading, not one of its own


def test_a_broadcast_stream_is_read_whole_by_every_rank(tmp_path):
    import io
    data = (text_of(3000) * 3).encode()

    def work(comm):
        source = io.BytesIO(data) if comm.rank == 0 else io.BytesIO(b"not this")
        reader = BroadcastReader(comm, source)
        with Corpus("-", stdin=reader, chunk_bytes=1000) as corpus:
            assert reader.finished and corpus.name == "stdin"
            return corpus.key, corpus.n_chars

    keys = on_ranks(3, work)
    (tmp_path / "c.txt").write_bytes(data)
    with Corpus(str(tmp_path / "c.txt")) as whole:
        assert keys == [(whole.key, whole.n_chars)] * 3


def test_without_a_launcher_there_is_one_process_and_no_mpi4py(tmp_path):
    corpus = tmp_path / "c.txt"
    corpus.write_text(text_of())
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PMI", "OMPI", "PMIX", "MPI_", "SLURM", "HYDRA"))}
    script = ("import sys\n"
              "from charrnn.cli import main\n"
              f"sys.argv = ['charrnn', 'train', {str(corpus)!r}, '-o', "
              f"{str(tmp_path / 'm.ckpt')!r}, '--steps', '2', '--quiet', *{SMALL!r}]\n"
              "try:\n    main()\nexcept SystemExit as end:\n    assert not end.code, end.code\n"
              "print('mpi4py' in sys.modules)\n")
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                            text=True, timeout=TIMEOUT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


# ----------------------------------------------------------------------- real MPI jobs
def mpiexec_or_skip() -> str:
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        pytest.skip("mpi4py is not installed: `make install-mpi` (or pip install "
                    "'charrnn[mpi]') to run the MPI tests")
    found = BIN / "mpiexec"
    found = str(found) if found.exists() else shutil.which("mpiexec")
    if not found:
        pytest.skip("no mpiexec on PATH or beside this Python: pip install mpich")
    if not (BIN / "charrnn").exists():
        pytest.skip(f"{BIN / 'charrnn'} is not installed (run `make install`)")
    return found


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("mpi") / "corpus.txt"
    path.write_text(text_of(), encoding="utf-8")
    return path


def charrnn(ranks, *args, env=None, input=None, fault=None):
    """Run `charrnn train` on `ranks` processes (mpiexec unless 1); a hang fails. fault:
    'RANK:STEP[:kill]' for tests/faulty_charrnn.py."""
    command = [str(BIN / "charrnn"), "train", *map(str, args)]
    if fault:
        command = [sys.executable, str(Path(__file__).parent / "faulty_charrnn.py"), fault,
                   *command[1:]]
    if ranks > 1:
        command = [mpiexec_or_skip(), "-n", str(ranks), *command]
    return subprocess.run(command, env={**os.environ, **(env or {})}, input=input,
                          stdin=None if input is not None else subprocess.DEVNULL,
                          capture_output=True, timeout=TIMEOUT)


def trained(ranks, corpus, out, *args):
    result = charrnn(ranks, corpus, "-o", out, *SMALL, *args)
    assert result.returncode == 0, result.stderr.decode()
    return checkpoint(out)


RUN = ["--dropout", "0.1", "--eval-every", "7", "--save-every", "10", "--warmup", "4"]


@pytest.mark.mpi
def test_two_ranks_give_the_weights_of_one(corpus, tmp_path):
    mpiexec_or_skip()
    one = trained(1, corpus, tmp_path / "one.ckpt", *RUN, "--steps", 40)
    result = charrnn(2, corpus, "-o", tmp_path / "two.ckpt", *SMALL, *RUN, "--steps", 40)
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout == b""
    # Rank 0 alone reports: each line once.
    err = result.stderr.decode().splitlines()
    assert len(err) == len(set(err)) and "done at step 40" in err[-1]
    assert_close_runs(one, checkpoint(tmp_path / "two.ckpt"))


@pytest.mark.mpi
@pytest.mark.parametrize("first, second", [(2, 1), (1, 2)])
def test_resume_with_the_number_of_ranks_changed(corpus, tmp_path, first, second):
    mpiexec_or_skip()
    whole = trained(1, corpus, tmp_path / "whole.ckpt", *RUN, "--steps", 40)
    trained(first, corpus, tmp_path / "split.ckpt", *RUN, "--steps", 20)
    resumed = trained(second, corpus, tmp_path / "split.ckpt", "--resume", "--steps", 40)
    assert_close_runs(whole, resumed)


@pytest.mark.mpi
def test_stdin_on_rank_zero_reaches_every_rank(corpus, tmp_path):
    mpiexec_or_skip()
    path = trained(2, corpus, tmp_path / "path.ckpt", "--steps", 6)
    result = charrnn(2, "-", "-o", tmp_path / "stdin.ckpt", *SMALL, "--steps", 6,
                     input=corpus.read_bytes())
    assert result.returncode == 0, result.stderr.decode()
    for name, array in checkpoint(tmp_path / "stdin.ckpt")[0].items():
        assert np.array_equal(array, path[0][name]), name


@pytest.mark.mpi
def test_a_setup_error_is_reported_once(corpus, tmp_path):
    mpiexec_or_skip()
    (tmp_path / "m.ckpt").write_bytes(b"not a checkpoint")
    result = charrnn(2, corpus, "-o", tmp_path / "m.ckpt", *SMALL)
    err = result.stderr.decode().strip().splitlines()
    assert result.returncode == 1 and len(err) == 1 and "not a charrnn checkpoint" in err[0]
    result = charrnn(2, corpus, "-o", tmp_path / "n.ckpt", *SMALL, "--batch-size", "1")
    err = result.stderr.decode()
    assert result.returncode == 2 and err.count("Error:") == 1 and "2 ranks" in err
    # --log is checked with the output, on rank 0 before the ranks part: no abort
    result = charrnn(2, corpus, "-o", tmp_path / "n.ckpt", *SMALL, "--log", tmp_path / "n.ckpt")
    err = result.stderr.decode()
    assert result.returncode == 2 and err.count("Error:") == 1 and "--log" in err
    assert "Abort" not in err


@pytest.mark.mpi
@pytest.mark.parametrize("how", ["raise", "kill"])
def test_a_failing_rank_ends_the_job_and_the_checkpoint_resumes(corpus, tmp_path, how):
    mpiexec_or_skip()
    out = tmp_path / "m.ckpt"
    fault = "1:7" + (":kill" if how == "kill" else "")
    start = time.monotonic()
    result = charrnn(2, corpus, "-o", out, *SMALL, "--steps", 1000, "--save-every", 3,
                     "--eval-every", 0, "--quiet", fault=fault)
    err = result.stderr.decode()
    assert result.returncode != 0 and time.monotonic() - start < TIMEOUT, err
    if how == "raise":  # our one line comes first; MPI may add its own after it
        assert err.splitlines()[:1] == [
            "Error: rank 1: RuntimeError: fault injected at step 7"], \
            (result.returncode, err)
    assert "Traceback" not in err
    _, state = checkpoint(out)
    # The last save before rank 1 failed: step 6, or step 3 when rank 0 was still
    # writing step 6 as the job was torn down (the rename is atomic: one or the other).
    assert state["step"] in (3, 6)
    resumed = trained(2, corpus, out, "--resume", "--steps", 9)
    assert resumed[1]["step"] == 9


@pytest.mark.mpi
def test_sigterm_to_mpiexec_stops_every_rank_with_a_checkpoint(corpus, tmp_path):
    mpiexec = mpiexec_or_skip()
    out = tmp_path / "m.ckpt"
    process = subprocess.Popen(
        [mpiexec, "-n", "2", str(BIN / "charrnn"), "train", str(corpus), "-o", str(out),
         *SMALL, "--steps", "10000000", "--save-every", "5", "--eval-every", "0"],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + TIMEOUT
        while not out.exists():
            assert process.poll() is None, process.stderr.read().decode()
            assert time.monotonic() < deadline, "no checkpoint"
            time.sleep(0.02)
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=TIMEOUT)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 128 + signal.SIGTERM
    last = err.decode().strip().splitlines()[-1]
    assert "--resume" in last and str(out) in last
    assert checkpoint(out)[1]["step"] >= 5
