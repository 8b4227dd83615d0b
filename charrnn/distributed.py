"""Data-parallel training across processes on MPI (optional: `pip install 'charrnn[mpi]'`).

The trainer talks to a communicator with a handful of collective operations; a single
process uses LocalComm, whose operations do nothing, and never imports mpi4py. Under
`mpiexec -n K`, MPIComm wraps MPI.COMM_WORLD: gradients travel as one flat buffer in
one Allreduce per step, so every rank applies the same Adam update to the same weights.
The layout follows the usual synchronous data parallelism (Horovod, PyTorch DDP): each
rank owns a contiguous share of the batch (rank_rows), sums of gradients and losses are
reduced, and everything else is computed identically everywhere.

A collective waits for every rank, so a rank that stops early leaves the others waiting
for ever: every decision that ends a run is reduced (or made by rank 0 and shared), and
a failure on one rank alone ends the job through abort().
"""

from __future__ import annotations

import os
import sys

import numpy as np

# Variables the common MPI launchers set in every rank's environment.
# (SLURM_STEP_NUM_TASKS rather than SLURM_NTASKS, which a whole batch script sees.)
_SIZE_VARIABLES = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE", "MPI_LOCALNRANKS",
                   "SLURM_STEP_NUM_TASKS")


class LocalComm:
    """One process: every collective is the identity."""
    rank = 0
    size = 1

    def allreduce_sum(self, array: np.ndarray) -> np.ndarray:
        return array

    def allreduce_max(self, array: np.ndarray) -> np.ndarray:
        return array

    def allgather(self, value) -> list:
        return [value]

    def allgather_rows(self, local: np.ndarray, axis: int) -> np.ndarray:
        return local

    def bcast(self, value):
        return value

    def local_size(self) -> int:
        return 1

    def abort(self, code: int = 1) -> None:
        sys.exit(code)


class MPIComm:
    """All ranks of MPI.COMM_WORLD."""

    def __init__(self):
        from mpi4py import MPI
        self._mpi = MPI
        self._comm = MPI.COMM_WORLD
        self.rank = self._comm.Get_rank()
        self.size = self._comm.Get_size()

    def allreduce_sum(self, array: np.ndarray) -> np.ndarray:
        """Sum a contiguous array over all ranks, in place."""
        self._comm.Allreduce(self._mpi.IN_PLACE, array, op=self._mpi.SUM)
        return array

    def allreduce_max(self, array: np.ndarray) -> np.ndarray:
        """Elementwise maximum over all ranks, in place (flags: any rank raising one)."""
        self._comm.Allreduce(self._mpi.IN_PLACE, array, op=self._mpi.MAX)
        return array

    def allgather(self, value) -> list:
        """Every rank's (small, picklable) value, in rank order."""
        return self._comm.allgather(value)

    def allgather_rows(self, local: np.ndarray, axis: int) -> np.ndarray:
        """Concatenate every rank's `local` along `axis`, in rank order."""
        pieces = self._comm.allgather(np.ascontiguousarray(local))
        return np.concatenate(pieces, axis=axis)

    def bcast(self, value):
        """Rank 0's (picklable) value, on every rank."""
        return self._comm.bcast(value, root=0)

    def local_size(self) -> int:
        """Ranks on this machine (they share its cores)."""
        return self._comm.Split_type(self._mpi.COMM_TYPE_SHARED).Get_size()

    def abort(self, code: int = 1) -> None:
        """End every rank: a rank that fails must not leave the others waiting."""
        sys.stderr.flush()
        self._comm.Abort(code)
        os._exit(code)  # MPICH's Abort can return to the caller before the kill arrives


def launched_by_mpi() -> bool:
    return any(int(os.environ.get(name, "1") or 1) > 1 for name in _SIZE_VARIABLES)


def communicator():
    """MPIComm when started by mpiexec with more than one rank, else LocalComm."""
    if not launched_by_mpi():
        return LocalComm()
    try:
        comm = MPIComm()
    except ImportError:
        raise RuntimeError("started by mpiexec but mpi4py is missing: "
                           "pip install 'charrnn[mpi]' (or make install-mpi)") from None
    return comm if comm.size > 1 else LocalComm()


def rank_rows(total: int, rank: int, size: int) -> tuple[int, int]:
    """The contiguous share [lo, hi) of `total` rows (e.g. batch streams) owned by rank."""
    return rank * total // size, (rank + 1) * total // size


def threads_per_rank(comm, cores: int) -> int:
    """A default --threads: the cores of this machine shared by the ranks running on it
    (two ranks with all cores each would time-slice every step)."""
    return max(1, cores // comm.local_size())


class BroadcastReader:
    """A binary stream of rank 0 (mpiexec gives stdin to rank 0 alone) that every rank
    reads: rank 0 reads each chunk and broadcasts it. Every rank must call read() the
    same number of times, which reading to the end does; `finished` says it did. A read
    error on rank 0 is raised on every rank."""

    def __init__(self, comm, handle):
        self.comm, self.handle, self.finished = comm, handle, False

    def read(self, size: int = -1) -> bytes:
        data = None
        if self.comm.rank == 0:
            try:
                data = self.handle.read(size)
            except OSError as error:
                data = OSError(error.errno, error.strerror or str(error))
        data = self.comm.bcast(data)
        if isinstance(data, OSError):
            self.finished = True
            raise data
        self.finished = not data
        return data


def bcast_checkpoint(comm, loaded):
    """Rank 0's loaded checkpoint (model, vocab, training record, arrays), or None, on
    every rank, so a checkpoint need exist on rank 0's machine only. Sent as plain data:
    a Model's parameters are views into one buffer, which pickling would not keep."""
    if comm.size == 1:
        return loaded
    plain = None
    if comm.rank == 0 and loaded is not None:
        model, vocab, record, arrays = loaded
        plain = (model.config.to_dict(), model.flat, vocab.to_dict(), record, arrays)
    plain = comm.bcast(plain)
    if comm.rank == 0 or plain is None:
        return loaded
    from .model import Model, ModelConfig
    from .vocab import Vocab
    config, flat, vocab, record, arrays = plain
    return Model(ModelConfig.from_dict(config), flat), Vocab.from_dict(vocab), record, arrays
