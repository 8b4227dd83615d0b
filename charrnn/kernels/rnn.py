"""Vanilla tanh RNN cell, one time step for a block of N rows: h = tanh(gx + h_prev @ Wh).

The same Wh is applied at every step, so the gradient reaching step t - k is multiplied
by k Jacobians diag(1 - h^2) Wh^T: it vanishes or explodes with k, which is why training
clips the global gradient norm and why the gated cells exist. acts (N, H) caches h;
aux, c and bn are unused.
"""

from numba import njit

from .activations import tanh


@njit(cache=True, error_model="numpy")
def rnn_block_forward(gx, gh, bn, h_prev, c_prev, h_out, c_out, acts, aux):
    """Inputs: gx (N, H) input projection with bias, gh (N, H) h_prev @ Wh. Outputs:
    h_out (N, H; may alias h_prev), acts (N, H); c_out = c_prev."""
    N, H = h_out.shape
    for n in range(N):
        for j in range(H):
            h = tanh(gx[n, j] + gh[n, j])
            acts[n, j] = h
            h_out[n, j] = h
            c_out[n, j] = c_prev[n, j]  # no cell state: carry c unchanged


@njit(cache=True, error_model="numpy")
def rnn_block_backward(dh, dc, h_prev, c_prev, acts, aux, dgx, dgh, dh_direct, dc_prev, dbn):
    """Inputs: dh (N, H), acts (N, H) from the forward. Outputs: dgx = dgh (N, H);
    dh_direct, dc_prev zeroed."""
    N, H = dh.shape
    for n in range(N):
        for j in range(H):
            h = acts[n, j]
            da = dh[n, j] * (1.0 - h * h)
            dgx[n, j] = da
            dgh[n, j] = da
            dh_direct[n, j] = 0.0
            dc_prev[n, j] = 0.0
