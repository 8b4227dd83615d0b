"""Numba kernels: plain array-in, array-out functions, no I/O, no package imports.

Alphabet used everywhere: N batch, T time, D input width, H hidden, G gates per cell,
V vocabulary, L layers. Arrays written in place come last in each signature.
Cell codes (int) select the cell inside compiled loops; `CELL_CODES` maps names to them.
"""

CELL_RNN = 0
CELL_GRU = 1
CELL_LSTM = 2

CELL_CODES = {"rnn": CELL_RNN, "gru": CELL_GRU, "lstm": CELL_LSTM}
# Gate blocks per cell: width of the input/recurrent projections is GATES * H.
CELL_GATES = {"rnn": 1, "gru": 3, "lstm": 4}
