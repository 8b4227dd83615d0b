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
    h_out (N, H; may alias h_prev), acts (N, H); c_out = c_prev (no cell state)."""
    N, H = h_out.shape
    for n in range(N):
        a, x, r = acts[n], gx[n], gh[n]
        for j in range(H):
            a[j] = tanh(x[j] + r[j])
        h_out[n] = a
        c_out[n] = c_prev[n]


@njit(cache=True, error_model="numpy")
def rnn_block_backward(dh, dc, h_prev, c_prev, acts, aux, dgx, dgh, dh_direct, dc_prev, dbn):
    """Inputs: dh (N, H), acts (N, H) from the forward. Outputs: dgx (N, H), which is
    also the gradient w.r.t. h_prev @ Wh (callers pass dgh = dgx); dc_prev zeroed.
    dh_direct and dbn unused."""
    N, H = dh.shape
    for n in range(N):
        a, d, g = acts[n], dh[n], dgx[n]
        for j in range(H):
            g[j] = d[j] * (1.0 - a[j] * a[j])
    dc_prev[:, :] = 0.0
