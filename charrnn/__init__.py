"""charrnn: character-level recurrent networks (RNN, GRU, LSTM) on the CPU, compiled by Numba.

Importing this package is cheap: numba is imported only by the modules that run kernels.
"""

__version__ = "0.1.0"

CHECKPOINT_FORMAT_VERSION = 1

# The thread-count variables of the BLAS libraries numpy and scipy load.
BLAS_THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def one_blas_thread() -> None:
    """One BLAS thread per call unless the user set otherwise: numpy's and scipy's
    OpenBLAS pools and charrnn's own threads spin-wait against each other on the small
    per-step products (training measured 3.5x slower with all at 2 threads on 2 cores).
    Effective only before numpy is first imported."""
    import os
    for name in BLAS_THREAD_VARIABLES:
        os.environ.setdefault(name, "1")
