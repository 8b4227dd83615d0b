"""The sampling module: one-to-many generation from a prime (sampled or by beam search),
with the decoding options, the prime's handling and stop strings that `charrnn sample`
and TrainedModel.generate share. Scoring a text is score.py's.

Generation streams: text is produced in growing chunks by one compiled call each, so
the first characters appear at once and long runs cost no Python per character.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

from . import parallel
from .kernels import CELL_CODES
from .kernels.sampling import generate, score_tokens, step_logits, step_scratch
from .model import packed_panels, unit_columns

LN2 = math.log(2.0)
# Generation splits each layer's units among threads from this width on (one stream
# has no rows to split); the threads meet once per layer per character.
SAMPLE_SPLIT_WIDTH = 128
# Texts this long are scored by the training forward over chunks of SCORE_CHUNK
# characters; shorter ones (a prime, a line) by the one-token step, which has no
# per-call set-up.
BATCHED_SCORE_CHARS = 512
SCORE_CHUNK = 4096
# Generation multiplies bfloat16 weights by default (precision "auto") once the float32
# weights it reads per character exceed this, the smallest size measured faster: a
# fixed size, not this machine's caches, so a checkpoint and seed give the same text
# everywhere (measured: docs/quality.md).
BFLOAT16_FROM_BYTES = 256 << 10
# Generation's threads split an output layer at least this wide between them
# (kernels/sampling.generate), at the cost of one more meeting per character.
SPLIT_OUTPUT_COLUMNS = 256
PRECISIONS = ("auto", "float32", "bfloat16")


def generates_in_bfloat16(model, precision: str = "auto") -> bool:
    """Whether generation multiplies by bfloat16 weights: asked for, or "auto" and the
    float32 weights it multiplies are above BFLOAT16_FROM_BYTES. Only float32 models
    are ever rounded."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}")
    multiplied = sum(view.size for name, view in model.params.items() if multiplies(name))
    return model.dtype == np.float32 and (precision == "bfloat16" or (
        precision == "auto" and multiplied * 4 > BFLOAT16_FROM_BYTES))


def multiplies(name: str) -> bool:
    """Whether generation multiplies by the parameter `name` (rather than looking rows
    of it up, as the first layer's input table): the weights bfloat16 rounds."""
    return (name == "Wy" or name.startswith(("Wh", "Pt", "Wt"))
            or (name.startswith("Wx") and name != "Wx0"))


def output_layer(model, banned, bfloat16: bool = False) -> tuple:
    """The output layer as kernels/sampling.output_scores takes it: the head's weights
    packed, and for an adaptive softmax the clusters' projections and weights packed
    too, laid end to end; all in bfloat16 if asked. banned (V) bool: ids never drawn,
    which must be in the head."""
    cfg, p, dtype = model.config, model.params, model.dtype
    Wy_panels = packed_panels(np.ascontiguousarray(p["Wy"]), bfloat16)
    by = np.ascontiguousarray(p["by"])
    if not cfg.head:
        return (Wy_panels, by, np.arange(cfg.vocab_size), banned,
                packed_panels(np.zeros((cfg.hidden, 0), dtype)), np.zeros(0, dtype),
                np.zeros(0, dtype), np.zeros((0, 5), np.int64))
    layout = model.layout
    if banned[layout.order[cfg.head:]].any():
        raise ValueError("a banned character is outside the adaptive softmax's head")
    tails = range(len(cfg.tails))
    head_banned = np.concatenate([banned[layout.order[:cfg.head]], np.zeros(len(tails), bool)])
    projections = packed_panels(np.concatenate([p[f"Pt{c}"] for c in tails], axis=1),
                                bfloat16)
    packed = [packed_panels(np.ascontiguousarray(p[f"Wt{c}"]), bfloat16).reshape(-1)
              for c in tails]
    tail_W = np.concatenate(packed)
    tail_b = np.concatenate([p[f"bt{c}"] for c in tails])
    dims = [dim for _, dim in cfg.tails]
    clusters = np.array([(layout.starts[c], layout.sizes[c], sum(dims[:c]), dims[c],
                          sum(panels.size for panels in packed[:c])) for c in tails],
                        np.int64)
    return (Wy_panels, by, layout.order, head_banned, projections, tail_W, tail_b, clusters)


@dataclass(frozen=True)
class Decoding:
    temperature: float = 1.0  # > 0; lower is more conservative
    top_k: int = 0  # keep the k most likely characters; 0 = off
    top_p: float = 1.0  # keep the smallest set with this much probability; 1 = off
    greedy: bool = False  # always the most likely character


class Sampler:
    """A trained model prepared for one-token steps: weights stacked per layer and the
    first layer's input projection turned into a (V, GH) lookup table."""

    def __init__(self, model, vocab, precision: str = "auto"):
        """precision of the weights generation multiplies by (generates_in_bfloat16):
        bfloat16 halves the memory read per character. Scoring and beam search always
        use the weights as trained."""
        self.bfloat16 = generates_in_bfloat16(model, precision)
        cfg, p = model.config, model.params
        self.model, self.vocab, self.config = model, vocab, cfg
        self.cell = CELL_CODES[cfg.cell]
        H, GH, L, dtype = cfg.hidden, cfg.gates * cfg.hidden, cfg.layers, model.dtype
        first = p["embed"] @ p["Wx0"] if cfg.embed else p["Wx0"]
        self.table0 = np.ascontiguousarray(first + p["b0"], dtype)  # (V, GH)
        self.Wx_up = np.zeros((L - 1, H, GH), dtype)  # (L-1, H, GH)
        self.b_up = np.zeros((L - 1, GH), dtype)
        for layer in range(1, L):
            self.Wx_up[layer - 1] = p[f"Wx{layer}"]
            self.b_up[layer - 1] = p[f"b{layer}"]
        self.Wh = np.stack([p[f"Wh{layer}"] for layer in range(L)])  # (L, H, GH)
        self.bn = np.zeros((L, H), dtype)
        if cfg.cell == "gru":
            self.bn[...] = [p[f"bn{layer}"] for layer in range(L)]
        self.banned = np.zeros(vocab.size, np.bool_)
        if vocab.unknown_id is not None:
            self.banned[vocab.unknown_id] = True
        self.dtype = dtype
        self.output = output_layer(model, self.banned, self.bfloat16)
        self.unit_parts = self.split_weights()

    @functools.cached_property
    def step_weights(self) -> tuple:
        """The one-token step's arguments (kernels/sampling.step_logits), for scoring and
        beam search: every weight as trained, all units on one thread. Generation's
        panels are those when it runs unsplit in the model's precision; else packed
        here, once, when first needed (a plain `sample` never needs them)."""
        if not self.bfloat16 and len(self.unit_parts) == 1:
            _, _, _, Wx_up_panels, _, Wh_panels = self.unit_parts[0]
        else:
            Wx_up_panels, Wh_panels = packed_panels(self.Wx_up), packed_panels(self.Wh)
        output = self.output if not self.bfloat16 else output_layer(self.model, self.banned)
        return (self.cell, self.table0, Wx_up_panels, self.b_up, Wh_panels, self.bn, output)

    def split_weights(self) -> list[tuple]:
        """Per generating thread: (j0, j1, table0, Wx_up, b_up, Wh) with the columns
        that feed its units j0:j1, the matrices packed (see kernels/sampling.generate)."""
        H, G = self.config.hidden, self.config.gates
        ranges = parallel.unit_ranges(H) if H >= SAMPLE_SPLIT_WIDTH else [(0, H)]
        parts = []
        for j0, j1 in ranges:
            table0, Wx_up, b_up, Wh = (unit_columns(W, G, j0, j1) for W in
                                       (self.table0, self.Wx_up, self.b_up, self.Wh))
            parts.append((j0, j1, table0, packed_panels(Wx_up, self.bfloat16), b_up,
                          packed_panels(Wh, self.bfloat16)))
        return parts

    def generate_into(self, token: int, uniforms, decoding: Decoding, h, c, out) -> int:
        """Feed token, then sample len(out) ids into out, each fed back as the next
        input; (h, c) advance. Returns the last id."""
        parts = len(self.unit_parts)
        h_pair, c_pair = np.stack([h, h]), np.stack([c, c])  # (2, L, H)
        counters = np.zeros(1, np.int64)
        shared_head = self.shared_head(parts)
        parallel.run_meeting_parts(generate, [
            (self.cell, table0, Wx_up, b_up, Wh, self.bn, self.output, token, uniforms,
             1.0 / decoding.temperature, decoding.top_k, decoding.top_p, decoding.greedy,
             self.banned, h_pair, c_pair, out, j0, j1, part, parts, counters, shared_head)
            for part, (j0, j1, table0, Wx_up, b_up, Wh) in enumerate(self.unit_parts)], counters)
        h[...], c[...] = h_pair[len(out) % 2], c_pair[len(out) % 2]
        return int(out[-1]) if len(out) else token

    def shared_head(self, parts: int) -> np.ndarray:
        """A fresh buffer for generation's threads to split the output layer's (or the
        adaptive softmax's head's) product in (kernels/sampling.generate): (2, padded
        width); empty, so each thread computes all of it, below SPLIT_OUTPUT_COLUMNS."""
        Wy_panels = self.output[0]
        columns = Wy_panels.shape[0] * Wy_panels.shape[2]
        if parts == 1 or columns < SPLIT_OUTPUT_COLUMNS:
            return np.empty((2, 0), self.dtype)
        return np.empty((2, columns), self.dtype)

    def prepare(self, decoding: Decoding) -> None:
        """Load the generation kernel for these settings now, or compile it on a cold
        cache, before any text is written: without a prime the first character needs
        no kernel, so compiling would otherwise start (and a note about it print)
        after that character, mid-line on a terminal."""
        h, c = self.zero_state()
        self.generate_into(0, np.empty(0), decoding, h, c, np.empty(0, np.int64))

    def zero_state(self):
        shape = (self.config.layers, self.config.hidden)
        return np.zeros(shape, self.dtype), np.zeros(shape, self.dtype)

    def token_losses(self, ids, h, c) -> np.ndarray:
        """Nats of ids[k + 1] given ids[:k + 1] for each k; advances (h, c) over ids[:-1].

        The inputs of a text are all known in advance, so a long one runs through the
        training forward (batch of one stream) chunk by chunk: each layer's input
        projections become one matrix product per chunk instead of one per character,
        and wide layers split their units among the threads."""
        ids = np.asarray(ids, np.int64)
        losses = np.empty(max(len(ids) - 1, 0), np.float64)
        if len(ids) < BATCHED_SCORE_CHARS:
            if len(ids) > 1:
                score_tokens(*self.step_weights, ids, h, c, losses)
            return losses
        for begin in range(0, len(ids) - 1, SCORE_CHUNK):
            end = min(begin + SCORE_CHUNK, len(ids) - 1)
            _, losses[begin:end], h_end, c_end = self.model.forward(
                ids[None, begin:end], ids[None, begin + 1:end + 1], h[:, None], c[:, None],
                need_grad=False)
            h[...], c[...] = h_end[:, 0], c_end[:, 0]
        return losses

    def first_token(self, rng: np.random.Generator) -> int:
        """With no prime, the first character is drawn from the corpus's unigram counts."""
        counts = np.array(self.vocab.counts, np.float64)
        return int(np.searchsorted(np.cumsum(counts), rng.random() * counts.sum(), "right"))

    def stream(self, prime_ids, length: int, decoding: Decoding, rng: np.random.Generator,
               first_chunk: int = 32, max_chunk: int = 4096):
        """Yield chunks of generated text; length 0 means endless. Without a prime, the
        first yielded character is the unigram draw and counts towards length."""
        h, c = self.zero_state()
        if len(prime_ids):
            self.token_losses(prime_ids, h, c)  # run the model over the prime
            token = int(prime_ids[-1])
        else:
            token = self.first_token(rng)
            yield self.vocab.decode([token])
            if length == 1:
                return
            length = max(length - 1, 0)
        produced, chunk = 0, first_chunk
        while not length or produced < length:
            n = chunk if not length else min(chunk, length - produced)
            if n <= 0:
                break
            out = np.empty(n, np.int64)
            token = self.generate_into(token, rng.random(n), decoding, h, c, out)
            produced += n
            chunk = min(chunk * 2, max_chunk)
            yield self.vocab.decode(out)

    def beam_search(self, prime_ids, length: int, width: int, rng: np.random.Generator) -> str:
        """The most likely continuation of `length` characters found by a beam of `width`
        (deterministic; rng only draws the first character when there is no prime)."""
        h, c = self.zero_state()
        prefix = ""
        if len(prime_ids):
            self.token_losses(prime_ids, h, c)
            token = int(prime_ids[-1])
        else:
            token = self.first_token(rng)
            prefix, length = self.vocab.decode([token]), length - 1
        cell, table0, Wx_up, b_up, Wh, bn, output = self.step_weights
        scratch = step_scratch(table0, Wh, output, self.dtype)
        beams = [(0.0, [], token, h, c)]  # (log-prob, ids, next input, h, c)
        for _ in range(max(length, 0)):
            candidates = []
            for score, ids, tok, bh, bc in beams:
                bh, bc = bh.copy(), bc.copy()
                logits = step_logits(cell, table0, tok, Wx_up, b_up, Wh, bn, output, bh, bc,
                                     scratch)
                logp = logits.astype(np.float64)
                logp[self.banned] = -np.inf
                logp -= np.logaddexp.reduce(logp)
                for nxt in np.argsort(-logp, kind="stable")[:width]:
                    candidates.append((score + logp[nxt], ids + [int(nxt)], int(nxt), bh, bc))
            candidates.sort(key=lambda beam: -beam[0])
            beams = candidates[:width]
        return prefix + self.vocab.decode(beams[0][1])


def encode_prime(vocab, prime: str):
    """(ids, prime as the model reads it, the characters it never saw): unknown
    characters are skipped, not mapped to the unknown symbol."""
    ids, unknown = vocab.encode(prime, skip_unknown=True)
    if not unknown.any():
        return ids, prime, ""
    missing = "".join(sorted({ch for ch, bad in zip(prime, unknown) if bad}))
    return ids, vocab.decode(ids), missing


def sample_pieces(sampler: Sampler, prime_ids, prime: str, length: int, decoding: Decoding,
                  rng: np.random.Generator, stops=(), beam: int | None = None):
    """The text of one sample as it is made: the prime, then `length` characters (0:
    endless), ended after the first stop string; or with beam, the most likely
    continuation found by a beam of that width."""
    if beam:
        yield prime + sampler.beam_search(prime_ids, length, beam, rng)
        return
    if prime:
        yield prime
    yield from with_stops(sampler.stream(prime_ids, length, decoding, rng), stops)


def with_stops(pieces, stops):
    """Pass text through until the first occurrence of any stop string, which is kept."""
    if not stops:
        yield from pieces
        return
    tail, keep = "", max(len(s) for s in stops) - 1
    for piece in pieces:
        window = tail + piece
        ends = [window.find(s) + len(s) for s in stops if s in window]
        if ends:
            yield window[len(tail):min(ends)] if min(ends) > len(tail) else ""
            return
        yield piece
        tail = window[-keep:] if keep else ""
