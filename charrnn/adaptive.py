"""The adaptive softmax (Grave et al. 2017, "Efficient softmax approximation for GPUs"):
an output layer whose cost hardly grows with the alphabet.

The characters are ranked by frequency. The head is a softmax over the most frequent
characters plus one token per tail cluster; a cluster is a softmax over its own
characters, computed from the top layer's output through a narrower projection (H/4,
then H/16 wide). The probability of a head character is its head probability; of a
tail character, its cluster token's head probability times its probability within the
cluster. That is an exact, normalised distribution over the whole vocabulary, so
sampling, scoring and beam search need nothing but the log-probabilities.

Training and scoring a known text compute the head for every position, but a cluster
only for the positions whose target lies in it: most characters are in the head, so
the rare ones cost little. The unknown symbol always sits in the head, so that
banning it from samples is exact without touching any cluster.

A config's layout: `head` characters, then `tails` ((size, projection width) per
cluster), over `output_order` (the ids, most frequent first). Full softmax is head 0.
"""

from __future__ import annotations

import numpy as np

from . import parallel
from .defaults import ADAPTIVE_FROM_CHARS, SOFTMAXES
from .kernels.output import softmax_xent

HEAD_SHARE = 0.9  # the head holds the most frequent characters up to this share of text
# ...but at least and at most this many: a wider head scored no better at equal time
# (docs/corpora.md, "Large alphabets")
HEAD_MIN, HEAD_MAX = 256, 512
CLUSTER_GROWTH = 4  # each cluster holds this many times the characters before it
TAIL_SHRINK = 4  # and its projection is this much narrower than the one before
MIN_PROJECTION = 8  # the narrowest a cluster's projection gets
MIN_CLUSTER = 64  # a smaller last cluster joins the one before it


def uses_adaptive(softmax: str, vocab_size: int) -> bool:
    if softmax not in SOFTMAXES:
        raise ValueError(f"softmax must be one of {', '.join(SOFTMAXES)}")
    return softmax == "adaptive" or (softmax == "auto" and vocab_size >= ADAPTIVE_FROM_CHARS)


def choose_layout(counts, unknown_id: int | None, hidden: int) -> dict:
    """ModelConfig fields (head, tails, output_order) of an adaptive softmax for a
    vocabulary with these counts per id: the head up to HEAD_SHARE of the text (within
    HEAD_MIN..HEAD_MAX), then clusters CLUSTER_GROWTH times bigger each, behind
    projections TAIL_SHRINK times narrower each (H/4, H/16, ...). The unknown symbol is
    moved into the head."""
    counts = np.asarray(counts, np.float64)
    V = counts.size
    if V < 3:
        raise ValueError("the adaptive softmax needs at least 3 characters")
    order = np.lexsort((np.arange(V), -counts))  # most frequent first, ties by id
    share = np.cumsum(counts[order]) / max(counts.sum(), 1.0)
    head = int(np.searchsorted(share, HEAD_SHARE)) + 1
    head = min(max(head, min(HEAD_MIN, V // 2)), HEAD_MAX, V - 1)
    if unknown_id is not None:
        rank = int(np.flatnonzero(order == unknown_id)[0])
        if rank >= head:  # into the head's last place; the rest move down one
            order = np.concatenate([order[:head - 1], [unknown_id],
                                    np.delete(order, rank)[head - 1:]])
    bounds = [head]
    while bounds[-1] < V:
        bounds.append(min(bounds[-1] * CLUSTER_GROWTH, V))
    if len(bounds) > 2 and bounds[-1] - bounds[-2] < MIN_CLUSTER:
        del bounds[-2]
    tails, width = [], hidden
    for first, end in zip(bounds, bounds[1:]):
        width = max(width // TAIL_SHRINK, min(MIN_PROJECTION, hidden))
        tails.append((end - first, width))
    return {"head": head, "tails": tuple(tails), "output_order": tuple(int(i) for i in order)}


def check_layout(head, tails: tuple, output_order: tuple, vocab_size: int) -> None:
    """Raise ValueError unless (head, tails, output_order) lay out vocab_size ids: whole
    numbers, a head and at least one cluster, sizes adding up, and every id once."""
    ints = all(type(n) is int for pair in tails for n in pair) and all(
        type(n) is int for n in output_order)
    if not (ints and head >= 1 and tails
            and all(len(pair) == 2 and min(pair) >= 1 for pair in tails)
            and head + sum(size for size, _ in tails) == vocab_size
            and len(output_order) == vocab_size  # before building a range of that size
            and sorted(output_order) == list(range(vocab_size))):
        raise ValueError("the adaptive softmax's head, tails and output order do not fit "
                         "the vocabulary")


def describe(layout: dict, counts) -> str:
    """One line for the training run's notes: the layout and the text its head covers."""
    counts = np.asarray(counts, np.float64)
    head = layout["head"]
    covered = counts[list(layout["output_order"][:head])].sum() / max(counts.sum(), 1.0)
    clusters = ", ".join(f"{size:,} through {dim}" for size, dim in layout["tails"])
    return (f"output layer: adaptive softmax, a head of {head:,} characters "
            f"({covered:.1%} of the text) and clusters of {clusters}")


class Layout:
    """Index tables of a config's adaptive softmax: ranks, clusters, head columns."""

    def __init__(self, config):
        self.head = config.head
        self.order = np.array(config.output_order, np.int64)  # rank -> id
        self.rank = np.empty_like(self.order)  # id -> rank
        self.rank[self.order] = np.arange(self.order.size)
        self.sizes = [size for size, _ in config.tails]
        self.starts = list(self.head + np.cumsum([0, *self.sizes[:-1]]))  # first ranks
        self.cluster_of_rank = np.full(self.order.size, -1, np.int64)
        for c, (start, size) in enumerate(zip(self.starts, self.sizes)):
            self.cluster_of_rank[start:start + size] = c

    def head_columns(self, ys) -> tuple[np.ndarray, np.ndarray]:
        """(head column, cluster or -1) of each target id."""
        ranks = self.rank[ys]
        clusters = self.cluster_of_rank[ranks]
        return np.where(clusters < 0, ranks, self.head + clusters), clusters


def _softmax_rows(logits, targets, scale, losses):
    parallel.run_parts(softmax_xent, [(logits[lo:hi], targets[lo:hi], scale, losses[lo:hi])
                                      for lo, hi in parallel.row_ranges(len(logits), 256)])


def forward(layout: Layout, params, x, ys, scale: float, dtype):
    """Losses (M) in nats of targets ys (M) from top-layer outputs x (M, H), and the
    cache backward needs; scale as softmax_xent's grad_scale (0: no gradient)."""
    M = x.shape[0]
    logits = parallel.matmul(x, params["Wy"], np.empty((M, params["by"].size), dtype))
    logits += params["by"]
    columns, clusters = layout.head_columns(ys)
    losses = np.empty(M, np.float64)
    _softmax_rows(logits, columns, scale, losses)
    tails = []
    for c, start in enumerate(layout.starts):
        rows = np.flatnonzero(clusters == c)
        if not rows.size:
            tails.append(None)
            continue
        inputs = x[rows]
        dim, size = params[f"Wt{c}"].shape
        projected = parallel.matmul(inputs, params[f"Pt{c}"], np.empty((rows.size, dim), dtype))
        cluster_logits = parallel.matmul(projected, params[f"Wt{c}"],
                                         np.empty((rows.size, size), dtype))
        cluster_logits += params[f"bt{c}"]
        cluster_losses = np.empty(rows.size, np.float64)
        _softmax_rows(cluster_logits, layout.rank[ys[rows]] - start, scale, cluster_losses)
        losses[rows] += cluster_losses
        tails.append((rows, inputs, projected, cluster_logits))
    return losses, (logits, tails)


def backward(params, grads, x, cache, dtype) -> np.ndarray:
    """Gradients of the output layer into grads (overwritten) from forward's cache,
    whose logits hold d loss / d logits; returns d loss / d x (M, H)."""
    dlogits, tails = cache
    parallel.matmul_tn(x, dlogits, grads["Wy"])
    dlogits.sum(axis=0, out=grads["by"])
    dx = parallel.matmul(dlogits, params["Wy"].T, np.empty(x.shape, dtype))
    for c, tail in enumerate(tails):
        if tail is None:
            for name in (f"Pt{c}", f"Wt{c}", f"bt{c}"):
                grads[name][...] = 0.0
            continue
        rows, inputs, projected, dcluster = tail
        parallel.matmul_tn(projected, dcluster, grads[f"Wt{c}"])
        dcluster.sum(axis=0, out=grads[f"bt{c}"])
        dprojected = parallel.matmul(dcluster, params[f"Wt{c}"].T,
                                     np.empty(projected.shape, dtype))
        parallel.matmul_tn(inputs, dprojected, grads[f"Pt{c}"])
        dx[rows] += dprojected @ params[f"Pt{c}"].T
    return dx


def log_probs(layout: Layout, params, x) -> np.ndarray:
    """log p(v | x) of every id v (M, V), in float64: what sampling's kernel computes
    one row at a time, written plainly (tests compare the two)."""
    def log_softmax(a):
        a = np.asarray(a, np.float64)
        top = a.max(axis=1, keepdims=True)
        return a - top - np.log(np.exp(a - top).sum(axis=1, keepdims=True))
    head = log_softmax(x @ params["Wy"] + params["by"])
    out = np.empty((x.shape[0], layout.order.size))
    out[:, layout.order[:layout.head]] = head[:, :layout.head]
    for c, (start, size) in enumerate(zip(layout.starts, layout.sizes)):
        inner = log_softmax(x @ params[f"Pt{c}"] @ params[f"Wt{c}"] + params[f"bt{c}"])
        out[:, layout.order[start:start + size]] = inner + head[:, layout.head + c, None]
    return out


def initial_biases(layout: Layout, counts) -> dict:
    """Output biases that start the model at the unigram distribution (counts + 1):
    by over the head, bt{c} within each cluster."""
    p = (np.asarray(counts, np.float64) + 1.0)[layout.order]
    p /= p.sum()
    biases = {"by": np.log(np.concatenate(
        [p[:layout.head], [p[s:s + n].sum() for s, n in zip(layout.starts, layout.sizes)]]))}
    for c, (start, size) in enumerate(zip(layout.starts, layout.sizes)):
        inner = p[start:start + size]
        biases[f"bt{c}"] = np.log(inner / inner.sum())
    return biases
