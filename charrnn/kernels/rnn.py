"""Vanilla tanh RNN cell, one time step for a block of N rows: h = tanh(gx + h_prev @ Wh).

The same Wh is applied at every step, so the gradient reaching step t - k is multiplied
by k Jacobians diag(1 - h^2) Wh^T: it vanishes or explodes with k, which is why training
clips the global gradient norm and why the gated cells exist. acts (N, H) caches h;
aux, c and bn are unused. Each call handles the units j0:j1 (U of them), as in lstm.py.
"""

from numba import njit

from .activations import one_of, tanh


@njit(cache=True, error_model="numpy")
def rnn_block_forward(gx, gh, bn, h_prev, c_prev, h_out, c_out, acts, aux, j0, j1):
    """Inputs: gx (N, H) input projection with bias; gh (N, U) h_prev @ Wh for units
    j0:j1. Outputs at those units: h_out (N, H; may alias h_prev), acts (N, H);
    c_out = c_prev (no cell state)."""
    N, H = h_out.shape
    U = j1 - j0
    for n in range(N):
        a, x, r = acts[n, j0:j1], gx[n, j0:j1], gh[n]
        ho, co, cp = h_out[n, j0:j1], c_out[n, j0:j1], c_prev[n, j0:j1]
        for u in range(U):
            a[u] = tanh(x[u] + r[u])
        for u in range(U):
            ho[u] = a[u]
        for u in range(U):
            co[u] = cp[u]


@njit(cache=True, error_model="numpy")
def rnn_block_backward(dh, dc, h_prev, c_prev, acts, aux, dgx, dgh, dh_direct, dc_prev, dbn,
                       j0, j1):
    """Inputs: dh (N, U) at units j0:j1, acts (N, H) from the forward. Outputs: dgx
    (N, H) at those units, which is also the gradient w.r.t. h_prev @ Wh (callers pass
    dgh = dgx); dc_prev (N, U) zeroed. dh_direct and dbn unused."""
    one = one_of(acts.dtype)
    N, U = dh.shape
    for n in range(N):
        a, d, g = acts[n, j0:j1], dh[n], dgx[n, j0:j1]
        for u in range(U):
            g[u] = d[u] * (one - a[u] * a[u])
    dc_prev[:, :] = 0.0
