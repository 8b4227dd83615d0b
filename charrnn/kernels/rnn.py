"""Vanilla tanh RNN cell, one row at a time: h = tanh(gx + h_prev @ Wh).

The same Wh is applied at every step, so the gradient reaching step t - k is multiplied
by k Jacobians diag(1 - h^2) Wh^T: it vanishes or explodes with k, which is why training
clips the global gradient norm and why the gated cells exist. acts (H) caches h; aux, c
and bn are unused.
"""

import numpy as np
from numba import njit


@njit(cache=True)
def rnn_row_forward(gx, gh, bn, h_prev, c_prev, h_out, c_out, acts, aux):
    """Inputs: gx (H) input projection with bias, gh (H) h_prev @ Wh. Outputs: h_out (H;
    may alias h_prev), acts (H)."""
    for j in range(h_out.shape[0]):
        h = np.tanh(gx[j] + gh[j])
        acts[j] = h
        h_out[j] = h


@njit(cache=True)
def rnn_row_backward(dh, dc, h_prev, c_prev, acts, aux, dgx, dgh, dh_direct, dc_prev, dbn):
    """Inputs: dh (H), acts (H) from the forward. Outputs: dgx = dgh (H); dh_direct, dc_prev zeroed."""
    for j in range(dh.shape[0]):
        h = acts[j]
        da = dh[j] * (1.0 - h * h)
        dgx[j] = da
        dgh[j] = da
        dh_direct[j] = 0.0
        dc_prev[j] = 0.0
