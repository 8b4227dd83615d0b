"""Data-parallel benchmark: training chars/s of one process with T threads against
K MPI ranks with T/K threads each, on the same cores and the same global batch.

    python -m charrnn.bench.mpi                       # or: make bench-mpi
    python -m charrnn.bench.mpi --runs 1x2,2x1,2x2 --seconds 10 --repeats 3

Each run is a child process (`mpiexec -n K python -m charrnn.bench.mpi --worker` for
K > 1): the default model (LSTM 2x256, embedding 64, vocabulary 65, batch 32 x 64, as
`charrnn train` defaults) trains on random ids. Every rank burns in (compiles, warms
caches), rank 0 turns the time budget into a step count that all ranks run (a rank
that stopped on its own clock would leave the others waiting in the allreduce), and
the slowest rank's time counts. The runs take turns, `--repeats` rounds, and each
keeps its best round, so a burst of load elsewhere on the machine hurts no run more than
another; their ratio is the figure to quote. Needs the mpi extra (`make install-mpi`)
for K > 1.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

from ..runtime import BLAS_THREAD_VARIABLES

VOCAB = 65
MODEL = {"cell": "lstm", "hidden": 256, "layers": 2, "embed": 64}  # train's defaults
BATCH = (32, 64)  # (N streams, T chars): train's defaults
BURN_IN = 3


def worker(threads: int, seconds: float) -> None:
    """One rank of a run: prints one JSON line (rank 0) with the run's chars/s."""
    from .. import parallel
    from ..distributed import communicator
    from ..model import Model, ModelConfig
    from ..trainer import Trainer, TrainOptions
    from ..vocab import Vocab

    parallel.set_thread_count(threads)
    comm = communicator()
    rng = np.random.default_rng(0)
    ids = rng.integers(0, VOCAB, 2_000_000).astype(np.uint8)  # (2M,) random text
    vocab = Vocab(tuple(chr(33 + k) for k in range(VOCAB)), (1,) * VOCAB)
    model = Model(ModelConfig(vocab_size=VOCAB, **MODEL))
    model.initialise(rng)
    N, T = BATCH
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(model, vocab, ids, ids[:1000], TrainOptions(seq_len=T, batch_size=N),
                          os.path.join(tmp, "bench.ckpt"), comm=comm)
        for _ in range(BURN_IN):
            trainer.train_step()
        start = time.perf_counter()
        trainer.train_step()
        per_step = time.perf_counter() - start
        steps = comm.bcast(max(5, math.ceil(seconds / per_step)))
        comm.allreduce_sum(np.zeros(1))  # start together
        start = time.perf_counter()
        for _ in range(steps):
            trainer.train_step()
        elapsed = comm.allreduce_max(np.array([time.perf_counter() - start]))[0]
    if comm.rank == 0:
        print(json.dumps({"ranks": comm.size, "threads": threads, "steps": steps,
                          "seconds": elapsed, "chars_per_s": steps * N * T / elapsed}))


def run(ranks: int, threads: int, seconds: float) -> dict:
    command = [sys.executable, "-m", "charrnn.bench.mpi", "--worker", "--threads",
               str(threads), "--seconds", str(seconds)]
    if ranks > 1:
        mpiexec = os.path.join(os.path.dirname(sys.executable), "mpiexec")
        mpiexec = mpiexec if os.path.exists(mpiexec) else shutil.which("mpiexec")
        if not mpiexec:
            sys.exit("bench-mpi: no mpiexec beside this Python or on PATH: make install-mpi")
        command = [mpiexec, "-n", str(ranks), *command]
    env = {**os.environ, **{name: "1" for name in BLAS_THREAD_VARIABLES}}  # as `charrnn`
    result = subprocess.run(command, env=env, capture_output=True, text=True,
                            stdin=subprocess.DEVNULL)
    if result.returncode:
        sys.exit(f"bench-mpi: {' '.join(command)} failed:\n{result.stderr}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def parse_runs(text: str) -> list[tuple[int, int]]:
    try:
        runs = [tuple(int(n) for n in part.split("x")) for part in text.split(",")]
    except ValueError:
        runs = []
    if not runs or any(len(r) != 2 or min(r) < 1 for r in runs):
        raise argparse.ArgumentTypeError(f"{text!r} is not a list like 1x2,2x1 "
                                         "(ranks x threads per rank)")
    return runs


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=parse_runs, default=parse_runs("1x2,2x1"),
                        help="ranks x threads per rank, comma-separated [1x2,2x1]")
    parser.add_argument("--seconds", type=float, default=10.0,
                        help="timed training per run and round, after the burn-in [10]")
    parser.add_argument("--repeats", type=int, default=3,
                        help="rounds; each run keeps its best [3]")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args.threads, args.seconds)
        return
    from .speed import blas_description
    N, T = BATCH
    print(f"model: {MODEL['cell']} {MODEL['layers']}x{MODEL['hidden']}, embedding "
          f"{MODEL['embed']}, vocabulary {VOCAB}, global batch {N}x{T}, float32; "
          f"{os.cpu_count()} cores; BLAS {blas_description()}, one thread per call in "
          "the runs (as charrnn sets it)")
    rounds = [[run(ranks, threads, args.seconds) for ranks, threads in args.runs]
              for _ in range(max(1, args.repeats))]
    results = [max(tries, key=lambda r: r["chars_per_s"]) for tries in zip(*rounds)]
    peer = results[0]["chars_per_s"]
    print(f"{'ranks x threads':>16}  {'chars/s':>9}  {'steps':>5}  vs {args.runs[0][0]}x"
          f"{args.runs[0][1]}")
    for result in results:
        print(f"{result['ranks']:>10} x {result['threads']:<3}  {result['chars_per_s']:>9,.0f}  "
              f"{result['steps']:>5}  {result['chars_per_s'] / peer:.2f}x")


if __name__ == "__main__":
    main()
