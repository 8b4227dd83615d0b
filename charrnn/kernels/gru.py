"""GRU cell: the element-wise math of one time step for a block of N rows.

Gate order in every (.., 3H) array: r (reset), z (update), n (candidate). The reset gate
acts on the recurrent product (as in cuDNN and PyTorch), so one h_prev @ Wh per step
serves all three gates; the candidate's recurrent part has its own bias bn (H):
    r = sigmoid(gx_r + gh_r);  z = sigmoid(gx_z + gh_z)
    n = tanh(gx_n + r * (gh_n + bn));  h = (1 - z) * n + z * h_prev
Caches: acts (N, 3H) holds r, z, n; aux (N, H) holds gh_n + bn. The c arrays are unused.
Each call handles the units j0:j1 (U of them), as in lstm.py.
"""

from numba import njit

from .activations import one_of, sigmoid, tanh


@njit(cache=True, error_model="numpy")
def gru_block_forward(gx, gh, bn, h_prev, c_prev, h_out, c_out, acts, aux, j0, j1):
    """Inputs: gx (N, 3H) input projection with bias; gh (N, 3U) h_prev @ Wh for units
    j0:j1, gate-major ([r | z | n], U each); bn (H); h_prev (N, H). Outputs, units j0:j1:
    h_out (N, H; may alias h_prev), acts (N, 3H), aux (N, H); c_out = c_prev (the GRU
    has no cell state). Short passes, as in the LSTM."""
    one = one_of(acts.dtype)
    N, H = h_out.shape
    U = j1 - j0
    for n in range(N):
        a, x, r = acts[n], gx[n], gh[n]
        for gate in range(2):  # reset and update gates
            ag, xg = a[gate * H + j0:gate * H + j1], x[gate * H + j0:gate * H + j1]
            rg = r[gate * U:gate * U + U]
            for u in range(U):
                ag[u] = sigmoid(xg[u] + rg[u])
        reset, update, cand = a[j0:j1], a[H + j0:H + j1], a[2 * H + j0:2 * H + j1]
        hn, rn, bu = aux[n, j0:j1], r[2 * U:3 * U], bn[j0:j1]
        for u in range(U):
            hn[u] = rn[u] + bu[u]
        xn = x[2 * H + j0:2 * H + j1]
        for u in range(U):  # candidate
            cand[u] = tanh(xn[u] + reset[u] * hn[u])
        hp, ho = h_prev[n, j0:j1], h_out[n, j0:j1]
        for u in range(U):
            z = update[u]
            ho[u] = (one - z) * cand[u] + z * hp[u]
        co, cp = c_out[n, j0:j1], c_prev[n, j0:j1]
        for u in range(U):
            co[u] = cp[u]


@njit(cache=True, error_model="numpy")
def gru_block_backward(dh, dc, h_prev, c_prev, acts, aux, dgx, dgh, dh_direct, dc_prev, dbn,
                       j0, j1):
    """Inputs: dh (N, U) gradient w.r.t. this step's h at units j0:j1; h_prev (N, H);
    acts (N, 3H), aux (N, H). Outputs at these units: dgx (N, 3H) gradient w.r.t. the
    input projection, dgh (N, 3H) w.r.t. h_prev @ Wh, dh_direct (N, U) the part of
    dh_prev through z * h_prev, dc_prev (N, U) zeroed; dbn (H) accumulated."""
    one = one_of(acts.dtype)
    N, H = h_prev.shape
    U = j1 - j0
    for n in range(N):
        a, gx_n, gh_n = acts[n], dgx[n], dgh[n]
        reset, update, cand = a[j0:j1], a[H + j0:H + j1], a[2 * H + j0:2 * H + j1]
        dxr, dxz, dxn = gx_n[j0:j1], gx_n[H + j0:H + j1], gx_n[2 * H + j0:2 * H + j1]
        dhr, dhz, dhn = gh_n[j0:j1], gh_n[H + j0:H + j1], gh_n[2 * H + j0:2 * H + j1]
        d, hn, hp, db = dh[n], aux[n, j0:j1], h_prev[n, j0:j1], dbn[j0:j1]
        direct, dcp = dh_direct[n], dc_prev[n]
        for u in range(U):
            r, z, c = reset[u], update[u], cand[u]
            dan = d[u] * (one - z) * (one - c * c)
            daz = d[u] * (hp[u] - c) * z * (one - z)
            dar = dan * hn[u] * r * (one - r)
            dxr[u] = dar
            dxz[u] = daz
            dxn[u] = dan
            dhr[u] = dar
            dhz[u] = daz
            dhn[u] = dan * r
            db[u] += dan * r
            direct[u] = d[u] * z
            dcp[u] = 0.0
