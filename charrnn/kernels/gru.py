"""GRU cell: the element-wise math of one time step for a block of N rows.

Gate order in every (.., 3H) array: r (reset), z (update), n (candidate). The reset gate
acts on the recurrent product (as in cuDNN and PyTorch), so one h_prev @ Wh per step
serves all three gates; the candidate's recurrent part has its own bias bn (H):
    r = sigmoid(gx_r + gh_r);  z = sigmoid(gx_z + gh_z)
    n = tanh(gx_n + r * (gh_n + bn));  h = (1 - z) * n + z * h_prev
Caches: acts (N, 3H) holds r, z, n; aux (N, H) holds gh_n + bn. The c arrays are unused.
"""

from numba import njit

from .activations import sigmoid, tanh


@njit(cache=True, error_model="numpy")
def gru_block_forward(gx, gh, bn, h_prev, c_prev, h_out, c_out, acts, aux):
    """Inputs: gx (N, 3H) input projection with bias, gh (N, 3H) h_prev @ Wh, bn (H),
    h_prev (N, H). Outputs: h_out (N, H; may alias h_prev), acts (N, 3H), aux (N, H);
    c_out = c_prev (the GRU has no cell state). Short passes, as in the LSTM."""
    N, H = h_out.shape
    for n in range(N):
        a, x, r, hn, hp, ho = acts[n], gx[n], gh[n], aux[n], h_prev[n], h_out[n]
        for j in range(2 * H):  # reset and update gates
            a[j] = sigmoid(x[j] + r[j])
        for j in range(H):
            hn[j] = r[2 * H + j] + bn[j]
        for j in range(H):  # candidate
            a[2 * H + j] = tanh(x[2 * H + j] + a[j] * hn[j])
        for j in range(H):
            z = a[H + j]
            ho[j] = (1.0 - z) * a[2 * H + j] + z * hp[j]
        c_out[n] = c_prev[n]


@njit(cache=True, error_model="numpy")
def gru_block_backward(dh, dc, h_prev, c_prev, acts, aux, dgx, dgh, dh_direct, dc_prev, dbn):
    """Inputs: dh (N, H) gradient w.r.t. this step's h; h_prev (N, H); acts (N, 3H),
    aux (N, H). Outputs: dgx (N, 3H) gradient w.r.t. the input projection, dgh (N, 3H)
    w.r.t. h_prev @ Wh, dh_direct (N, H) the part of dh_prev through z * h_prev,
    dc_prev (N, H) zeroed; dbn (H) accumulated."""
    N, H = dh.shape
    for n in range(N):
        for j in range(H):
            r = acts[n, j]
            z = acts[n, H + j]
            cand = acts[n, 2 * H + j]
            hn = aux[n, j]
            dan = dh[n, j] * (1.0 - z) * (1.0 - cand * cand)
            daz = dh[n, j] * (h_prev[n, j] - cand) * z * (1.0 - z)
            dar = dan * hn * r * (1.0 - r)
            dgx[n, j] = dar
            dgx[n, H + j] = daz
            dgx[n, 2 * H + j] = dan
            dgh[n, j] = dar
            dgh[n, H + j] = daz
            dgh[n, 2 * H + j] = dan * r
            dbn[j] += dan * r
            dh_direct[n, j] = dh[n, j] * z
            dc_prev[n, j] = 0.0
