"""Compiled generation and scoring loops: one-to-many generation from a state, and
many-to-one scoring of a token sequence. Randomness enters as pre-drawn uniforms in
[0, 1), one per generated token, so a seed fixes the output and the kernel never
touches Numba's hidden RNG.

Decoding order: logits / temperature, then top-k, then top-p (nucleus) over what is left;
greedy takes the arg max. Banned ids (e.g. the unknown symbol) are never emitted.
"""

import numpy as np
from numba import njit

from .panels import panel_columns, panel_matmul
from .recurrent import cell_block_forward, stack_step
from .sync import meet


@njit(cache=True)
def choose_token(logits, u, inv_temperature, top_k, top_p, greedy, banned, probs):
    """Pick one token id from logits (V).

    Inputs: u uniform in [0, 1); inv_temperature = 1 / T; top_k (0 = off); top_p
    (1 = off); greedy; banned (V) bool. Scratch: probs (V).
    """
    V = logits.shape[0]
    if greedy:
        best = -1
        for v in range(V):
            if not banned[v] and (best < 0 or logits[v] > logits[best]):
                best = v
        return best
    top = -np.inf
    for v in range(V):
        if not banned[v]:
            top = max(top, logits[v] * inv_temperature)
    for v in range(V):
        probs[v] = 0.0 if banned[v] else np.exp(logits[v] * inv_temperature - top)
    if (top_k > 0 and top_k < V) or top_p < 1.0:
        # most likely first; stable: ties keep id order
        order = np.argsort(-probs, kind="mergesort")
        keep = V
        if top_k > 0 and top_k < V:
            keep = top_k
        if top_p < 1.0:
            total = 0.0
            for r in range(keep):
                total += probs[order[r]]
            running = 0.0
            for r in range(keep):
                running += probs[order[r]]
                if running >= top_p * total:
                    keep = r + 1
                    break
        for r in range(keep, V):
            probs[order[r]] = 0.0
    total = 0.0
    for v in range(V):
        total += probs[v]
    target = u * total
    running = 0.0
    last = -1
    for v in range(V):
        if probs[v] > 0.0:
            running += probs[v]
            last = v
            if running > target:
                return v
    return last  # rounding left target >= running: take the last possible token


@njit(cache=True)
def step_scratch(table0, Wh_panels, Wy_panels, dtype):
    """Buffers reused by every one-token step: gx, gh (1, padded GH), acts (1, GH),
    aux (1, H), logits (1, padded V)."""
    GH, H, padded = table0.shape[1], Wh_panels.shape[2], panel_columns(Wh_panels)
    return (np.empty((1, padded), dtype), np.empty((1, padded), dtype),
            np.empty((1, GH), dtype), np.empty((1, H), dtype),
            np.empty((1, panel_columns(Wy_panels)), dtype))


@njit(cache=True)
def step_logits(cell, table0, token, Wx_up_panels, b_up, Wh_panels, bn, Wy_panels, by, h, c,
                scratch):
    """Advance the stack by one token and return the next token's logits (V), a view
    of scratch[-1]."""
    gx, gh, acts, aux, logits = scratch
    stack_step(cell, table0, token, Wx_up_panels, b_up, Wh_panels, bn, h, c, gx, gh, acts,
               aux)
    panel_matmul(h[h.shape[0] - 1:], Wy_panels, logits)
    V = by.shape[0]
    logits[0, :V] += by
    return logits[0, :V]


@njit(cache=True)
def score_tokens(cell, table0, Wx_up_panels, b_up, Wh_panels, bn, Wy_panels, by, ids, h, c,
                 losses):
    """Negative log-likelihood (nats) of ids[k + 1] given ids[:k + 1], for every k.

    Inputs: weights as for stack_step, Wy_panels: Wy (H, V) packed, by (V); ids (K).
    In/out: h, c (L, H), carried across calls. Output: losses (K - 1).
    """
    scratch = step_scratch(table0, Wh_panels, Wy_panels, h.dtype)
    V = by.shape[0]
    for k in range(ids.shape[0] - 1):
        logits = step_logits(cell, table0, ids[k], Wx_up_panels, b_up, Wh_panels, bn,
                             Wy_panels, by, h, c, scratch)
        top = logits.max()
        total = 0.0
        for v in range(V):
            total += np.exp(logits[v] - top)
        losses[k] = np.log(total) + top - logits[ids[k + 1]]


@njit(cache=True, error_model="numpy", nogil=True)
def generate(cell, table0_units, Wx_up_panels, b_up_units, Wh_panels, bn, Wy_panels, by, token,
             uniforms, inv_temperature, top_k, top_p, greedy, banned, h_pair, c_pair,
             out_ids, j0, j1, part, parts, counters, token_box):
    """Feed `token`, then sample len(out_ids) tokens, each fed back as the next input.

    One stream has no batch rows to share among threads, so each of `parts` threads runs
    this loop for its own units j0:j1 of every layer, and they meet (sync.meet on
    counters) after each layer: the next layer, and the next step, need every unit.
    Part 0 also computes the logits, draws the token and hands it to the others through
    token_box (1). A single thread passes part 0 of 1 and all units.

    Inputs: cell code; table0_units (V, G*U) and b_up_units (L-1, G*U): the columns of
    stack_step's table0 and b_up that feed these U = j1 - j0 units, gate-major;
    Wx_up_panels and Wh_panels: the same columns of Wx_up (L-1, H, GH) and Wh (L, H, GH),
    each matrix packed by panels.pack_panels (float32, or bfloat16 for float32 models);
    bn (L, H); Wy_panels: Wy (H, V) packed alike; by (V); uniforms (n); decoding settings
    as for choose_token. In/out: h_pair, c_pair (2, L, H), the state in [0] on entry:
    step i reads [i % 2] and writes [1 - i % 2], so no thread overwrites a state
    another may still be reading; after n steps the state is in [n % 2]. Output
    (part 0): out_ids (n). Returns the last id.

    Every other step computes all layers' recurrent products first, top layer first:
    they need only the previous step's state, and the weights the step before read last
    (the top layers') are then read again while still in this core's cache instead of
    all of them streaming from L3 every step (docs/threads-and-kernels.md, "The
    sampling kernel").
    """
    L, H = h_pair.shape[1], h_pair.shape[2]
    GU, U, V = table0_units.shape[1], j1 - j0, by.shape[0]
    G = GU // U
    GH = G * H
    dtype = h_pair.dtype
    gx = np.zeros((1, GH), dtype)  # full-width; this part fills its own columns
    gx_units = np.empty((1, panel_columns(Wh_panels)), dtype)
    gh = np.empty((L, panel_columns(Wh_panels)), dtype)  # each layer's h_prev @ Wh
    acts = np.empty((1, GH), dtype)
    aux = np.empty((1, H), dtype)
    logits_padded = np.empty((1, panel_columns(Wy_panels)), dtype)
    logits = logits_padded[0, :V]
    probs = np.empty(V, np.float64)
    meeting = 0
    for i in range(out_ids.shape[0]):
        now, nxt = i % 2, 1 - i % 2
        if i % 2:  # the recurrent products first, top layer first (see above)
            for layer in range(L - 1, -1, -1):
                panel_matmul(h_pair[now, layer:layer + 1], Wh_panels[layer], gh[layer:])
        for layer in range(L):
            if layer == 0:
                gx_units[0, :GU] = table0_units[token]
            else:
                panel_matmul(h_pair[nxt, layer - 1:layer], Wx_up_panels[layer - 1], gx_units)
                gx_units[0, :GU] += b_up_units[layer - 1]
            for g in range(G):
                gx[0, g * H + j0:g * H + j1] = gx_units[0, g * U:(g + 1) * U]
            if not i % 2:
                panel_matmul(h_pair[now, layer:layer + 1], Wh_panels[layer], gh[layer:])
            cell_block_forward(cell, gx, gh[layer:layer + 1], bn[layer],
                               h_pair[now, layer:layer + 1],
                               c_pair[now, layer:layer + 1], h_pair[nxt, layer:layer + 1],
                               c_pair[nxt, layer:layer + 1], acts, aux, j0, j1)
            meeting += 1
            meet(counters, parts, meeting)
        if part == 0:
            panel_matmul(h_pair[nxt, L - 1:L], Wy_panels, logits_padded)
            logits += by
            token = choose_token(logits, uniforms[i], inv_temperature, top_k, top_p, greedy,
                                 banned, probs)
            out_ids[i] = token
            token_box[0] = token
        meeting += 1
        meet(counters, parts, meeting)
        token = token_box[0]
    return token
