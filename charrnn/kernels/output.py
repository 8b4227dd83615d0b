"""Work shared by every cell around the recurrence: softmax cross-entropy over the
output logits, and the row scatter that is the backward of an embedding lookup."""

import numpy as np
from numba import njit

from .activations import fast_exp
from .decoding import row_max


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _row_sum(row):
    """Sum of a row in float64 with eight independent partial sums: a fixed order (so
    results repeat exactly) that still vectorises."""
    V = row.shape[0]
    partial = np.zeros(8)
    blocks = V // 8 * 8
    for v in range(0, blocks, 8):
        for k in range(8):
            partial[k] += row[v + k]
    total = partial.sum()
    for v in range(blocks, V):
        total += row[v]
    return total


@njit(cache=True, nogil=True, error_model="numpy")
def softmax_xent(logits, targets, grad_scale, losses):
    """Softmax cross-entropy per row, turning logits into their gradient in place.

    Inputs: logits (M, V); targets (M) ids; grad_scale, the factor applied to
    d loss / d logits (1 / M for a mean loss; 0 when no gradient is wanted).
    Outputs: losses (M) in nats; logits (M, V) overwritten: with
    grad_scale * (softmax - onehot), or, when grad_scale is 0, with scratch values.
    One exp per logit, in a loop of its own so it vectorises (see activations.py); sums
    run in float64. Callers may run disjoint row ranges on separate threads (the
    GIL is released).
    """
    M, V = logits.shape
    for m in range(M):
        row = logits[m]
        top = row_max(row)
        target = targets[m]
        target_logit = row[target]
        for v in range(V):
            row[v] = fast_exp(row[v] - top)
        total = _row_sum(row)
        losses[m] = np.log(total) + top - target_logit
        if grad_scale != 0.0:
            scale = grad_scale / total
            for v in range(V):
                row[v] = row[v] * scale
            row[target] -= grad_scale


@njit(cache=True, nogil=True)
def scatter_add_rows(ids, rows, out):
    """out[ids[m]] += rows[m] for every m: the gradient of a row lookup out[ids].
    Inputs: ids (M), rows (M, K). Output: out (V, K) accumulated. Serial, because two
    rows may share an id."""
    for m in range(ids.shape[0]):
        target = out[ids[m]]
        source = rows[m]
        for k in range(source.shape[0]):
            target[k] += source[k]


@njit(cache=True, nogil=True)
def gather_rows_plus(table, ids, bias, out):
    """out[m] = table[ids[m]] + bias: an embedding lookup fused with a bias add.
    Inputs: table (V, K), ids (M), bias (K). Output: out (M, K)."""
    for m in range(ids.shape[0]):
        source = table[ids[m]]
        target = out[m]
        for k in range(source.shape[0]):
            target[k] = source[k] + bias[k]
