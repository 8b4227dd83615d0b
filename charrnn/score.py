"""Scoring: many-to-one, how likely a text is under the model in bits per character,
statically (a Sampler's weights) or while the model learns from the text as it reads
it (AdaptiveScorer, `score --adapt`).
"""

from __future__ import annotations

import math

import numpy as np

from .defaults import ADAPT_CLIP, ADAPT_DECAY, ADAPT_LR, ADAPT_SEGMENT
from .kernels.optim import pull_towards
from .model import Model
from .optim import Adam, clip_by_global_norm
from .sample import LN2, Sampler


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
    text. Characters outside the vocabulary are counted (unknown_chars) and, when the
    model has an unknown symbol (rare characters folded in training), charged its
    probability, as validation in training does; a model without one skips them. The
    first character has no context and is not scored.

    The text is encoded chunk_chars at a time. A scorer that learns per segment
    (AdaptiveScorer) is handed whole segments until the last, and the ids left over go
    on to the next chunk: segments fall where they would in the text scored whole."""
    vocab = sampler.vocab
    segment = getattr(sampler, "segment", 1)
    h, c = sampler.zero_state()
    total, count, unknown = 0.0, 0, 0
    pending = np.empty(0, np.int64)  # the last input id, and ids not yet scored
    for begin in range(0, len(text), chunk_chars):
        ids, unknown_mask = vocab.encode(text[begin:begin + chunk_chars])
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
    its own closing newline predicted too (so an empty line still gets a score).
    Unknown characters count as in score_text."""
    newline = "\n" if "\n" in sampler.vocab.chars else ""
    ids, _ = sampler.vocab.encode(newline + line + newline)
    h, c = sampler.zero_state()
    losses = sampler.token_losses(ids, h, c)
    return float(losses.mean()) / LN2 if losses.size else math.nan
