"""GRU cell, one row (one batch element, one time step) at a time.

Gate order in every (.., 3H) array: r (reset), z (update), n (candidate). The reset gate
acts on the recurrent product (as in cuDNN and PyTorch), so one h_prev @ Wh per step
serves all three gates; the candidate's recurrent part has its own bias bn (H):
    r = sigmoid(gx_r + gh_r);  z = sigmoid(gx_z + gh_z)
    n = tanh(gx_n + r * (gh_n + bn));  h = (1 - z) * n + z * h_prev
Caches: acts (3H) holds r, z, n; aux (H) holds gh_n + bn. The c arrays are unused.
"""

import numpy as np
from numba import njit

from .lstm import sigmoid


@njit(cache=True)
def gru_row_forward(gx, gh, bn, h_prev, c_prev, h_out, c_out, acts, aux):
    """Inputs: gx (3H) input projection with bias, gh (3H) h_prev @ Wh, bn (H), h_prev (H).
    Outputs: h_out (H; may alias h_prev), acts (3H), aux (H). c_prev/c_out untouched."""
    H = h_out.shape[0]
    for j in range(H):
        r = sigmoid(gx[j] + gh[j])
        z = sigmoid(gx[H + j] + gh[H + j])
        hn = gh[2 * H + j] + bn[j]
        n = np.tanh(gx[2 * H + j] + r * hn)
        acts[j] = r
        acts[H + j] = z
        acts[2 * H + j] = n
        aux[j] = hn
        h_out[j] = (1.0 - z) * n + z * h_prev[j]


@njit(cache=True)
def gru_row_backward(dh, dc, h_prev, c_prev, acts, aux, dgx, dgh, dh_direct, dc_prev, dbn):
    """Inputs: dh (H) gradient w.r.t. this step's h; h_prev (H); acts (3H), aux (H).
    Outputs: dgx (3H) gradient w.r.t. the input projection, dgh (3H) w.r.t. h_prev @ Wh,
    dh_direct (H) the part of dh_prev through z * h_prev, dc_prev (H) zeroed; dbn (H)
    accumulated."""
    H = dh.shape[0]
    for j in range(H):
        r = acts[j]
        z = acts[H + j]
        n = acts[2 * H + j]
        hn = aux[j]
        dan = dh[j] * (1.0 - z) * (1.0 - n * n)
        daz = dh[j] * (h_prev[j] - n) * z * (1.0 - z)
        dar = dan * hn * r * (1.0 - r)
        dgx[j] = dar
        dgx[H + j] = daz
        dgx[2 * H + j] = dan
        dgh[j] = dar
        dgh[H + j] = daz
        dgh[2 * H + j] = dan * r
        dbn[j] += dan * r
        dh_direct[j] = dh[j] * z
        dc_prev[j] = 0.0
