"""The sampling module: one-to-many generation from a prime, many-to-one scoring of a
text (optionally adapting the model to the text as it reads, AdaptiveScorer), and beam
search, all running the compiled one-token step of kernels/recurrent.

Generation streams: text is produced in growing chunks by one compiled call each, so
the first characters appear at once and long runs cost no Python per character.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

from . import parallel
from .defaults import ADAPT_CLIP, ADAPT_DECAY, ADAPT_LR, ADAPT_SEGMENT
from .kernels import CELL_CODES
from .kernels.optim import pull_towards
from .kernels.sampling import generate, score_tokens, step_logits, step_scratch
from .model import Model, packed_panels, unit_columns
from .optim import Adam, clip_by_global_norm

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
# weights it reads per character exceed this: a fixed size, not this machine's caches,
# so a checkpoint and seed give the same text everywhere. Measured here (2 threads,
# 2 MB of L2 per core): 2x128 (0.8 MiB) 1.04x faster with bfloat16, 2x256 (3.1 MiB)
# 1.28x, 3x256 (5.1 MiB) 2.5x, 2x384 (6.8 MiB) 3.0x, 2x512 (12 MiB) 2.0x.
BFLOAT16_FROM_BYTES = 4 << 20
PRECISIONS = ("auto", "float32", "bfloat16")


def generates_in_bfloat16(model, precision: str = "auto") -> bool:
    """Whether generation multiplies by bfloat16 weights: asked for, or "auto" and the
    float32 weights it multiplies (Wx above the first layer, every Wh, Wy) are above
    BFLOAT16_FROM_BYTES. Only float32 models are ever rounded."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}")
    multiplied = sum(view.size for name, view in model.params.items()
                     if name == "Wy" or name.startswith("Wh")
                     or (name.startswith("Wx") and name != "Wx0"))
    return model.dtype == np.float32 and (precision == "bfloat16" or (
        precision == "auto" and multiplied * 4 > BFLOAT16_FROM_BYTES))


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
        self.Wy = np.ascontiguousarray(p["Wy"])
        self.by = np.ascontiguousarray(p["by"])
        self.banned = np.zeros(vocab.size, np.bool_)
        if vocab.unknown_id is not None:
            self.banned[vocab.unknown_id] = True
        self.dtype = dtype
        self.Wy_panels = packed_panels(self.Wy, self.bfloat16)
        self.unit_parts = self.split_weights()

    @functools.cached_property
    def step_weights(self) -> tuple:
        """The one-token step's arguments (kernels/sampling.step_logits), for scoring and
        beam search: every weight as trained, all units on one thread. Generation's
        panels are those when it runs unsplit in the model's precision; else packed
        here, once, when first needed (a plain `sample` never needs them)."""
        if not self.bfloat16 and len(self.unit_parts) == 1:
            _, _, _, Wx_up_panels, _, Wh_panels = self.unit_parts[0]
            Wy_panels = self.Wy_panels
        else:
            Wx_up_panels, Wh_panels = packed_panels(self.Wx_up), packed_panels(self.Wh)
            Wy_panels = packed_panels(self.Wy)
        return (self.cell, self.table0, Wx_up_panels, self.b_up, Wh_panels, self.bn,
                Wy_panels, self.by)

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
        counters, token_box = np.zeros(1, np.int64), np.zeros(1, np.int64)
        parallel.run_meeting_parts(generate, [
            (self.cell, table0, Wx_up, b_up, Wh, self.bn, self.Wy_panels, self.by, token, uniforms,
             1.0 / decoding.temperature, decoding.top_k, decoding.top_p, decoding.greedy,
             self.banned, h_pair, c_pair, out, j0, j1, part, parts, counters, token_box)
            for part, (j0, j1, table0, Wx_up, b_up, Wh) in enumerate(self.unit_parts)], counters)
        h[...], c[...] = h_pair[len(out) % 2], c_pair[len(out) % 2]
        return int(out[-1]) if len(out) else token

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
        cell, table0, Wx_up, b_up, Wh, bn, Wy, by = self.step_weights
        scratch = step_scratch(table0, Wh, Wy, self.dtype)
        beams = [(0.0, [], token, h, c)]  # (log-prob, ids, next input, h, c)
        for _ in range(max(length, 0)):
            candidates = []
            for score, ids, tok, bh, bc in beams:
                bh, bc = bh.copy(), bc.copy()
                logits = step_logits(cell, table0, tok, Wx_up, b_up, Wh, bn, Wy, by, bh, bc,
                                     scratch)
                logp = logits.astype(np.float64)
                logp[self.banned] = -np.inf
                logp -= np.logaddexp.reduce(logp)
                for nxt in np.argsort(-logp, kind="stable")[:width]:
                    candidates.append((score + logp[nxt], ids + [int(nxt)], int(nxt), bh, bc))
            candidates.sort(key=lambda beam: -beam[0])
            beams = candidates[:width]
        return prefix + self.vocab.decode(beams[0][1])


class AdaptiveScorer:
    """Scores a text while the model learns from it (dynamic evaluation, Krause et al.
    2018, "Dynamic Evaluation of Neural Sequence Models"): each segment of `segment`
    characters is scored with the weights as they are, then the weights take one step
    of RMS-normalised gradient descent (Adam without momentum) on that segment's loss
    and decay by `decay` of the way back to the trained weights, which keeps a long
    text from pulling the model far from what it learnt in training. Every character
    is still predicted only from the characters before it, so the total is a proper
    code length for the text; it is lower than the static score when the text has its
    own names and habits (another play, another program) that the model can pick up as
    it goes. The weights are a copy: the model given is not changed. The same text
    scores the same at the same thread count; threads that split a layer sum its
    gradients in another order, and the steps carry such differences forward.

    Offers what score_text needs of a Sampler: vocab, zero_state and token_losses."""

    def __init__(self, model, vocab, lr: float = ADAPT_LR, segment: int = ADAPT_SEGMENT,
                 decay: float = ADAPT_DECAY):
        if not (lr > 0 and segment >= 1 and 0 <= decay < 1):
            raise ValueError("the adaptation rate must be > 0, the segment >= 1 and the "
                             "decay in [0, 1)")
        self.model = Model(model.config, model.flat.copy(), model.dtype)
        self.trained = model.flat.copy()  # what the weights decay towards
        self.vocab, self.config, self.dtype = vocab, model.config, model.dtype
        self.lr, self.segment, self.decay = lr, segment, model.dtype.type(decay)
        self.optimizer = Adam(model.flat.size, model.dtype, beta1=0.0)

    zero_state = Sampler.zero_state

    def token_losses(self, ids, h, c) -> np.ndarray:
        """As Sampler.token_losses, adapting the weights after every segment."""
        ids = np.asarray(ids, np.int64)
        losses = np.empty(max(len(ids) - 1, 0), np.float64)
        model = self.model
        for begin in range(0, len(ids) - 1, self.segment):
            end = min(begin + self.segment, len(ids) - 1)
            # copies: the forward's cache keeps its initial state for the backward
            _, losses[begin:end], h_end, c_end = model.forward(
                ids[None, begin:end], ids[None, begin + 1:end + 1], h[:, None].copy(),
                c[:, None].copy())
            model.backward()
            h[...], c[...] = h_end[:, 0], c_end[:, 0]
            if math.isfinite(clip_by_global_norm(model.grad_flat, ADAPT_CLIP)):
                self.optimizer.step(model.flat, model.grad_flat, self.lr)
                if self.decay:
                    pull_towards(model.flat, self.trained, self.decay)
        return losses


def adapted_to(model, vocab, ids, lr: float = ADAPT_LR) -> Model:
    """A copy of model after reading ids as `score --adapt` does, to generate in the
    manner of a long prime (its names, spelling, layout)."""
    scorer = AdaptiveScorer(model, vocab, lr)
    scorer.token_losses(ids, *scorer.zero_state())
    return scorer.model


def score_text(sampler: Sampler | AdaptiveScorer, text: str, chunk_chars: int = 1 << 20
               ) -> dict:
    """Bits per character of text under the model, the state carried through the whole
    text. Characters outside the vocabulary are counted and skipped. The first character
    has no context and is not scored.

    The text is encoded chunk_chars at a time. A scorer that learns per segment
    (AdaptiveScorer) is handed whole segments until the last, and the ids left over go
    on to the next chunk: segments fall where they would in the text scored whole."""
    vocab = sampler.vocab
    segment = getattr(sampler, "segment", 1)
    h, c = sampler.zero_state()
    total, count, unknown = 0.0, 0, 0
    pending = np.empty(0, np.int64)  # the last input id, and ids not yet scored
    for begin in range(0, len(text), chunk_chars):
        ids, unknown_mask = vocab.encode(text[begin:begin + chunk_chars], skip_unknown=True)
        unknown += int(unknown_mask.sum())
        ids = np.concatenate([pending, ids])
        targets = len(ids) - 1
        if begin + chunk_chars < len(text):
            targets -= targets % segment
        if targets > 0:
            losses = sampler.token_losses(ids[:targets + 1], h, c)
            total += float(losses.sum())
            count += losses.size
        pending = ids[max(targets, 0):]
    nats = total / count if count else math.nan
    return {"bits_per_char": nats / LN2, "nats_per_char": nats, "chars": count,
            "unknown_chars": unknown}


def score_line(sampler: Sampler, line: str) -> float:
    """Bits per character of one line from a fresh state. When the vocabulary has a
    newline, the line is scored as it stands in a corpus: predicted from a newline, and
    its own closing newline predicted too (so an empty line still gets a score)."""
    newline = "\n" if "\n" in sampler.vocab.chars else ""
    ids, _ = sampler.vocab.encode(newline + line + newline, skip_unknown=True)
    h, c = sampler.zero_state()
    losses = sampler.token_losses(ids, h, c)
    return float(losses.mean()) / LN2 if losses.size else math.nan
