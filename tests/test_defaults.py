"""The adaptive training defaults: model size, dropout and learning rate by budget and
corpus, validation size."""

import pytest

from charrnn.defaults import (
    HELD_OUT_CHARS_CAP,
    HIDDEN_FOR_STEPS,
    LR_CONSTANT,
    LR_DECAYING,
    SMALL_CORPUS_CHARS,
    default_dropout,
    default_hidden,
    default_lr,
    default_val_fraction,
    describe,
)

BIG = 10 * SMALL_CORPUS_CHARS


@pytest.mark.parametrize("budget, hidden", [(20, 128), (40, 128), (41, 256), (75, 256),
                                            (300, 256), (301, 384), (600, 384), (3600, 384)])
def test_hidden_grows_with_the_time_budget(budget, hidden):
    assert default_hidden(budget, BIG) == hidden


def test_a_steps_only_run_gets_the_steps_default():
    assert default_hidden(None, BIG) == HIDDEN_FOR_STEPS


def test_a_small_corpus_keeps_the_model_small():
    assert default_hidden(3600, SMALL_CORPUS_CHARS - 1) == 128
    assert default_hidden(None, 1000) == 128


@pytest.mark.parametrize("budget, dropout", [(75, 0.0), (180, 0.0), (600, 0.25), (3600, 0.25)])
def test_dropout_arrives_when_the_budget_buys_many_passes(budget, dropout):
    assert default_dropout(budget, BIG) == dropout
    assert default_dropout(None, BIG) == 0.0  # a --steps run


def test_a_small_corpus_gets_dropout_sooner():
    small = SMALL_CORPUS_CHARS - 1
    assert default_dropout(20, small) == 0.0
    assert default_dropout(75, small) > 0.0 == default_dropout(75, BIG)


def test_a_decaying_rate_starts_higher_than_a_constant_one():
    assert LR_DECAYING > LR_CONSTANT
    assert default_lr("auto", 75.0, 256) == default_lr("cosine", None, 128) == LR_DECAYING
    assert default_lr("step", None, 64) == LR_DECAYING
    assert default_lr("auto", None, 256) == default_lr("constant", 75.0, 16) == LR_CONSTANT


def test_wider_models_get_a_smaller_rate():
    assert default_lr("auto", 600.0, 512) == pytest.approx(LR_DECAYING / 2)
    assert default_lr("auto", 600.0, 384) < default_lr("auto", 600.0, 256)
    assert default_lr("auto", None, 1024) == pytest.approx(LR_CONSTANT / 4)


def test_help_text_reads_the_tables():
    assert describe(((40, 128), (1200, 256), (float("inf"), 384))) == \
        "128 up to 40s, 256 up to 20m, 384 beyond"
    assert describe(((90, 0.0), (float("inf"), 0.25))) == "0 up to 90s, 0.25 beyond"


def test_validation_is_ten_percent_up_to_the_cap():
    assert default_val_fraction(100_000) == pytest.approx(0.1)
    assert default_val_fraction(1_000_000) == pytest.approx(HELD_OUT_CHARS_CAP / 1_000_000)
    assert round(default_val_fraction(5_000_000) * 5_000_000) == HELD_OUT_CHARS_CAP
    assert default_val_fraction(0) == 0.1


def test_cosine_follows_the_time_budget_when_steps_are_unknown():
    from charrnn.optim import learning_rate
    assert learning_rate(100, 1.0, "cosine", None, 0, 0.1, time_fraction=0.0) == 1.0
    assert learning_rate(100, 1.0, "cosine", None, 0, 0.1, time_fraction=0.5) \
        == pytest.approx(0.55)
    assert learning_rate(100, 1.0, "cosine", None, 0, 0.1, time_fraction=1.0) \
        == pytest.approx(0.1)
    # with both, whichever limit is nearer decides, since the run stops at the first
    assert learning_rate(90, 1.0, "cosine", 100, 0, 0.1, time_fraction=0.1) \
        == pytest.approx(learning_rate(90, 1.0, "cosine", 100, 0, 0.1))
    assert learning_rate(100, 1.0, "constant", None, 0, 0.1, time_fraction=0.9) == 1.0


def test_auto_schedule_decays_only_time_limited_runs(tmp_path):
    import numpy as np

    from charrnn.model import Model, ModelConfig
    from charrnn.trainer import Trainer, TrainOptions
    from charrnn.vocab import Vocab
    vocab = Vocab(tuple("abcd"), (1, 1, 1, 1))
    ids = np.random.default_rng(0).integers(0, 4, 2000).astype(np.uint8)
    model = Model(ModelConfig("lstm", 4, 8, 1))
    timed = Trainer(model, vocab, ids, ids[:100], TrainOptions(time_limit=10.0, warmup=0,
                                                              batch_size=4, seq_len=8),
                    str(tmp_path / "a.ckpt"))
    stepped = Trainer(model, vocab, ids, ids[:100], TrainOptions(steps=10, warmup=0,
                                                                batch_size=4, seq_len=8),
                      str(tmp_path / "b.ckpt"))
    timed.elapsed = stepped.elapsed = 9.0
    stepped.state.step = 9
    assert timed.current_lr() < 0.2 * timed.options.lr
    assert stepped.current_lr() == stepped.options.lr


def test_characters_seen_once_are_folded_unless_they_are_much_of_the_text():
    from charrnn.defaults import FOLD_SINGLETONS_UP_TO, default_min_count
    common = {"a": 500, "b": 300, " ": 200}
    assert default_min_count({**common, "$": 1}, 1001) == 2  # one rare character: folded
    assert default_min_count(common, 1000) == 1  # none seen once: nothing to fold
    assert default_min_count({"a": 1, "b": 1}, 2) == 1  # all seen once: keep them all
    many_rare = {**common, **{chr(0x4E00 + k): 1 for k in range(20)}}
    assert 20 > FOLD_SINGLETONS_UP_TO * 1020
    assert default_min_count(many_rare, 1020) == 1  # 2% of a small text: kept

