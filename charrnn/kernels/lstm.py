"""LSTM cell: the element-wise math of one time step for a block of N rows.

Gate order in every (.., 4H) array: i (input), f (forget), o (output), g (candidate),
as in jcjohnson/torch-rnn. With a = x @ Wx + b + h_prev @ Wh:
    i, f, o = sigmoid(a_i), sigmoid(a_f), sigmoid(a_o);  g = tanh(a_g)
    c = f * c_prev + i * g;  h = o * tanh(c)
The time loops live in recurrent.py; these functions hold only the element-wise math, so
the batched training path and the one-token sampling path share it.
Caches: acts (N, 4H) holds i, f, o, g after the call; aux (N, H) holds tanh(c).
"""

from numba import njit

from .activations import sigmoid, tanh


@njit(cache=True, error_model="numpy")
def lstm_block_forward(gx, gh, bn, h_prev, c_prev, h_out, c_out, acts, aux):
    """Inputs: gx (N, 4H) input projection with bias, gh (N, 4H) h_prev @ Wh, bn unused,
    h_prev, c_prev (N, H). Outputs: h_out, c_out (N, H), acts (N, 4H), aux (N, H).
    h_out/c_out may alias h_prev/c_prev: each element is read before it is written.
    Written as short passes over few arrays each: LLVM vectorises those, but gives up on
    one loop that touches nine arrays (too many runtime alias checks), measured 1.8x."""
    N, H = h_out.shape
    for n in range(N):
        a, x, r = acts[n], gx[n], gh[n]
        for j in range(4 * H):
            a[j] = x[j] + r[j]
        for j in range(3 * H):
            a[j] = sigmoid(a[j])
        for j in range(H):  # (not range(3H, 4H): LLVM leaves that loop scalar)
            a[3 * H + j] = tanh(a[3 * H + j])
        cp, co, ho, tc = c_prev[n], c_out[n], h_out[n], aux[n]
        for j in range(H):
            co[j] = a[H + j] * cp[j] + a[j] * a[3 * H + j]
        for j in range(H):
            tc[j] = tanh(co[j])
        for j in range(H):
            ho[j] = a[2 * H + j] * tc[j]


@njit(cache=True, error_model="numpy")
def lstm_block_backward(dh, dc, h_prev, c_prev, acts, aux, dgx, dgh, dh_direct, dc_prev, dbn):
    """Inputs: dh (N, H) gradient w.r.t. this step's h; dc (N, H) w.r.t. its c (used as
    scratch: overwritten); h_prev, c_prev (N, H); acts (N, 4H) and aux (N, H) from the
    forward. Outputs: dgx (N, 4H) gradient w.r.t. the gate pre-activations, which is
    also the gradient w.r.t. h_prev @ Wh: callers pass dgh = dgx, and it is not written
    separately; dc_prev (N, H). dh_direct and dbn unused (h_prev reaches h only through
    Wh; the LSTM has one bias). Short passes, as in lstm_block_forward."""
    N, H = dh.shape
    for n in range(N):
        a, d, g, tc, dcn, cp = acts[n], dh[n], dgx[n], aux[n], dc[n], c_prev[n]
        for j in range(H):  # gradient reaching c through h = o * tanh(c), plus dc
            dcn[j] = dcn[j] + d[j] * a[2 * H + j] * (1.0 - tc[j] * tc[j])
        for j in range(H):  # output gate
            o = a[2 * H + j]
            g[2 * H + j] = d[j] * tc[j] * o * (1.0 - o)
        for j in range(H):  # input gate, forget gate, candidate
            i, f, cand = a[j], a[H + j], a[3 * H + j]
            g[j] = dcn[j] * cand * i * (1.0 - i)
            g[H + j] = dcn[j] * cp[j] * f * (1.0 - f)
            g[3 * H + j] = dcn[j] * i * (1.0 - cand * cand)
        dcp = dc_prev[n]
        for j in range(H):
            dcp[j] = dcn[j] * a[H + j]
