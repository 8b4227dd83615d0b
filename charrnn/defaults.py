"""Training defaults that adapt to the job when the user does not choose.

Measured on tiny shakespeare (1 MB) on 2 cores, scoring the last 10% after training on
the first 90% (see `make bench-quality`): at a 75 s budget a 2 x 128 LSTM that sees ~6
passes of the text beat 2 x 192 and 2 x 256 models that saw fewer characters; a cosine
learning-rate decay to the end of the budget gained 0.03 nats/char over a constant rate;
and holding out 10% of the training text for validation cost 0.09 nats/char against
holding out 2%, because the held-out tail is the text closest to what is scored next.
Bigger budgets and bigger corpora get bigger models.
"""

from __future__ import annotations

# (largest time budget in seconds, hidden units): the first row that fits is used.
HIDDEN_BY_BUDGET = ((180, 128), (1200, 256), (float("inf"), 384))
HIDDEN_FOR_STEPS = 256  # a run bounded by --steps only
SMALL_CORPUS_CHARS = 300_000  # below this, a bigger model mostly memorises
VAL_CHARS_CAP = 20_000  # hold out at most this many characters by default


def default_hidden(time_limit: float | None, corpus_chars: int) -> int:
    """Hidden units for a run whose size the user left open."""
    if time_limit is None:
        hidden = HIDDEN_FOR_STEPS
    else:
        hidden = next(h for budget, h in HIDDEN_BY_BUDGET if time_limit <= budget)
    if corpus_chars < SMALL_CORPUS_CHARS:
        hidden = min(hidden, 128)
    return hidden


def default_val_fraction(corpus_chars: int, fraction: float = 0.1) -> float:
    """The last 10% of the corpus, but never more than VAL_CHARS_CAP characters."""
    if corpus_chars <= 0:
        return fraction
    return min(fraction, VAL_CHARS_CAP / corpus_chars)
