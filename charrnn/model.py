"""The network: configuration, parameters in one flat buffer, and forward/backward
over a (N, T) batch through the Numba kernels.

Architecture: ids -> [embedding (V, E) or one-hot] -> L stacked recurrent layers
(rnn | gru | lstm) -> dropout after each layer -> output projection (H, V) -> softmax,
or, for large alphabets, an adaptive softmax (adaptive.py).
Every parameter is a view into one flat buffer (and every gradient into another), so
the optimizer, gradient clipping and a data-parallel allreduce each see one vector.

Initialisation, written down once here: recurrent and projection weights
U(-1/sqrt(H), 1/sqrt(H)) as in PyTorch; embedding N(0, 1); biases 0, except the LSTM
forget gate bias 1 (so early training remembers by default, as in torch-rnn) and the
output bias, which the trainer may set to the log unigram frequencies. (Orthogonal
recurrent blocks scored worse: docs/quality.md, "Tried and not adopted".)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from . import adaptive, parallel
from .kernels import CELL_CODES, CELL_GATES, CELL_GRU
from .kernels.output import gather_rows_plus, scatter_add_rows, softmax_xent
from .kernels.panels import (
    bfloat16_pairs,
    pack_transposed_panels,
    padded_columns,
    panel_width,
    to_bfloat16,
)
from .kernels.recurrent import (
    recurrent_backward,
    recurrent_backward_team,
    recurrent_forward,
    recurrent_forward_team,
)

CELLS = tuple(CELL_CODES)


@dataclass(frozen=True)
class ModelConfig:
    cell: str  # "lstm", "gru" or "rnn"
    vocab_size: int  # V: output classes, and input ids when embed == 0
    hidden: int  # H: state width of every layer
    layers: int  # L: stacked recurrent layers
    embed: int = 0  # E: learned input embedding width; 0 = one-hot input (as char-rnn)
    dropout: float = 0.0  # inverted dropout after every layer, training only
    # The adaptive softmax's layout (adaptive.py); head 0 is the full softmax.
    head: int = 0  # characters in the head
    tails: tuple = ()  # (characters, projection width) of each tail cluster
    output_order: tuple = ()  # every id, most frequent first: head, then each cluster

    def __post_init__(self):
        if self.cell not in CELL_CODES:
            raise ValueError(f"unknown cell {self.cell!r}: choose one of {', '.join(CELLS)}")
        if min(self.vocab_size, self.hidden, self.layers) < 1 or self.embed < 0:
            raise ValueError("vocab_size, hidden and layers must be >= 1, embed >= 0")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError("dropout must be in [0, 1)")
        # from JSON these are lists: held as tuples, so the config stays hashable
        tails = tuple(tuple(pair) for pair in self.tails)
        object.__setattr__(self, "tails", tails)
        object.__setattr__(self, "output_order", tuple(self.output_order))
        if self.head or tails or self.output_order:
            adaptive.check_layout(self.head, tails, self.output_order, self.vocab_size)

    @property
    def softmax(self) -> str:
        return "adaptive" if self.head else "full"

    @property
    def gates(self) -> int:
        return CELL_GATES[self.cell]

    def parameter_shapes(self) -> list[tuple[str, tuple[int, ...]]]:
        """Names and shapes of every parameter, in buffer order."""
        V, H, E, GH = self.vocab_size, self.hidden, self.embed, self.gates * self.hidden
        shapes = [("embed", (V, E))] if E else []
        for layer in range(self.layers):
            D = (E or V) if layer == 0 else H
            shapes += [(f"Wx{layer}", (D, GH)), (f"Wh{layer}", (H, GH)), (f"b{layer}", (GH,))]
            if self.cell == "gru":
                shapes.append((f"bn{layer}", (H,)))
        if not self.head:
            return shapes + [("Wy", (H, V)), ("by", (V,))]
        width = self.head + len(self.tails)  # the head's characters and cluster tokens
        shapes += [("Wy", (H, width)), ("by", (width,))]
        for c, (size, dim) in enumerate(self.tails):
            shapes += [(f"Pt{c}", (H, dim)), (f"Wt{c}", (dim, size)), (f"bt{c}", (size,))]
        return shapes

    def parameter_count(self) -> int:
        return sum(int(np.prod(shape)) for _, shape in self.parameter_shapes())

    def to_dict(self) -> dict:
        """The fields; the adaptive softmax's only when it is used, so that a charrnn
        from before it still reads full-softmax checkpoints."""
        fields = asdict(self)
        if not self.head:
            for name in ("head", "tails", "output_order"):
                del fields[name]
        return fields

    @classmethod
    def from_dict(cls, data: dict) -> ModelConfig:
        names = cls.__dataclass_fields__
        return cls(**{key: value for key, value in data.items() if key in names})


def flat_views(flat: np.ndarray, config: ModelConfig) -> dict[str, np.ndarray]:
    """Named views into a flat buffer laid out as config.parameter_shapes()."""
    views, start = {}, 0
    for name, shape in config.parameter_shapes():
        size = int(np.prod(shape))
        views[name] = flat[start:start + size].reshape(shape)
        start += size
    return views


def unit_columns(W: np.ndarray, gates: int, j0: int, j1: int) -> np.ndarray:
    """The columns of W (..., G*H) that feed units j0:j1, gate-major and contiguous:
    (..., G*U). Threads that split a layer's units each multiply by their own."""
    H = W.shape[-1] // gates
    if (j0, j1) == (0, H):
        return W
    lead = W.shape[:-1]  # may hold a 0 (no layers above the first): no -1 in reshape
    return np.ascontiguousarray(W.reshape(*lead, gates, H)[..., j0:j1]).reshape(
        *lead, gates * (j1 - j0))


def empty_panels(K: int, C: int, dtype, lead: tuple = (), bfloat16: bool = False):
    """An uninitialised (*lead, P, K, PW) array for K x C matrices packed by
    kernels/panels.py (as bfloat16 bit patterns if asked)."""
    width = panel_width(dtype)
    return np.empty((*lead, padded_columns(C, dtype) // width, K, width),
                    np.uint16 if bfloat16 else dtype)


def packed_panels(W: np.ndarray, bfloat16: bool = False) -> np.ndarray:
    """W (..., K, C) packed for panel_matmul (kernels/panels.py): (..., P, K, PW), each
    matrix of a stack on its own; as bfloat16 bit patterns if asked (float32 W only)."""
    *lead, K, C = W.shape
    panels = empty_panels(K, C, W.dtype, tuple(lead), bfloat16)
    source = to_bfloat16(W) if bfloat16 else W
    # One strided copy in numpy, as pack_panels does it: no kernel to load, which
    # matters to `charrnn sample`'s start (docs/performance.md, "Start-up").
    P, PW = panels.shape[-3], panels.shape[-1]
    whole = C // PW  # panels filled to the last column; the last one may be partial
    panels[..., :whole, :, :] = source[..., :whole * PW].reshape(
        *lead, K, whole, PW).swapaxes(-3, -2)
    if whole < P:
        panels[..., whole, :, :] = 0
        panels[..., whole, :, :C - whole * PW] = source[..., whole * PW:]
    return bfloat16_pairs(panels) if bfloat16 else panels


def transposed_panels(W: np.ndarray) -> np.ndarray:
    """packed_panels(W.T) for float32 or float64 W (C, K) with contiguous rows, packed by
    the kernel, which reads W along its rows (numpy's copy reads down its columns)."""
    panels = empty_panels(W.shape[1], W.shape[0], W.dtype)
    pack_transposed_panels(W, panels)
    return panels


class Model:
    """Parameters plus the forward/backward passes; holds the caches of the last forward."""

    def __init__(self, config: ModelConfig, flat: np.ndarray | None = None, dtype=np.float32):
        self.config = config
        self.dtype = np.dtype(dtype)
        size = config.parameter_count()
        self.flat = np.zeros(size, self.dtype) if flat is None else \
            np.ascontiguousarray(flat, self.dtype)
        if self.flat.shape != (size,):
            raise ValueError(f"expected {size} parameters, got {self.flat.size}")
        self.params = flat_views(self.flat, config)
        self.grad_flat = np.zeros(size, self.dtype)
        self.grads = flat_views(self.grad_flat, config)
        self._piece_grads = []  # gradient buffers of batch pieces after the first
        self.layout = adaptive.Layout(config) if config.head else None
        self._cache = None

    def initialise(self, rng: np.random.Generator, unigram_counts=None) -> None:
        cfg = self.config
        bound = 1.0 / np.sqrt(cfg.hidden)
        for name, view in self.params.items():
            if name == "embed":
                view[...] = rng.standard_normal(view.shape)
            elif name.startswith("Wt"):  # a tail cluster's: fed by its projection
                narrow = 1.0 / np.sqrt(view.shape[0])
                view[...] = rng.uniform(-narrow, narrow, view.shape)
            elif name.startswith(("W", "Pt")):
                view[...] = rng.uniform(-bound, bound, view.shape)
            else:
                view[...] = 0.0
        if cfg.cell == "lstm":
            for layer in range(cfg.layers):
                self.params[f"b{layer}"][cfg.hidden:2 * cfg.hidden] = 1.0  # forget gate
        if unigram_counts is not None and self.layout:
            for name, bias in adaptive.initial_biases(self.layout, unigram_counts).items():
                self.params[name][...] = bias
        elif unigram_counts is not None:
            counts = np.asarray(unigram_counts, np.float64) + 1.0
            self.params["by"][...] = np.log(counts / counts.sum())

    def embedding_fold(self, xs: np.ndarray):
        """How layer 0 computes embed[xs] @ Wx0 for a piece's ids xs (M): as the lookup
        (embed[rows] @ Wx0)[where], which multiplies fewer rows than there are positions
        whenever the batch repeats an id. Returns (rows, where): rows None for every id
        (a vocabulary smaller than the batch: no search for the ids present), else the
        ids present, as a large alphabet's batch holds only some; or None, multiplying
        embed[xs] itself, when no id repeats (or there is no embedding)."""
        if not self.config.embed:
            return None
        if self.config.vocab_size < xs.size:
            return None, xs
        # np.unique(xs, return_inverse=True) by counting, which needs no sort
        present = np.flatnonzero(np.bincount(xs, minlength=self.config.vocab_size))
        if present.size == xs.size:
            return None
        rank = np.empty(self.config.vocab_size, np.int64)
        rank[present] = np.arange(present.size)
        return present, rank[xs]

    def zero_state(self, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        """(h, c), each (L, N, H) zeros; c is unused by GRU and RNN but always carried."""
        shape = (self.config.layers, batch_size, self.config.hidden)
        return np.zeros(shape, self.dtype), np.zeros(shape, self.dtype)

    def forward(self, x_ids, y_ids, h0, c0, masks=None, need_grad=True):
        """Loss of predicting y_ids from x_ids, starting from state (h0, c0).

        x_ids, y_ids (N, T) int; h0, c0 (L, N, H); masks (L, T, N, H) inverted-dropout
        multipliers or None. Returns (mean loss in nats, losses (T*N) per position in
        time-major order, h_final, c_final (L, N, H)). Keeps the caches for backward.

        When threads split the batch (parallel.batch_pieces), each runs the whole
        forward, and later the backward, of its own rows on its own: one hand-off per
        pass instead of one per matrix product and time loop (docs/performance.md,
        "Where the time goes"). Each piece's gradients go to their own buffer;
        backward adds them.
        """
        return self._pass(x_ids, y_ids, h0, c0, masks, need_grad, with_backward=False)

    def forward_backward(self, x_ids, y_ids, h0, c0, masks=None):
        """forward, then backward, in one pass of each thread over its own rows: a
        training step's one hand-off instead of two, and no thread waits for the
        others between the two. Returns forward's results; the gradients are in
        self.grads, as after backward (whose (dh0, dc0) a training step never needs)."""
        return self._pass(x_ids, y_ids, h0, c0, masks, True, with_backward=True)

    def _pass(self, x_ids, y_ids, h0, c0, masks, need_grad, with_backward):
        """forward's work, each piece followed by its backward if asked."""
        N, T = x_ids.shape
        h0 = np.ascontiguousarray(h0, self.dtype)
        c0 = np.ascontiguousarray(c0, self.dtype)
        scale = 1.0 / (N * T) if need_grad else 0.0  # of the whole batch's mean loss
        pieces = parallel.batch_pieces(N, self.config.hidden, self.config.gates,
                                       self.dtype.itemsize)
        grad_flats = self._grad_buffers(len(pieces)) if with_backward else None

        def piece(k, lo, hi):
            with parallel.one_thread_per_piece(len(pieces)):
                result = self._forward_rows(x_ids[lo:hi], y_ids[lo:hi], h0[:, lo:hi],
                                            c0[:, lo:hi],
                                            None if masks is None else masks[:, :, lo:hi],
                                            scale, need_grad)
                if with_backward:
                    self._backward_rows(result[3], grad_flats[k])
                    return result[:3] + (None,)
                return result
        results = parallel.run_parts(piece, [(k, lo, hi) for k, (lo, hi) in enumerate(pieces)])
        if len(results) == 1:
            losses, h_final, c_final, _ = results[0]
        else:  # the pieces' columns of the (T, N) positions, back side by side
            losses = np.concatenate([losses.reshape(T, -1) for losses, _, _, _ in results],
                                    axis=1).reshape(N * T)
            h_final = np.concatenate([h for _, h, _, _ in results], axis=1)
            c_final = np.concatenate([c for _, _, c, _ in results], axis=1)
        if with_backward:
            self._add_piece_gradients(grad_flats)
        self._cache = [(lo, hi, cache) for (lo, hi), (_, _, _, cache) in zip(pieces, results)
                       ] if need_grad and not with_backward else None
        return float(losses.mean()), losses, h_final, c_final

    def _forward_rows(self, x_ids, y_ids, h0, c0, masks, scale, need_grad):
        """forward of batch rows (a piece): (losses, h_final, c_final, cache); each
        position's loss gradient is scaled by `scale` (1 / positions in the batch)."""
        cfg, p = self.config, self.params
        N, T = x_ids.shape
        M, H, GH = N * T, cfg.hidden, cfg.gates * cfg.hidden
        cell = CELL_CODES[cfg.cell]
        xs = np.ascontiguousarray(x_ids.T, dtype=np.int64).reshape(M)  # (M,) time-major
        ys = np.ascontiguousarray(y_ids.T, dtype=np.int64).reshape(M)
        h0 = np.ascontiguousarray(h0)  # a piece's rows of the caller's state
        c0 = np.ascontiguousarray(c0)
        inputs, layer_caches = [], []
        h_final, c_final = np.empty_like(h0), np.empty_like(c0)
        parts = parallel.layer_units(H)
        x = None
        fold = self.embedding_fold(xs)
        for layer in range(cfg.layers):
            gx = np.empty((M, GH), self.dtype)  # (M, GH) input projections
            if layer == 0 and not cfg.embed:
                gather_rows_plus(p["Wx0"], xs, p["b0"], gx)
            elif layer == 0 and fold is not None:
                # embed[x] @ Wx0 = (embed[rows] @ Wx0)[where]: a product, then a lookup
                rows, where = fold
                embedded = p["embed"] if rows is None else p["embed"][rows]
                table = parallel.matmul(embedded, p["Wx0"],
                                        np.empty((embedded.shape[0], GH), self.dtype))
                gather_rows_plus(table, where, p["b0"], gx)
            else:
                x = p["embed"][xs] if layer == 0 else x  # (M, D)
                parallel.matmul(x, p[f"Wx{layer}"], gx)
                gx += p[f"b{layer}"]
            inputs.append(x)
            # (T + 1, N, H): the initial state, then the outputs of every step, so each
            # step's h_prev is one array for the dWh product (one GEMM, not two)
            states = np.empty((T + 1, N, H), self.dtype)
            states[0] = h0[layer]
            hs = states[1:]  # (T, N, H) outputs per step
            cs = np.empty((T, N, H), self.dtype)
            acts = np.empty((T, N, GH), self.dtype)
            aux = np.empty((T, N, H), self.dtype)
            bn = p[f"bn{layer}"] if cfg.cell == "gru" else p[f"b{layer}"][:H]
            Wh, G = p[f"Wh{layer}"], cfg.gates
            counters = np.zeros(1, np.int64)  # for the threads' meetings (kernels/sync.py)
            gh_parts = tuple(np.empty((N, padded_columns(G * (j1 - j0), self.dtype)), self.dtype)
                             for j0, j1 in parts)
            gx_steps = gx.reshape(T, N, GH)
            if parallel.team_runs(len(parts)):  # each thread packs its own Wh columns
                recurrent_forward_team(
                    cell, gx_steps, Wh, bn, states[0], c0[layer], hs, cs, acts, aux,
                    tuple(empty_panels(H, G * (j1 - j0), self.dtype) for j0, j1 in parts),
                    gh_parts, np.array(parts), counters)
            else:
                parallel.run_meeting_parts(recurrent_forward, [
                    (cell, gx_steps, packed_panels(unit_columns(Wh, G, j0, j1)), bn, states[0],
                     c0[layer], hs, cs, acts, aux, gh_part, j0, j1, len(parts), counters)
                    for (j0, j1), gh_part in zip(parts, gh_parts)], counters)
            layer_caches.append((states, cs, acts, aux))
            h_final[layer], c_final[layer] = states[-1], cs[-1]
            out = hs if masks is None else hs * masks[layer]
            x = out.reshape(M, H)
        if self.layout:
            losses, output = adaptive.forward(self.layout, p, x, ys, scale, self.dtype)
        else:
            output = parallel.matmul(x, p["Wy"], np.empty((M, cfg.vocab_size), self.dtype))
            output += p["by"]
            losses = np.empty(M, np.float64)
            parallel.run_parts(softmax_xent, [(output[lo:hi], ys[lo:hi], scale, losses[lo:hi])
                                              for lo, hi in parallel.row_ranges(M, 256)])
        cache = (xs, h0, c0, masks, inputs, layer_caches, x, output, fold) if need_grad \
            else None
        return losses, h_final, c_final, cache

    def backward(self):
        """Gradients of the mean loss of the last forward into self.grads (overwritten).
        Returns (dh0, dc0), each (L, N, H)."""
        if self._cache is None:
            raise RuntimeError("backward needs a forward with need_grad=True first")
        pieces = self._cache
        grad_flats = self._grad_buffers(len(pieces))

        def piece(k, cache):
            with parallel.one_thread_per_piece(len(pieces)):
                return self._backward_rows(cache, grad_flats[k])
        results = parallel.run_parts(piece, [(k, cache) for k, (_, _, cache)
                                             in enumerate(pieces)])
        self._add_piece_gradients(grad_flats)
        if len(results) == 1:
            return results[0]
        return (np.concatenate([dh0 for dh0, _ in results], axis=1),
                np.concatenate([dc0 for _, dc0 in results], axis=1))

    def _grad_buffers(self, pieces: int) -> list[np.ndarray]:
        """One flat gradient buffer per batch piece: grad_flat, then buffers kept from
        one step to the next (allocated once)."""
        while len(self._piece_grads) < pieces - 1:
            self._piece_grads.append(np.zeros_like(self.grad_flat))
        return [self.grad_flat, *self._piece_grads[:pieces - 1]]

    def _add_piece_gradients(self, grad_flats: list[np.ndarray]) -> None:
        for grad_flat in grad_flats[1:]:
            self.grad_flat += grad_flat

    def _backward_rows(self, cache, grad_flat):
        """backward of one piece's forward cache; its gradients overwrite grad_flat."""
        xs, h0, c0, masks, inputs, layer_caches, top, output, fold = cache
        cfg, p = self.config, self.params
        g = self.grads if grad_flat is self.grad_flat else flat_views(grad_flat, cfg)
        L, N, H = h0.shape
        M, GH, T = xs.shape[0], cfg.gates * cfg.hidden, xs.shape[0] // N
        cell = CELL_CODES[cfg.cell]
        # every gradient below is written whole, but for the two that rows scatter into
        if self.layout:
            dx = adaptive.backward(p, g, top, output, self.dtype)
        else:  # output holds d loss / d logits
            parallel.matmul_tn(top, output, g["Wy"])
            output.sum(axis=0, out=g["by"])
            # (M, H) gradient w.r.t. the top layer's output
            dx = parallel.matmul(output, p["Wy"].T, np.empty((M, H), self.dtype))
        dh0 = np.empty_like(h0)
        dc0 = np.empty_like(c0)
        dgx = np.empty((T, N, GH), self.dtype)  # reused by every layer
        dgh = np.empty((T, N, GH), self.dtype) if cell == CELL_GRU else dgx
        parts = parallel.layer_units(H)  # the same for every layer
        for layer in range(L - 1, -1, -1):
            states, cs, acts, aux = layer_caches[layer]
            dhs = dx.reshape(T, N, H)
            if masks is not None:
                dhs = dhs * masks[layer]
            dhs = np.ascontiguousarray(dhs)
            Wh = p[f"Wh{layer}"]
            dbn_parts = np.zeros((len(parts), H), self.dtype)  # one private dbn per thread
            counters = np.zeros(1, np.int64)
            if parallel.team_runs(len(parts)):  # each thread packs its own rows of Wh
                recurrent_backward_team(
                    cell, Wh, states[0], c0[layer], states[1:], cs, acts, aux, dhs, dgx, dgh,
                    dh0[layer], dc0[layer],
                    tuple(empty_panels(GH, j1 - j0, self.dtype) for j0, j1 in parts),
                    dbn_parts, np.array(parts), counters)
            else:
                parallel.run_meeting_parts(recurrent_backward, [
                    (cell, transposed_panels(Wh[j0:j1]), states[0], c0[layer], states[1:], cs,
                     acts, aux, dhs, dgx, dgh, dh0[layer], dc0[layer], dbn_parts[k], j0, j1,
                     len(parts), counters)
                    for k, (j0, j1) in enumerate(parts)], counters)
            if cell == CELL_GRU:
                dbn_parts.sum(axis=0, out=g[f"bn{layer}"])
            dgx_rows, dgh_rows = dgx.reshape(M, GH), dgh.reshape(M, GH)
            # dWh = sum_t h_{t-1}^T dgh_t: h_{t-1} is states[t], the initial state
            # included, so one product covers every step.
            parallel.matmul_tn(states[:-1].reshape(M, H), dgh_rows, g[f"Wh{layer}"])
            dgx_rows.sum(axis=0, out=g[f"b{layer}"])
            if layer == 0 and not cfg.embed:
                g["Wx0"][...] = 0.0
                scatter_add_rows(xs, dgx_rows, g["Wx0"])
                continue
            if layer == 0 and fold is not None:  # forward's (embedding_fold)
                rows, where = fold
                embedded = p["embed"] if rows is None else p["embed"][rows]
                dtable = np.zeros((embedded.shape[0], GH), self.dtype)  # one row per id
                scatter_add_rows(where, dgx_rows, dtable)
                parallel.matmul_tn(embedded, dtable, g["Wx0"])
                if rows is None:
                    parallel.matmul(dtable, p["Wx0"].T, g["embed"])
                else:
                    g["embed"][...] = 0.0
                    g["embed"][rows] = parallel.matmul(
                        dtable, p["Wx0"].T, np.empty((rows.size, cfg.embed), self.dtype))
                continue
            parallel.matmul_tn(inputs[layer], dgx_rows, g[f"Wx{layer}"])
            dx = parallel.matmul(dgx_rows, p[f"Wx{layer}"].T,
                                 np.empty((M, inputs[layer].shape[1]), self.dtype))  # (M, D)
            if layer == 0:
                g["embed"][...] = 0.0
                scatter_add_rows(xs, dx, g["embed"])
        return dh0, dc0
