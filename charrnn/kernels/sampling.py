"""Compiled generation and scoring loops: one-to-many generation from a state, and
many-to-one scoring of a token sequence. Randomness enters as pre-drawn uniforms in
[0, 1), one per generated token, so a seed fixes the output and the kernel never
touches Numba's hidden RNG.

Decoding order: logits / temperature, then top-k, then top-p (nucleus) over what is left;
greedy takes the arg max. Banned ids (e.g. the unknown symbol) are never emitted.
"""

import numpy as np
from numba import njit

from .recurrent import matvec_into, stack_step


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
        order = np.argsort(-probs, kind="mergesort")  # most likely first; stable: ties keep id order
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
def step_scratch(Wh, by, dtype):
    """Buffers reused by every one-token step: gx, gh, acts (1, GH), aux (1, H),
    logits (V)."""
    L, H, GH = Wh.shape
    return (np.empty((1, GH), dtype), np.empty((1, GH), dtype), np.empty((1, GH), dtype),
            np.empty((1, H), dtype), np.empty(by.shape[0], dtype))


@njit(cache=True)
def step_logits(cell, table0, token, Wx_up, b_up, Wh, bn, Wy, by, h, c, scratch):
    """Advance the stack by one token and leave the next token's logits in scratch[-1]."""
    gx, gh, acts, aux, logits = scratch
    stack_step(cell, table0, token, Wx_up, b_up, Wh, bn, h, c, gx, gh, acts, aux)
    matvec_into(h[h.shape[0] - 1], Wy, logits)
    logits += by


@njit(cache=True)
def generate(cell, table0, Wx_up, b_up, Wh, bn, Wy, by, token, uniforms,
             inv_temperature, top_k, top_p, greedy, banned, h, c, out_ids):
    """Feed `token`, then sample len(out_ids) tokens, each fed back as the next input.

    Inputs: weights as for recurrent.stack_step, Wy (H, V), by (V); token, the id fed
    first; uniforms (n); decoding settings as for choose_token. In/out: h, c (L, H).
    Output: out_ids (n). Returns the last sampled id.
    """
    scratch = step_scratch(Wh, by, h.dtype)
    logits = scratch[-1]
    probs = np.empty(by.shape[0], np.float64)
    for i in range(out_ids.shape[0]):
        step_logits(cell, table0, token, Wx_up, b_up, Wh, bn, Wy, by, h, c, scratch)
        token = choose_token(logits, uniforms[i], inv_temperature, top_k, top_p, greedy,
                             banned, probs)
        out_ids[i] = token
    return token


@njit(cache=True)
def score_tokens(cell, table0, Wx_up, b_up, Wh, bn, Wy, by, ids, h, c, losses):
    """Negative log-likelihood (nats) of ids[k + 1] given ids[:k + 1], for every k.

    Inputs: weights as for generate; ids (K). In/out: h, c (L, H), carried across calls.
    Output: losses (K - 1).
    """
    scratch = step_scratch(Wh, by, h.dtype)
    logits = scratch[-1]
    V = by.shape[0]
    for k in range(ids.shape[0] - 1):
        step_logits(cell, table0, ids[k], Wx_up, b_up, Wh, bn, Wy, by, h, c, scratch)
        top = logits.max()
        total = 0.0
        for v in range(V):
            total += np.exp(logits[v] - top)
        losses[k] = np.log(total) + top - logits[ids[k + 1]]
