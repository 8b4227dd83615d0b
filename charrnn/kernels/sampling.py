"""Compiled generation and scoring loops: one-to-many generation from a state, and
many-to-one scoring of a token sequence. Randomness enters as pre-drawn uniforms in
[0, 1), one per generated token, so a seed fixes the output and the kernel never
touches Numba's hidden RNG.

Decoding order: logits / temperature, then top-k, then top-p (nucleus) over what is left;
greedy takes the arg max. Banned ids (e.g. the unknown symbol) are never emitted.

The output layer arrives as one tuple, `output` (see output_scores): a full softmax,
or an adaptive one (charrnn/adaptive.py), whose log-probabilities play the logits'
part. Plain sampling (temperature 1, no top-k or top-p) from an adaptive softmax draws
from the head first and computes a cluster only when the draw lands on its token.
"""

import numpy as np
from numba import njit

from .activations import fast_exp
from .panels import VECTOR_BYTES, panel_columns, panel_matmul
from .recurrent import cell_block_forward, stack_step
from .sync import meet

BELOW_ONE = 1.0 - 2.0 ** -53  # the largest float64 below 1


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
        first = 0
        while first < V - 1 and banned[first]:
            first += 1
        top = logits[first]
        for v in range(first, V):
            if not banned[v] and (logits[v] > top or logits[v] != logits[v]):
                top = logits[v]
        for v in range(V):
            probs[v] = fast_exp(logits[v] - top)
        for v in range(V):
            if banned[v]:
                probs[v] = 0.0
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

    The total and the search both go block by block, each block's sum computed the
    same way in both, so the search always ends where the total does; the clusters of
    an adaptive softmax hold thousands of ids, and one running sum over them is a chain
    of dependent additions."""
    n = probs.shape[0]
    total = 0.0
    for lo in range(0, n, DRAW_BLOCK):
        total += _block_sum(probs, lo, min(lo + DRAW_BLOCK, n))
    target = u * total
    running = 0.0
    last_block = -1  # the last block holding a possible index
    for lo in range(0, n, DRAW_BLOCK):
        hi = min(lo + DRAW_BLOCK, n)
        block = _block_sum(probs, lo, hi)
        if block > 0.0:
            last_block = lo
        if running + block > target:  # within this block, one id at a time
            inside = running
            for v in range(lo, hi):
                if probs[v] > 0.0:
                    if inside + probs[v] > target:
                        return v, min(max((target - inside) / probs[v], 0.0), BELOW_ONE)
                    inside += probs[v]
        running += block
    last = -1  # rounding left target >= running: the last possible index
    if last_block >= 0:
        for v in range(last_block, min(last_block + DRAW_BLOCK, n)):
            if probs[v] > 0.0:
                last = v
    return last, 0.0


@njit(cache=True)
def _top(row):
    """row.max(), NaN included, as a loop: a kernel calling ndarray.max() makes Numba
    import numba.np.arraymath, and with it scipy.linalg, when it loads the kernel from
    its cache, about a tenth of a second of `charrnn sample`'s start."""
    top = row[0]
    for v in range(1, row.shape[0]):
        if row[v] > top or row[v] != row[v]:
            top = row[v]
            if top != top:
                break
    return top


@njit(cache=True)
def _log_sum_exp(row):
    top = _top(row)
    total = 0.0
    for v in range(row.shape[0]):
        total += np.exp(row[v] - top)
    return top + np.log(total)


@njit(cache=True)
def _cluster_logits(proj, tail_W, tail_b, clusters, c, scratch):
    """The logits of cluster c's characters from the projections proj, returned as a
    view of scratch (whose length covers the cluster's padded width): one row times
    the cluster's packed weights (panels.py), then its biases."""
    first, n, p0, d, w0 = (clusters[c, 0], clusters[c, 1], clusters[c, 2], clusters[c, 3],
                           clusters[c, 4])
    width = 2 * VECTOR_BYTES // tail_W.itemsize  # panels.panel_width
    P = (n + width - 1) // width
    panels = tail_W[w0:w0 + P * d * width].reshape((P, d, width))
    x = np.empty((1, d), proj.dtype)
    for k in range(d):
        x[0, k] = proj[p0 + k]
    panel_matmul(x, panels, scratch[:P * width].reshape((1, P * width)))
    logits = scratch[:n]
    b0 = first - clusters[0, 0]  # the biases of every cluster follow each other
    for v in range(n):
        logits[v] += tail_b[b0 + v]
    return logits


@njit(cache=True)
def output_scores(h_top, output, head, proj, cluster, scores):
    """The next token's scores from the top layer's state h_top (1, H): logits of a
    full softmax (a view of head), or every id's log-probability under an adaptive
    one (scores, V). Either is what choose_token and beam search take as logits.

    output = (Wy_panels, by, order, head_banned, Pt_panels, tail_W, tail_b, clusters):
    the head's weights packed and its bias (head characters, then one token per
    cluster); order (V) the ids by rank; head_banned (head width) bans by head column;
    Pt_panels all clusters' projections side by side, packed; tail_W every cluster's
    (d, n) weights packed (panels.py) and flattened, one after another, and tail_b their
    biases; clusters (C, 5) rows (first rank, n, projection offset, d, offset in
    tail_W). A full softmax has C = 0 and order 0..V-1. Scratch: head (1, padded head),
    proj (1, padded projections), cluster (largest padded n).
    """
    Wy_panels, by, order, _, Pt_panels, tail_W, tail_b, clusters = output
    width = by.shape[0]
    panel_matmul(h_top, Wy_panels, head)
    head[0, :width] += by
    if clusters.shape[0] == 0:
        return head[0, :width]
    C = clusters.shape[0]
    count = width - C
    norm = _log_sum_exp(head[0, :width])
    for r in range(count):
        scores[order[r]] = head[0, r] - norm
    panel_matmul(h_top, Pt_panels, proj)
    for c in range(C):
        first, n = clusters[c, 0], clusters[c, 1]
        logits = _cluster_logits(proj[0], tail_W, tail_b, clusters, c, cluster)
        base = head[0, count + c] - norm - _log_sum_exp(logits)
        for v in range(n):
            scores[order[first + v]] = logits[v] + base
    return scores


@njit(cache=True)
def draw_head_first(h_top, output, u, head, proj, cluster):
    """A token drawn at temperature 1 from an adaptive softmax, computing only the head
    and, if the draw lands on a cluster's token, that cluster: exact, because a tail
    character's probability is its cluster's times its own within the cluster, and
    banned ids sit in the head."""
    Wy_panels, by, order, head_banned, Pt_panels, tail_W, tail_b, clusters = output
    width = by.shape[0]
    panel_matmul(h_top, Wy_panels, head)
    row = head[0, :width]
    row += by
    first = 0
    while head_banned[first]:
        first += 1
    top = row[first]  # of the row's type, so fast_exp stays float32
    for j in range(first, width):
        if not head_banned[j] and (row[j] > top or row[j] != row[j]):
            top = row[j]
    for j in range(width):
        row[j] = fast_exp(row[j] - top)  # one vectorised pass; banned ids zeroed next
    for j in range(width):
        if head_banned[j]:
            row[j] = 0.0
    j, u = draw(row, u)
    count = width - clusters.shape[0]
    if j < count:
        return order[j]
    c = j - count
    first, n = clusters[c, 0], clusters[c, 1]
    panel_matmul(h_top, Pt_panels, proj)
    logits = _cluster_logits(proj[0], tail_W, tail_b, clusters, c, cluster)
    top = _top(logits)
    for v in range(n):
        logits[v] = fast_exp(logits[v] - top)
    k, _ = draw(logits, u)
    return order[first + k]


@njit(cache=True)
def output_scratch(output, dtype):
    """Buffers output_scores and draw_head_first reuse: head (1, padded head width),
    proj (1, padded projections), cluster (largest cluster, padded), scores (V)."""
    Wy_panels, _, order, _, Pt_panels, tail_W, _, clusters = output
    width = 2 * VECTOR_BYTES // tail_W.itemsize  # panels.panel_width
    largest = 0
    for c in range(clusters.shape[0]):
        largest = max(largest, (clusters[c, 1] + width - 1) // width * width)
    return (np.empty((1, panel_columns(Wy_panels)), dtype),
            np.empty((1, panel_columns(Pt_panels)), dtype), np.empty(largest, dtype),
            np.empty(order.shape[0], dtype))


@njit(cache=True)
def step_scratch(table0, Wh_panels, output, dtype):
    """Buffers reused by every one-token step: gx, gh (1, padded GH), acts (1, GH),
    aux (1, H), then output_scratch's."""
    GH, H, padded = table0.shape[1], Wh_panels.shape[2], panel_columns(Wh_panels)
    head, proj, cluster, scores = output_scratch(output, dtype)
    return (np.empty((1, padded), dtype), np.empty((1, padded), dtype),
            np.empty((1, GH), dtype), np.empty((1, H), dtype), head, proj, cluster, scores)


@njit(cache=True)
def step_logits(cell, table0, token, Wx_up_panels, b_up, Wh_panels, bn, output, h, c,
                scratch):
    """Advance the stack by one token and return the next token's scores (V, see
    output_scores), a view of scratch."""
    gx, gh, acts, aux, head, proj, cluster, scores = scratch
    stack_step(cell, table0, token, Wx_up_panels, b_up, Wh_panels, bn, h, c, gx, gh, acts,
               aux)
    return output_scores(h[h.shape[0] - 1:], output, head, proj, cluster, scores)


@njit(cache=True)
def score_tokens(cell, table0, Wx_up_panels, b_up, Wh_panels, bn, output, ids, h, c, losses):
    """Negative log-likelihood (nats) of ids[k + 1] given ids[:k + 1], for every k.

    Inputs: weights as for stack_step, the output layer as for output_scores; ids (K).
    In/out: h, c (L, H), carried across calls. Output: losses (K - 1).
    """
    scratch = step_scratch(table0, Wh_panels, output, h.dtype)
    for k in range(ids.shape[0] - 1):
        logits = step_logits(cell, table0, ids[k], Wx_up_panels, b_up, Wh_panels, bn,
                             output, h, c, scratch)
        losses[k] = _log_sum_exp(logits) - logits[ids[k + 1]]


@njit(cache=True, error_model="numpy", nogil=True)
def generate(cell, table0_units, Wx_up_panels, b_up_units, Wh_panels, bn, output, token,
             uniforms, inv_temperature, top_k, top_p, greedy, banned, h_pair, c_pair,
             out_ids, j0, j1, part, parts, counters):
    """Feed `token`, then sample len(out_ids) tokens, each fed back as the next input.

    One stream has no batch rows to share among threads, so each of `parts` threads runs
    this loop for its own units j0:j1 of every layer, and they meet (sync.meet on
    counters) after each layer: the next layer, and the next step, need every unit.
    Then every part computes the logits and draws the token itself: the same arithmetic
    on the same state and uniform gives each the same token, so none waits for another
    to hand it over (one meeting per layer per character, not one more). Part 0 writes
    out_ids. A single thread passes part 0 of 1 and all units.

    Inputs: cell code; table0_units (V, G*U) and b_up_units (L-1, G*U): the columns of
    stack_step's table0 and b_up that feed these U = j1 - j0 units, gate-major;
    Wx_up_panels and Wh_panels: the same columns of Wx_up (L-1, H, GH) and Wh (L, H, GH),
    each matrix packed by panels.pack_panels (float32, or bfloat16 for float32 models);
    bn (L, H); output: the output layer as output_scores takes it (its head packed
    alike); uniforms (n); decoding settings as for choose_token. In/out: h_pair,
    c_pair (2, L, H), the state in [0] on entry: step i reads [i % 2] and writes
    [1 - i % 2], so no thread overwrites a state another may still be reading; after
    n steps the state is in [n % 2]. Output (part 0): out_ids (n). Returns the last id.

    Every other step computes all layers' recurrent products first, top layer first:
    they need only the previous step's state, and the weights the step before read last
    (the top layers') are then read again while still in this core's cache instead of
    all of them streaming from L3 every step (docs/threads-and-kernels.md, "The
    sampling kernel").
    """
    L, H = h_pair.shape[1], h_pair.shape[2]
    GU, U, V = table0_units.shape[1], j1 - j0, output[2].shape[0]
    G = GU // U
    GH = G * H
    dtype = h_pair.dtype
    gx = np.zeros((1, GH), dtype)  # full-width; this part fills its own columns
    gx_units = np.empty((1, panel_columns(Wh_panels)), dtype)
    gh = np.empty((L, panel_columns(Wh_panels)), dtype)  # each layer's h_prev @ Wh
    acts = np.empty((1, GH), dtype)
    aux = np.empty((1, H), dtype)
    head, proj, cluster, scores = output_scratch(output, dtype)
    probs = np.empty(V, np.float64)
    head_first = (output[7].shape[0] > 0 and inv_temperature == 1.0 and not greedy
                  and (top_k <= 0 or top_k >= V) and top_p >= 1.0)
    meeting = 0
    for i in range(out_ids.shape[0]):
        now, nxt = i % 2, 1 - i % 2
        if i % 2:  # the recurrent products first, top layer first (see above)
            for layer in range(L - 1, -1, -1):
                panel_matmul(h_pair[now, layer:layer + 1], Wh_panels[layer], gh[layer:])
        for layer in range(L):
            if layer == 0:  # this part's columns of the token's row, into place
                row = table0_units[token]
                for g in range(G):  # a loop: Numba's slice assignment is slower here
                    target, source = gx[0, g * H + j0:g * H + j1], row[g * U:(g + 1) * U]
                    for u in range(U):
                        target[u] = source[u]
            else:  # the product plus the bias, into place in one pass
                panel_matmul(h_pair[nxt, layer - 1:layer], Wx_up_panels[layer - 1], gx_units)
                bias = b_up_units[layer - 1]
                for g in range(G):
                    target = gx[0, g * H + j0:g * H + j1]
                    product, b = gx_units[0, g * U:(g + 1) * U], bias[g * U:(g + 1) * U]
                    for u in range(U):
                        target[u] = product[u] + b[u]
            if not i % 2:
                panel_matmul(h_pair[now, layer:layer + 1], Wh_panels[layer], gh[layer:])
            cell_block_forward(cell, gx, gh[layer:layer + 1], bn[layer],
                               h_pair[now, layer:layer + 1],
                               c_pair[now, layer:layer + 1], h_pair[nxt, layer:layer + 1],
                               c_pair[nxt, layer:layer + 1], acts, aux, j0, j1)
            meeting += 1
            meet(counters, parts, meeting)
        # After the top layer's meeting, the next step writes only the state buffer
        # that no part reads any more (see h_pair above), so a part may run ahead.
        if head_first:
            token = draw_head_first(h_pair[nxt, L - 1:L], output, uniforms[i], head, proj,
                                    cluster)
        else:
            logits = output_scores(h_pair[nxt, L - 1:L], output, head, proj, cluster, scores)
            token = choose_token(logits, uniforms[i], inv_temperature, top_k, top_p, greedy,
                                 banned, probs)
        if part == 0:
            out_ids[i] = token
    return token
