"""Training defaults that adapt to the job when the user does not choose (and the
settings of `score --adapt` and `sample --adapt`, which train as they read).

Each value was chosen by measurement on tiny shakespeare, training on the first 90% and
scoring the last 10% (`make bench-quality`): a bigger model at a high decaying rate
beats smaller ones that see more characters in a short budget, and long budgets need
dropout. The runs, and every setting tried and not adopted: docs/quality.md, "How the
defaults were chosen".
"""

from __future__ import annotations

# (largest time budget in seconds, value): the first row that fits is used (docs/quality.md).
HIDDEN_BY_BUDGET = ((40, 128), (300, 256), (float("inf"), 384))
DROPOUT_BY_BUDGET = ((180, 0.0), (float("inf"), 0.25))
HIDDEN_FOR_STEPS = 256  # a run bounded by --steps only
SMALL_CORPUS_CHARS = 300_000  # below this, a bigger model mostly memorises
SMALL_CORPUS_DROPOUT = (45, 0.25)  # ... and from this budget on, dropout: many passes
# Characters seen once become the unknown symbol by default, so that every model learns
# what a character it never saw costs (score charges it); unless they are more than this
# share of the text (a tiny corpus), where folding would take the text itself.
FOLD_SINGLETONS_UP_TO = 0.01
# The output layer: "auto" is the adaptive softmax (adaptive.py) from this many
# characters on, where it trains faster at no loss (docs/corpora.md, "Large alphabets").
SOFTMAXES = ("auto", "full", "adaptive")
ADAPTIVE_FROM_CHARS = 1000
HELD_OUT_CHARS_CAP = 20_000  # hold out at most this many characters by default
SCORED_VAL_CHARS_CAP = 1_000_000  # and validate on at most this many of them (--val-chars)
LR_DECAYING = 1e-2  # peak rate when it decays to the end of the run
LR_CONSTANT = 3e-3  # a --steps run: nothing brings a high rate down at the end
LR_FULL_WIDTH = 256  # wider layers get the rate scaled by LR_FULL_WIDTH / hidden
# score.AdaptiveScorer: one RMS-normalised step per segment at ADAPT_LR, then a decay of
# ADAPT_DECAY back to the trained weights (docs/quality.md, "Scoring with --adapt").
ADAPT_SEGMENT = 64
ADAPT_LR = 1e-3
ADAPT_DECAY = 1e-3
ADAPT_CLIP = 5.0  # the gradient norm clipped to, as in training by default


def by_budget(table, time_limit: float):
    return next(value for budget, value in table if time_limit <= budget)


def default_hidden(time_limit: float | None, corpus_chars: int) -> int:
    """Hidden units for a run whose size the user left open."""
    hidden = HIDDEN_FOR_STEPS if time_limit is None else by_budget(HIDDEN_BY_BUDGET, time_limit)
    if corpus_chars < SMALL_CORPUS_CHARS:
        hidden = min(hidden, 128)
    return hidden


def default_dropout(time_limit: float | None, corpus_chars: int) -> float:
    """Dropout for a run that did not choose: none for short budgets (dropout slows
    learning), some once the budget buys many passes over the text."""
    if time_limit is None:
        return 0.0
    dropout = by_budget(DROPOUT_BY_BUDGET, time_limit)
    budget, small_corpus_dropout = SMALL_CORPUS_DROPOUT
    if corpus_chars < SMALL_CORPUS_CHARS and time_limit > budget:
        dropout = max(dropout, small_corpus_dropout)
    return dropout


def default_lr(schedule: str, time_limit: float | None, hidden: int) -> float:
    """Adam's peak learning rate: higher when the schedule brings it down by the end,
    and in inverse proportion to the width beyond LR_FULL_WIDTH units."""
    decaying = schedule in ("cosine", "step") or (schedule == "auto" and time_limit)
    lr = LR_DECAYING if decaying else LR_CONSTANT
    return lr * min(1.0, LR_FULL_WIDTH / hidden)


def default_min_count(counts: dict, corpus_chars: int) -> int:
    """--min-count for a run that did not choose: 2 (the characters seen once are folded
    into the unknown symbol) when there are some, not all, and they are at most
    FOLD_SINGLETONS_UP_TO of the text; else 1 (every character kept)."""
    once = sum(1 for count in counts.values() if count == 1)
    if 0 < once < len(counts) and once <= FOLD_SINGLETONS_UP_TO * corpus_chars:
        return 2
    return 1


def default_val_fraction(corpus_chars: int, fraction: float = 0.1) -> float:
    """The last 10% of the corpus, but never more than HELD_OUT_CHARS_CAP characters."""
    if corpus_chars <= 0:
        return fraction
    return min(fraction, HELD_OUT_CHARS_CAP / corpus_chars)


def describe(table, unit: str = "") -> str:
    """'128 up to 40s, 256 up to 5m, 384 beyond' (for HIDDEN_BY_BUDGET), for help texts."""
    parts = []
    for budget, value in table:
        if budget == float("inf"):
            parts.append(f"{value:g}{unit} beyond")
        else:
            budget = f"{budget // 60:g}m" if budget >= 60 and budget % 60 == 0 else f"{budget:g}s"
            parts.append(f"{value:g}{unit} up to {budget}")
    return ", ".join(parts)
