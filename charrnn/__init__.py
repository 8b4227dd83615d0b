"""charrnn: character-level recurrent networks (RNN, GRU, LSTM) on the CPU, compiled by Numba.

Importing this package is cheap: numba is imported only by the modules that run kernels.
"""

__version__ = "0.1.0"

CHECKPOINT_FORMAT_VERSION = 1
