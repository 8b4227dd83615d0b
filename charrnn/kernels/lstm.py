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
        for j in range(3 * H, 4 * H):
            a[j] = tanh(a[j])
        cp, co, ho, tc = c_prev[n], c_out[n], h_out[n], aux[n]
        for j in range(H):
            co[j] = a[H + j] * cp[j] + a[j] * a[3 * H + j]
        for j in range(H):
            tc[j] = tanh(co[j])
        for j in range(H):
            ho[j] = a[2 * H + j] * tc[j]


@njit(cache=True, error_model="numpy")
def lstm_block_backward(dh, dc, h_prev, c_prev, acts, aux, dgx, dgh, dh_direct, dc_prev, dbn):
    """Inputs: dh, dc (N, H) gradients w.r.t. this step's h and c; h_prev, c_prev (N, H);
    acts (N, 4H) and aux (N, H) from the forward. Outputs: dgx = dgh (N, 4H) gradient
    w.r.t. the gate pre-activations; dh_direct (N, H) zeroed (h_prev reaches h only
    through Wh); dc_prev (N, H). dbn unused (the LSTM has one bias)."""
    N, H = dh.shape
    for n in range(N):
        for j in range(H):
            i = acts[n, j]
            f = acts[n, H + j]
            o = acts[n, 2 * H + j]
            g = acts[n, 3 * H + j]
            tc = aux[n, j]
            dct = dc[n, j] + dh[n, j] * o * (1.0 - tc * tc)
            dai = dct * g * i * (1.0 - i)
            daf = dct * c_prev[n, j] * f * (1.0 - f)
            dao = dh[n, j] * tc * o * (1.0 - o)
            dag = dct * i * (1.0 - g * g)
            dgx[n, j] = dai
            dgx[n, H + j] = daf
            dgx[n, 2 * H + j] = dao
            dgx[n, 3 * H + j] = dag
            dgh[n, j] = dai
            dgh[n, H + j] = daf
            dgh[n, 2 * H + j] = dao
            dgh[n, 3 * H + j] = dag
            dh_direct[n, j] = 0.0
            dc_prev[n, j] = dct * f
