"""Data-parallel training across processes on MPI (optional: `pip install 'charrnn[mpi]'`).

The trainer talks to a communicator with four collective operations; a single process
uses LocalComm, whose operations do nothing, and never imports mpi4py. Under
`mpiexec -n K`, MPIComm wraps MPI.COMM_WORLD: gradients travel as one flat buffer in
one Allreduce per step, so every rank applies the same Adam update to the same weights.
"""

from __future__ import annotations

import os
import sys

import numpy as np

# Variables the common MPI launchers set in every rank's environment.
_SIZE_VARIABLES = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE", "MPI_LOCALNRANKS",
                   "SLURM_NTASKS")


class LocalComm:
    """One process: every collective is the identity."""
    rank = 0
    size = 1

    def allreduce_sum(self, array: np.ndarray) -> np.ndarray:
        return array

    def allgather_rows(self, local: np.ndarray, axis: int) -> np.ndarray:
        return local

    def any(self, flag: bool) -> bool:
        return bool(flag)

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

    def allgather_rows(self, local: np.ndarray, axis: int) -> np.ndarray:
        """Concatenate every rank's `local` along `axis`, in rank order."""
        pieces = self._comm.allgather(np.ascontiguousarray(local))
        return np.concatenate(pieces, axis=axis)

    def any(self, flag: bool) -> bool:
        """True on every rank if flag is true on any rank (keeps decisions in step)."""
        return bool(self._comm.allreduce(int(bool(flag)), op=self._mpi.MAX))

    def abort(self, code: int = 1) -> None:
        """End every rank: a rank that fails must not leave the others waiting."""
        self._comm.Abort(code)


def launched_by_mpi() -> bool:
    return any(int(os.environ.get(name, "1") or 1) > 1 for name in _SIZE_VARIABLES)


def communicator():
    """MPIComm when started by mpiexec with more than one rank, else LocalComm."""
    if not launched_by_mpi():
        return LocalComm()
    try:
        return MPIComm()
    except ImportError:
        raise RuntimeError("started by mpiexec but mpi4py is missing: "
                           "pip install 'charrnn[mpi]' (or make install-mpi)") from None


def rank_rows(total: int, rank: int, size: int) -> tuple[int, int]:
    """The contiguous share [lo, hi) of `total` rows (e.g. batch streams) owned by rank."""
    return rank * total // size, (rank + 1) * total // size
