"""LSTM cell: the element-wise math of one time step for a block of N rows.

Gate order in every (.., 4H) array: i (input), f (forget), o (output), g (candidate),
as in jcjohnson/torch-rnn. With a = x @ Wx + b + h_prev @ Wh:
    i, f, o = sigmoid(a_i), sigmoid(a_f), sigmoid(a_o);  g = tanh(a_g)
    c = f * c_prev + i * g;  h = o * tanh(c)
The time loops live in recurrent.py; these functions hold only the element-wise math, so
the batched training path and the one-token sampling path share it.
Caches: acts (N, 4H) holds i, f, o, g after the call; aux (N, H) holds tanh(c).

Each call handles the units j0:j1 (U = j1 - j0 of them), so threads that split a layer's
units share these functions; arrays called full-width span all H units, the others only
these U (see recurrent.py). Loops run over views indexed from 0: an index like
j0 + u might be negative as far as LLVM knows, and Numba's wraparound for negative
indices then keeps the loop scalar (docs/threads-and-kernels.md, "Cells").
"""

from numba import njit

from .activations import one_of, sigmoid, tanh


@njit(cache=True, error_model="numpy")
def lstm_block_forward(gx, gh, bn, h_prev, c_prev, h_out, c_out, acts, aux, j0, j1):
    """Inputs: gx (N, 4H) input projection with bias, full-width; gh (N, 4U) h_prev @ Wh
    for these units, gate-major ([i | f | o | g], U each); bn unused; h_prev, c_prev
    (N, H). Outputs: h_out, c_out (N, H), acts (N, 4H), aux (N, H), units j0:j1 only.
    h_out/c_out may alias h_prev/c_prev: each element is read before it is written.
    Written as short passes over few arrays each: LLVM vectorises those, but gives up on
    one loop that touches nine arrays (too many runtime alias checks). Six passes
    rather than the eleven of one operation each: each pass has its own set-up, and a
    batch piece's cell runs once per row per step (docs/threads-and-kernels.md, "Cells")."""
    N, H = h_out.shape
    U = j1 - j0
    for n in range(N):
        a, x, r = acts[n], gx[n], gh[n]
        for gate in range(3):  # i, f, o: the sum and its sigmoid in one pass each
            start = gate * H + j0
            ag, xg, rg = a[start:start + U], x[start:start + U], r[gate * U:gate * U + U]
            for u in range(U):
                ag[u] = sigmoid(xg[u] + rg[u])
        start = 3 * H + j0
        ag, xg, rg = a[start:start + U], x[start:start + U], r[3 * U:4 * U]
        for u in range(U):
            ag[u] = tanh(xg[u] + rg[u])
        i, f = a[j0:j1], a[H + j0:H + j1]
        o, g = a[2 * H + j0:2 * H + j1], a[3 * H + j0:3 * H + j1]
        cp, co, ho, tc = c_prev[n, j0:j1], c_out[n, j0:j1], h_out[n, j0:j1], aux[n, j0:j1]
        for u in range(U):
            co[u] = f[u] * cp[u] + i[u] * g[u]
        for u in range(U):
            cell = tanh(co[u])
            tc[u] = cell
            ho[u] = o[u] * cell


@njit(cache=True, error_model="numpy")
def lstm_block_backward(dh, dc, h_prev, c_prev, acts, aux, dgx, dgh, dh_direct, dc_prev, dbn,
                        j0, j1):
    """Inputs: dh (N, U) gradient w.r.t. this step's h at units j0:j1; dc (N, U) w.r.t.
    its c (used as scratch: overwritten); h_prev, c_prev (N, H); acts (N, 4H) and
    aux (N, H) from the forward. Outputs: dgx (N, 4H) gradient w.r.t. the gate
    pre-activations at these units, which is also the gradient w.r.t. h_prev @ Wh:
    callers pass dgh = dgx, and it is not written separately; dc_prev (N, U).
    dh_direct and dbn unused (h_prev reaches h only through Wh; the LSTM has one bias).
    Short passes, as in lstm_block_forward."""
    one = one_of(acts.dtype)
    N, H = c_prev.shape
    U = j1 - j0
    for n in range(N):
        a, g = acts[n], dgx[n]
        i, f = a[j0:j1], a[H + j0:H + j1]
        o, cand = a[2 * H + j0:2 * H + j1], a[3 * H + j0:3 * H + j1]
        di, df = g[j0:j1], g[H + j0:H + j1]
        do, dg = g[2 * H + j0:2 * H + j1], g[3 * H + j0:3 * H + j1]
        d, dcn, tc, cp, dcp = dh[n], dc[n], aux[n, j0:j1], c_prev[n, j0:j1], dc_prev[n]
        for u in range(U):  # gradient reaching c through h = o * tanh(c), plus dc
            dcn[u] = dcn[u] + d[u] * o[u] * (one - tc[u] * tc[u])
        for u in range(U):  # output gate
            do[u] = d[u] * tc[u] * o[u] * (one - o[u])
        for u in range(U):
            di[u] = dcn[u] * cand[u] * i[u] * (one - i[u])
        for u in range(U):
            df[u] = dcn[u] * cp[u] * f[u] * (one - f[u])
        for u in range(U):
            dg[u] = dcn[u] * i[u] * (one - cand[u] * cand[u])
        for u in range(U):
            dcp[u] = dcn[u] * f[u]
