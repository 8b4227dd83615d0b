"""LSTM cell, one row (one batch element, one time step) at a time.

Gate order in every (.., 4H) array: i (input), f (forget), o (output), g (candidate),
as in jcjohnson/torch-rnn. With a = x @ Wx + b + h_prev @ Wh:
    i, f, o = sigmoid(a_i), sigmoid(a_f), sigmoid(a_o);  g = tanh(a_g)
    c = f * c_prev + i * g;  h = o * tanh(c)
The time loops live in recurrent.py; these functions hold only the element-wise math, so
the batched training path and the one-step sampling path share it.
Caches: acts (4H) holds i, f, o, g after the call; aux (H) holds tanh(c).
"""

import numpy as np
from numba import njit


@njit(cache=True, inline="always")
def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


@njit(cache=True)
def lstm_row_forward(gx, gh, bn, h_prev, c_prev, h_out, c_out, acts, aux):
    """Inputs: gx (4H) input projection with bias, gh (4H) h_prev @ Wh, bn unused, h_prev,
    c_prev (H). Outputs: h_out, c_out (H), acts (4H), aux (H). h_out/c_out may alias
    h_prev/c_prev: each element is read before it is written."""
    H = h_out.shape[0]
    for j in range(H):
        i = sigmoid(gx[j] + gh[j])
        f = sigmoid(gx[H + j] + gh[H + j])
        o = sigmoid(gx[2 * H + j] + gh[2 * H + j])
        g = np.tanh(gx[3 * H + j] + gh[3 * H + j])
        c = f * c_prev[j] + i * g
        tc = np.tanh(c)
        acts[j] = i
        acts[H + j] = f
        acts[2 * H + j] = o
        acts[3 * H + j] = g
        aux[j] = tc
        c_out[j] = c
        h_out[j] = o * tc


@njit(cache=True)
def lstm_row_backward(dh, dc, h_prev, c_prev, acts, aux, dgx, dgh, dh_direct, dc_prev, dbn):
    """Inputs: dh, dc (H) gradients w.r.t. this step's h and c; h_prev, c_prev (H); acts
    (4H) and aux (H) from the forward. Outputs: dgx = dgh (4H) gradient w.r.t. the gate
    pre-activations, dh_direct (H) zeroed (h_prev reaches h only through Wh), dc_prev (H). dbn unused (the LSTM has one bias)."""
    H = dh.shape[0]
    for j in range(H):
        i = acts[j]
        f = acts[H + j]
        o = acts[2 * H + j]
        g = acts[3 * H + j]
        tc = aux[j]
        dct = dc[j] + dh[j] * o * (1.0 - tc * tc)
        dai = dct * g * i * (1.0 - i)
        daf = dct * c_prev[j] * f * (1.0 - f)
        dao = dh[j] * tc * o * (1.0 - o)
        dag = dct * i * (1.0 - g * g)
        dgx[j] = dai
        dgx[H + j] = daf
        dgx[2 * H + j] = dao
        dgx[3 * H + j] = dag
        dgh[j] = dai
        dgh[H + j] = daf
        dgh[2 * H + j] = dao
        dgh[3 * H + j] = dag
        dh_direct[j] = 0.0
        dc_prev[j] = dct * f
