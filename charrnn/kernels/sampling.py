"""Compiled generation and scoring loops: one-to-many generation from a state, and
many-to-one scoring of a token sequence. Randomness enters as pre-drawn uniforms in
[0, 1), one per generated token, so a seed fixes the output; decoding.py chooses each
token.

The output layer arrives as one tuple, `output` (see output_scores): a full softmax,
or an adaptive one (charrnn/adaptive.py), whose log-probabilities play the logits'
part. Plain sampling (temperature 1, no top-k or top-p) from an adaptive softmax draws
from the head first and computes a cluster only when the draw lands on its token.
"""

import numpy as np
from numba import njit

from .activations import fast_exp
from .decoding import choose_token, draw, exp_below_max, log_sum_exp, row_max
from .panels import panel_columns, panel_matmul, panel_width_of
from .recurrent import cell_block_forward, stack_step
from .sync import meet


@njit(cache=True)
def _head_logits(h_top, Wy_panels, by, head, share, shares):
    """head[0, :len(by)] = h_top @ Wy + by, or the columns of share's panels of the
    `shares` that split them evenly (0 of 1: all of them)."""
    P = Wy_panels.shape[0]
    p0, p1 = share * P // shares, (share + 1) * P // shares
    width = Wy_panels.shape[2]
    out = head[0][p0 * width:p1 * width].reshape((1, (p1 - p0) * width))  # contiguous
    panel_matmul(h_top, Wy_panels[p0:p1], out)
    for v in range(p0 * width, min(p1 * width, by.shape[0])):
        head[0, v] += by[v]


@njit(cache=True)
def _cluster_logits(proj, tail_W, tail_b, clusters, c, scratch):
    """The logits of cluster c's characters from the projections proj, returned as a
    view of scratch (whose length covers the cluster's padded width): one row times
    the cluster's packed weights (panels.py), then its biases."""
    first, n, p0, d, w0 = (clusters[c, 0], clusters[c, 1], clusters[c, 2], clusters[c, 3],
                           clusters[c, 4])
    width = panel_width_of(tail_b)  # of the weights' type, or float32's for bfloat16
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
    _head_logits(h_top, Wy_panels, by, head, 0, 1)
    if clusters.shape[0] == 0:
        return head[0, :width]
    C = clusters.shape[0]
    count = width - C
    norm = log_sum_exp(head[0, :width])
    for r in range(count):
        scores[order[r]] = head[0, r] - norm
    panel_matmul(h_top, Pt_panels, proj)
    for c in range(C):
        first, n = clusters[c, 0], clusters[c, 1]
        logits = _cluster_logits(proj[0], tail_W, tail_b, clusters, c, cluster)
        base = head[0, count + c] - norm - log_sum_exp(logits)
        for v in range(n):
            scores[order[first + v]] = logits[v] + base
    return scores


@njit(cache=True)
def draw_head_first(h_top, output, u, head, proj, cluster, exps, share, shares, counters,
                    meeting):
    """A token drawn at temperature 1 from an adaptive softmax, computing only the head
    and, if the draw lands on a cluster's token, that cluster: exact, because a tail
    character's probability is its cluster's times its own within the cluster, and
    banned ids sit in the head. Returns (token, meetings held so far).

    With shares > 1, the parts of generate split the head's product by panels: each
    computes its share into head, which they all share, and they meet (sync.meet on
    counters, meeting + 1) before each draws from the whole head into its own exps
    (as long as the head, of its type). A cluster each part computes whole, into its
    own scratch cluster (largest padded cluster): one more meeting cost more than
    half a cluster's product saved. With 0 of 1 nobody meets. Scratch: proj (1, padded
    projections)."""
    Wy_panels, by, order, head_banned, Pt_panels, tail_W, tail_b, clusters = output
    width = by.shape[0]
    _head_logits(h_top, Wy_panels, by, head, share, shares)
    if shares > 1:
        meeting += 1
        meet(counters, shares, meeting)
    row = exps[:width]
    exp_below_max(head[0, :width], head_banned, row)
    j, u = draw(row, u)
    count = width - clusters.shape[0]
    if j < count:
        return order[j], meeting
    c = j - count
    first, n = clusters[c, 0], clusters[c, 1]
    panel_matmul(h_top, Pt_panels, proj)
    logits = _cluster_logits(proj[0], tail_W, tail_b, clusters, c, cluster)
    top = row_max(logits)
    row = exps[:n]
    for v in range(n):
        row[v] = fast_exp(logits[v] - top)
    k, _ = draw(row, u)
    return order[first + k], meeting


@njit(cache=True)
def output_scratch(output, dtype):
    """Buffers output_scores and draw_head_first reuse: head (1, padded head width),
    proj (1, padded projections), cluster (largest cluster, padded), scores (V)."""
    Wy_panels, by, order, _, Pt_panels, _, _, clusters = output
    width = panel_width_of(by)
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
        losses[k] = log_sum_exp(logits) - logits[ids[k + 1]]


@njit(cache=True, error_model="numpy", nogil=True)
def generate(cell, table0_units, Wx_up_panels, b_up_units, Wh_panels, bn, output, token,
             uniforms, inv_temperature, top_k, top_p, greedy, banned, h_pair, c_pair,
             out_ids, j0, j1, part, parts, counters, shared_head):
    """Feed `token`, then sample len(out_ids) tokens, each fed back as the next input.

    One stream has no batch rows to share among threads, so each of `parts` threads runs
    this loop for its own units j0:j1 of every layer, and they meet (sync.meet on
    counters) after each layer: the next layer, and the next step, need every unit.
    Then every part computes the logits and draws the token itself: the same arithmetic
    on the same state and uniform gives each the same token, so none waits for another
    to hand it over (one meeting per layer per character, not one more). Part 0 writes
    out_ids. A single thread passes part 0 of 1 and all units.

    A wide output layer is the exception: given shared_head (2, padded head width),
    not empty, the parts split its product by panels into it and meet once more
    before drawing (draw_head_first; only at temperature 1 for an adaptive softmax).
    Step i writes shared_head[i % 2], as for the state.

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
    _, proj, cluster, scores = output_scratch(output, dtype)
    probs = np.empty(V, np.float64)
    exps = np.empty(V, dtype)
    adaptive = output[7].shape[0] > 0
    head_first = (adaptive and inv_temperature == 1.0 and not greedy
                  and (top_k <= 0 or top_k >= V) and top_p >= 1.0)
    split_output = parts > 1 and shared_head.shape[1] > 0 and (head_first or not adaptive)
    share, shares = (part, parts) if split_output else (0, 1)
    # the head's logits: shared, or this part's own, shaped alike
    head_pair = (shared_head if split_output
                 else np.empty((2, panel_columns(output[0])), dtype))
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
        h_top, head_now = h_pair[nxt, L - 1:L], head_pair[i % 2:i % 2 + 1]
        if head_first:
            token, meeting = draw_head_first(h_top, output, uniforms[i], head_now, proj,
                                             cluster, exps, share, shares, counters,
                                             meeting)
        else:
            if adaptive:
                logits = output_scores(h_top, output, head_now, proj, cluster, scores)
            else:  # the logits alone, perhaps split
                _head_logits(h_top, output[0], output[1], head_now, share, shares)
                if shares > 1:
                    meeting += 1
                    meet(counters, shares, meeting)
                logits = head_now[0, :output[1].shape[0]]
            token = choose_token(logits, uniforms[i], inv_temperature, top_k, top_p, greedy,
                                 banned, probs)
        if part == 0:
            out_ids[i] = token
    return token
