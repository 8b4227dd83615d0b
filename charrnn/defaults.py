"""Training defaults that adapt to the job when the user does not choose (and the
settings of `score --adapt` and `sample --adapt`, which train as they read).

Measured on tiny shakespeare (1 MB) on 2 cores, scoring the last 10% after training on
the first 90% (see `make bench-quality` and the README's "Quality" section):
- at a 75 s budget, 2 x 256 beat 2 x 192 and 2 x 128 once the learning rate was raised
  (1.551, 1.556 and 1.606 nats/char at 1e-2), although the bigger model sees a third of
  the characters;
- with the rate decaying to the end of the run, a high peak pays: at 75 s and 2 x 256,
  3e-3 gave 1.607, 6e-3 1.559, 1e-2 1.551 and 2e-2 1.600 nats/char (2 x 128: 1.612,
  1.608, 1.606, 1.609); a constant rate (a --steps run) keeps 3e-3, since nothing brings
  a high rate down at the end; wider models want less: 2 x 384 for 10 min scored 1.533
  at 6e-3 but 1.573 at 1e-2, so the rate falls as 256 / hidden beyond 256 units;
- a budget that buys many passes over the text overfits without dropout: at 10 min a
  2 x 256 model without it scored worse (1.684) than the 75 s model; with dropout 0.25
  it scored 1.552, and a 2 x 384 model with it 1.533 (both at a 6e-3 peak rate);
- holding out 10% of the training text for validation cost 0.09 nats/char against 2%,
  because the held-out tail is the text closest to what is scored next.
Re-checked after the packed recurrent products made 2 x 256 faster (1,422 steps in 75 s
instead of 1,125; runs of a fixed step count, one thread each): at 75 s the defaults
scored 1.550, with dropout 0.1 1.555; 2 x 384 (750 steps) 1.563, with dropout 0.1 1.567;
batch x seq 16 x 64 (2,680 steps) 1.591 at 1e-2 and 1.563 at 7e-3, 32 x 32 (2,840 steps)
1.571, 16 x 128 1.566: 32 x 64 stays. For 10 min, 2 x 384 with dropout 0.4 scored 1.559
and 2 x 512 with dropout 0.4 at 5e-3 1.538 (a timed 10 min run of it: 1.547), against
1.540, 1.546 and 1.558 for the defaults in three timed runs: within the spread between
runs, so not adopted. More steps no longer help on this split (75 s at 1,422 steps
scored 1.549, at 1,125 1.545): the scored tenth is other plays than the training text,
and the models learn the training plays. Checked again after the team's products and
the kept memory (about 1,520 steps in 75 s at 2 x 256): the defaults scored 1.537 and
1.549, 2 x 384 1.563 and 1.566, 3 x 256 1.588.
Tried and not adopted (each pair from one run): an average of the weights over the
last steps (an exponential moving average kept beside training) scored 1.543 -> 1.539
at 10 min (best decay 0.995; 0.99 1.540, 0.999 1.541) but 1.538 -> 1.539-1.541 at
75 s (decays 0.98-0.995); dropping 20% of the recurrent weights (DropConnect, a mask
per step, as in AWD-LSTM) on top of the dropout scored 1.658 against 1.538 without it
at 10 min, in runs slowed to 2,835 steps by an oversubscribed BLAS pool.
"""

from __future__ import annotations

# (largest time budget in seconds, value): the first row that fits is used.
HIDDEN_BY_BUDGET = ((40, 128), (300, 256), (float("inf"), 384))
DROPOUT_BY_BUDGET = ((180, 0.0), (float("inf"), 0.25))
HIDDEN_FOR_STEPS = 256  # a run bounded by --steps only
SMALL_CORPUS_CHARS = 300_000  # below this, a bigger model mostly memorises
SMALL_CORPUS_DROPOUT = (45, 0.25)  # ... and from this budget on, dropout: many passes
HELD_OUT_CHARS_CAP = 20_000  # hold out at most this many characters by default
SCORED_VAL_CHARS_CAP = 1_000_000  # and validate on at most this many of them (--val-chars)
LR_DECAYING = 1e-2  # peak rate when it decays to the end of the run
LR_CONSTANT = 3e-3
LR_FULL_WIDTH = 256  # wider layers get the rate scaled by LR_FULL_WIDTH / hidden
# `score --adapt` and `sample --adapt` (sample.AdaptiveScorer): one RMS-normalised step
# per segment of ADAPT_SEGMENT characters at ADAPT_LR, then a decay of ADAPT_DECAY of
# the way back to the trained weights. Chosen on 75 s and 10 min tiny shakespeare
# models and a 75 s model of Python sources (nats/char on their held-out tenths; static
# scores 1.537, 1.540, 1.413). Without decay: segment 64 at 1e-3 gave 1.329, 1.291,
# 0.920; at 5e-4 1.324, 1.295, 0.971; at 2e-3 1.372, -, 0.917; segment 32 at 7e-4
# 1.329, 1.291, 0.911 but took 1.2x as long; with momentum (Adam's beta1 0.9) 1.352 on
# the first; Adam's second moments from training as the normaliser (Krause et al.'s
# RMS variant) 1.331 at its best rate, 3e-4. Decay 1e-3 at 1e-3: 1.319, 1.283, 0.909
# (3e-3: 1.319, -, 0.911). Checked on a text not used in choosing (Python's pydoc
# topics, 90/10): static 1.226, adapting 1.000; at 5e-4 1.047, at 2e-3 0.991.
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


def default_val_fraction(corpus_chars: int, fraction: float = 0.1) -> float:
    """The last 10% of the corpus, but never more than HELD_OUT_CHARS_CAP characters."""
    if corpus_chars <= 0:
        return fraction
    return min(fraction, HELD_OUT_CHARS_CAP / corpus_chars)


def describe(table, unit: str = "") -> str:
    """'128 up to --time-limit 40s, 256 up to 20m, 384 beyond' for help texts."""
    parts = []
    for budget, value in table:
        if budget == float("inf"):
            parts.append(f"{value:g}{unit} beyond")
        else:
            budget = f"{budget // 60:g}m" if budget >= 60 and budget % 60 == 0 else f"{budget:g}s"
            parts.append(f"{value:g}{unit} up to {budget}")
    return ", ".join(parts)
