"""Work shared by every cell around the recurrence: softmax cross-entropy over the
output logits, and the row scatter that is the backward of an embedding lookup."""

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def softmax_xent(logits, targets, grad_scale, losses):
    """Softmax cross-entropy per row, turning logits into their gradient in place.

    Inputs: logits (M, V); targets (M) ids; grad_scale, the factor applied to
    d loss / d logits (1 / M for a mean loss; 0 skips the gradient and leaves logits
    unchanged). Outputs: losses (M) in nats; logits (M, V) overwritten with
    grad_scale * (softmax - onehot) unless grad_scale is 0.
    Callers may run disjoint row ranges on separate threads (the GIL is released).
    """
    M, V = logits.shape
    for m in range(M):
        row = logits[m]
        top = row[0]
        for v in range(1, V):
            if row[v] > top:
                top = row[v]
        total = 0.0
        for v in range(V):
            total += np.exp(row[v] - top)
        log_total = np.log(total)
        target = targets[m]
        losses[m] = log_total + top - row[target]
        if grad_scale != 0.0:
            for v in range(V):
                row[v] = np.exp(row[v] - top - log_total) * grad_scale
            row[target] -= grad_scale


@njit(cache=True)
def scatter_add_rows(ids, rows, out):
    """out[ids[m]] += rows[m] for every m: the gradient of a row lookup out[ids].
    Inputs: ids (M), rows (M, K). Output: out (V, K) accumulated. Serial, because two
    rows may share an id."""
    for m in range(ids.shape[0]):
        target = out[ids[m]]
        source = rows[m]
        for k in range(source.shape[0]):
            target[k] += source[k]


@njit(cache=True)
def gather_rows_plus(table, ids, bias, out):
    """out[m] = table[ids[m]] + bias: an embedding lookup fused with a bias add.
    Inputs: table (V, K), ids (M), bias (K). Output: out (M, K)."""
    for m in range(ids.shape[0]):
        source = table[ids[m]]
        target = out[m]
        for k in range(source.shape[0]):
            target[k] = source[k] + bias[k]
