"""Time loops shared by all cells: a whole (T, N) sequence forward and backward, and
the one-row step used to score short texts (a prime, a line) and by beam search.

Design (after jcjohnson/torch-rnn): the caller computes every input projection
gx = x @ Wx + b for all T x N rows in one large GEMM, so only the recurrent product
h_prev @ Wh remains inside the time loop; the caller likewise computes dWx, dWh and the
input gradient as large GEMMs over the gradients these loops leave behind. The
recurrent products use weights the caller packed once (panels.py), not a BLAS call per
step. Nothing is allocated inside a time loop. Arrays are time-major: (T, N, ...).
"""

import numpy as np
from numba import njit, prange

from . import CELL_GRU, CELL_LSTM
from .gru import gru_block_backward, gru_block_forward
from .lstm import lstm_block_backward, lstm_block_forward
from .panels import pack_transposed_panels, pack_unit_panels, panel_columns, panel_matmul
from .rnn import rnn_block_backward, rnn_block_forward
from .sync import meet


@njit(cache=True, error_model="numpy")
def cell_block_forward(cell, gx, gh, bn, h_prev, c_prev, h_out, c_out, acts, aux, j0, j1):
    if cell == CELL_LSTM:
        lstm_block_forward(gx, gh, bn, h_prev, c_prev, h_out, c_out, acts, aux, j0, j1)
    elif cell == CELL_GRU:
        gru_block_forward(gx, gh, bn, h_prev, c_prev, h_out, c_out, acts, aux, j0, j1)
    else:
        rnn_block_forward(gx, gh, bn, h_prev, c_prev, h_out, c_out, acts, aux, j0, j1)


@njit(cache=True, error_model="numpy")
def cell_block_backward(cell, dh, dc, h_prev, c_prev, acts, aux, dgx, dgh, dh_direct, dc_prev,
                        dbn, j0, j1):
    if cell == CELL_LSTM:
        lstm_block_backward(dh, dc, h_prev, c_prev, acts, aux, dgx, dgh, dh_direct, dc_prev,
                            dbn, j0, j1)
    elif cell == CELL_GRU:
        gru_block_backward(dh, dc, h_prev, c_prev, acts, aux, dgx, dgh, dh_direct, dc_prev,
                           dbn, j0, j1)
    else:
        rnn_block_backward(dh, dc, h_prev, c_prev, acts, aux, dgx, dgh, dh_direct, dc_prev,
                           dbn, j0, j1)


@njit(cache=True, error_model="numpy", nogil=True)
def recurrent_forward(cell, gx, Wh_panels, bn, h0, c0, hs, cs, acts, aux, gh, j0, j1, parts,
                      counters):
    """Run one layer over a whole sequence, for units j0:j1 of every batch row.

    Inputs: cell code; gx (T, N, GH) input projections including bias; Wh_panels: the
    columns of Wh (H, GH) that feed units j0:j1 (U = j1 - j0), gate-major, packed by
    panels.pack_panels; bn (H) GRU candidate bias (ignored by other cells); h0, c0 (N, H)
    initial state. Outputs, units j0:j1 only: hs, cs (T, N, H) states after each step;
    acts (T, N, GH) and aux (T, N, H) caches for the backward. Scratch: gh
    (N, panels.padded_columns(G*U)), this thread's own.

    Threads that split a layer's units (parallel.layer_units) each keep only their
    units' columns of Wh, which stay in their core's cache, but every step needs every
    unit of the step before, so the `parts` threads meet (sync.meet on counters) once
    per step. (Threads that split the batch instead run separate calls on their own
    rows: model.py.)
    """
    for t in range(gx.shape[0]):
        h_prev = h0 if t == 0 else hs[t - 1]
        c_prev = c0 if t == 0 else cs[t - 1]
        panel_matmul(h_prev, Wh_panels, gh)
        cell_block_forward(cell, gx[t], gh, bn, h_prev, c_prev, hs[t], cs[t], acts[t], aux[t],
                           j0, j1)
        meet(counters, parts, t + 1)


@njit(cache=True, error_model="numpy", nogil=True)
def recurrent_backward(cell, WhT_panels, h0, c0, hs, cs, acts, aux, dhs, dgx, dgh, dh0, dc0,
                       dbn, j0, j1, parts, counters):
    """Backpropagate one layer through time, for units j0:j1 of every batch row.

    Inputs: cell code; WhT_panels = Wh[j0:j1].T (GH, U), packed; h0, c0 (N, H); hs, cs,
    acts, aux from recurrent_forward; dhs (T, N, H) loss gradient w.r.t. each output h
    (from the layer above or the output projection). The final state gets no gradient
    (truncated BPTT). Outputs, at these units: dgx (T, N, GH) gradient w.r.t. gx; dgh
    (T, N, GH) w.r.t. h_prev @ Wh, which for LSTM and RNN equals dgx: pass the same
    array there (only the GRU writes dgh separately); dh0, dc0 (N, H); dbn (H)
    accumulated. Threads splitting the units meet once per step, as in the forward:
    the product dgh_t @ Wh.T needs every unit's gate gradients.
    """
    T, N = hs.shape[0], hs.shape[1]
    U = j1 - j0
    dh = np.empty((N, U), hs.dtype)  # gradient w.r.t. h at step t
    dc = np.zeros((N, U), hs.dtype)  # gradient w.r.t. c at step t
    dc_prev = np.empty((N, U), hs.dtype)
    dh_direct = np.empty((N, U), hs.dtype)  # dh_prev not through Wh (GRU)
    dh_carry = np.zeros((N, U), hs.dtype)  # dh flowing back from step t + 1
    carry_padded = np.empty((N, panel_columns(WhT_panels)), hs.dtype)
    for t in range(T - 1, -1, -1):
        h_prev = h0 if t == 0 else hs[t - 1]
        c_prev = c0 if t == 0 else cs[t - 1]
        for n in range(N):  # views from 0, so the loop vectorises (see lstm.py)
            dhs_row, carry_row, dh_row = dhs[t, n, j0:j1], dh_carry[n], dh[n]
            for u in range(U):
                dh_row[u] = dhs_row[u] + carry_row[u]
        cell_block_backward(cell, dh, dc, h_prev, c_prev, acts[t], aux[t], dgx[t], dgh[t],
                            dh_direct, dc_prev, dbn, j0, j1)
        meet(counters, parts, T - t)
        panel_matmul(dgh[t], WhT_panels, carry_padded)
        dh_carry[:, :] = carry_padded[:, :U]
        if cell == CELL_GRU:  # only the GRU reaches h_prev other than through Wh
            dh_carry += dh_direct
        dc[:, :] = dc_prev
    dh0[:, j0:j1] = dh_carry
    dc0[:, j0:j1] = dc


@njit(cache=True, error_model="numpy", nogil=True, parallel=True)
def recurrent_forward_team(cell, gx, Wh, bn, h0, c0, hs, cs, acts, aux, Wh_parts, gh_parts,
                           bounds, counters):
    """recurrent_forward of every part k, units bounds[k, 0]:bounds[k, 1], each on a
    thread of Numba's team, which starts a part far sooner than a Python thread takes
    a hand-off (that costs more than splitting a batch-1 layer saves). Each thread
    first packs its units' columns of Wh (H, GH) into its own Wh_parts[k], in parallel
    and into its own core's cache; gh_parts[k] is its scratch. Only for teams that give
    each part a thread of its own (parallel.team_runs): the parts meet every step."""
    parts = bounds.shape[0]
    gates = Wh.shape[1] // Wh.shape[0]
    for k in prange(parts):
        j0, j1 = bounds[k, 0], bounds[k, 1]
        pack_unit_panels(Wh, gates, j0, j1, Wh_parts[k])
        recurrent_forward(cell, gx, Wh_parts[k], bn, h0, c0, hs, cs, acts, aux, gh_parts[k],
                          j0, j1, parts, counters)


@njit(cache=True, error_model="numpy", nogil=True, parallel=True)
def recurrent_backward_team(cell, Wh, h0, c0, hs, cs, acts, aux, dhs, dgx, dgh, dh0, dc0,
                            WhT_parts, dbn_parts, bounds, counters):
    """recurrent_backward of every part k on Numba's team, as recurrent_forward_team:
    each thread packs Wh[j0:j1].T into its WhT_parts[k] and sums into its dbn_parts[k]."""
    parts = bounds.shape[0]
    for k in prange(parts):
        j0, j1 = bounds[k, 0], bounds[k, 1]
        pack_transposed_panels(Wh[j0:j1], WhT_parts[k])
        recurrent_backward(cell, WhT_parts[k], h0, c0, hs, cs, acts, aux, dhs, dgx, dgh, dh0,
                           dc0, dbn_parts[k], j0, j1, parts, counters)


@njit(cache=True, error_model="numpy")
def stack_step(cell, table0, token, Wx_up_panels, b_up, Wh_panels, bn, h, c, gx, gh, acts,
               aux):
    """Advance every layer of a stack by one token (scoring short texts, beam search).

    Inputs: cell code; table0 (V, GH) layer-0 input projection with bias for each token;
    token id; Wx_up_panels, Wh_panels: the projections of the layers above the first
    (L-1, H, GH) and the recurrent weights (L, H, GH), each matrix packed by
    panels.pack_panels; b_up (L-1, GH); bn (L, H). In/out: h, c (L, H). Scratch: gx, gh
    (1, panels.padded_columns(GH)), acts (1, GH), aux (1, H).
    """
    L, GH = Wh_panels.shape[0], table0.shape[1]
    for layer in range(L):
        if layer == 0:
            gx[0, :GH] = table0[token]
        else:
            panel_matmul(h[layer - 1:layer], Wx_up_panels[layer - 1], gx)
            gx[0, :GH] += b_up[layer - 1]
        panel_matmul(h[layer:layer + 1], Wh_panels[layer], gh)
        state_h, state_c = h[layer:layer + 1], c[layer:layer + 1]  # (1, H) views
        cell_block_forward(cell, gx, gh, bn[layer], state_h, state_c, state_h, state_c,
                           acts, aux, 0, state_h.shape[1])
