"""Choosing a token from a row of scores, compiled: the decoding options, and exact
draws from unnormalised probabilities. Randomness enters as a pre-drawn uniform in
[0, 1), so a seed fixes the choice and no kernel touches Numba's hidden RNG.

Decoding order: logits / temperature, then top-k, then top-p (nucleus) over what is left;
greedy takes the arg max. Banned ids (e.g. the unknown symbol) are never emitted.
"""

import numpy as np
from numba import njit

from .activations import fast_exp

BELOW_ONE = 1.0 - 2.0 ** -53  # the largest float64 below 1


@njit(cache=True)
def exp_below_max(row, banned, out):
    """out (n) = exp(row - the largest of row's unbanned entries), with banned entries 0:
    exp in row's own type, one vectorised pass, the bans applied after it. NaN in an
    unbanned entry carries into every value."""
    n = row.shape[0]
    first = 0
    while first < n - 1 and banned[first]:
        first += 1
    top = row_max(row, banned, row[first])  # of the row's type: fast_exp stays float32
    for v in range(n):
        out[v] = fast_exp(row[v] - top)
    for v in range(n):
        if banned[v]:
            out[v] = 0.0


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
    if inv_temperature == 1.0:  # the default: exp in the logits' own type, vectorised
        exp_below_max(logits, banned, probs)
    else:
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


@njit(cache=True, inline="always")
def _block_sum(probs, lo, hi):
    """probs[lo:hi] summed in float64 (hi - lo <= DRAW_BLOCK): a whole block as a tree
    of pairs written out, a few additions deep and vectorised, where a running sum is
    one long chain of them; a partial block one by one."""
    if hi - lo < DRAW_BLOCK:
        total = 0.0
        for v in range(lo, hi):
            total += probs[v]
        return total
    p = probs[lo:lo + DRAW_BLOCK]
    f64 = np.float64
    a = (f64(p[0]) + f64(p[1])) + (f64(p[2]) + f64(p[3]))
    b = (f64(p[4]) + f64(p[5])) + (f64(p[6]) + f64(p[7]))
    c = (f64(p[8]) + f64(p[9])) + (f64(p[10]) + f64(p[11]))
    d = (f64(p[12]) + f64(p[13])) + (f64(p[14]) + f64(p[15]))
    return (a + b) + (c + d)


DRAW_BLOCK = 16  # ids summed together before they join the running total (_block_sum's tree)


@njit(cache=True)
def draw(probs, u):
    """(index, fresh uniform): the index drawn from unnormalised probs (n) >= 0 with
    uniform u, and where u fell within that index's share, rescaled to [0, 1): a
    uniform independent of the index, for a second draw conditional on it.

    The total and the search both go block by block, the search reading the block
    sums the total kept, so it always ends where the total does; the clusters of an
    adaptive softmax hold thousands of ids, and one running sum over them is a chain
    of dependent additions."""
    n = probs.shape[0]
    blocks = (n + DRAW_BLOCK - 1) // DRAW_BLOCK
    sums = np.empty(blocks)
    total = 0.0
    for b in range(blocks):
        sums[b] = _block_sum(probs, b * DRAW_BLOCK, min((b + 1) * DRAW_BLOCK, n))
        total += sums[b]
    target = u * total
    running = 0.0
    last_block = -1  # the last block holding a possible index
    for b in range(blocks):
        block = sums[b]
        if block > 0.0:
            last_block = b
        if running + block > target:  # within this block, one id at a time
            inside = running
            for v in range(b * DRAW_BLOCK, min((b + 1) * DRAW_BLOCK, n)):
                if probs[v] > 0.0:
                    if inside + probs[v] > target:
                        return v, min(max((target - inside) / probs[v], 0.0), BELOW_ONE)
                    inside += probs[v]
        running += block
    last = -1  # rounding left target >= running: the last possible index
    if last_block >= 0:
        for v in range(last_block * DRAW_BLOCK, min((last_block + 1) * DRAW_BLOCK, n)):
            if probs[v] > 0.0:
                last = v
    return last, 0.0


@njit(cache=True, inline="always")
def _entry(row, v, banned, floor):
    """row[v], or floor where banned[v]; row[v] when banned is None (compiled out)."""
    if banned is None:
        return row[v]
    return floor if banned[v] else row[v]


@njit(cache=True, inline="always")
def _larger(x, top):
    """x if x is larger than top or NaN, else top: a NaN, once taken, stays."""
    return x if (x > top or x != x) else top


@njit(cache=True, nogil=True, error_model="numpy")
def row_max(row, banned=None, floor=0.0):
    """row.max(), NaN included; with banned (bool, like row), the maximum of the
    unbanned entries, each banned one read as floor, which must be an unbanned entry.

    Block by block of 16, each block a tree of pairs written out, which vectorises
    where one running maximum is a chain of dependent compares (as in _block_sum). A
    loop, not ndarray.max(): a kernel calling that makes Numba import
    numba.np.arraymath, and with it scipy.linalg, when it loads the kernel from its
    cache, about a tenth of a second of `charrnn sample`'s start."""
    n = row.shape[0]
    blocks = n // 16 * 16
    top = _entry(row, 0, banned, floor)
    for lo in range(0, blocks, 16):
        a = _larger(_larger(_entry(row, lo, banned, floor), _entry(row, lo + 1, banned, floor)),
                    _larger(_entry(row, lo + 2, banned, floor), _entry(row, lo + 3, banned, floor)))
        b = _larger(_larger(_entry(row, lo + 4, banned, floor), _entry(row, lo + 5, banned, floor)),
                    _larger(_entry(row, lo + 6, banned, floor), _entry(row, lo + 7, banned, floor)))
        c = _larger(_larger(_entry(row, lo + 8, banned, floor), _entry(row, lo + 9, banned, floor)),
                    _larger(_entry(row, lo + 10, banned, floor),
                            _entry(row, lo + 11, banned, floor)))
        d = _larger(_larger(_entry(row, lo + 12, banned, floor),
                            _entry(row, lo + 13, banned, floor)),
                    _larger(_entry(row, lo + 14, banned, floor),
                            _entry(row, lo + 15, banned, floor)))
        top = _larger(_larger(_larger(a, b), _larger(c, d)), top)
    for v in range(blocks, n):
        top = _larger(_entry(row, v, banned, floor), top)
    return top


@njit(cache=True)
def log_sum_exp(row):
    top = row_max(row)
    total = 0.0
    for v in range(row.shape[0]):
        total += np.exp(row[v] - top)
    return top + np.log(total)
