"""Sampling statistics: the decoding step (charrnn.kernels.decoding.choose_token) and the
compiled generation loop draw from the distribution they promise.

Temperature, top-k, top-p, banned ids and greedy are checked on fixed logit vectors
against a float64 numpy oracle; then the whole generation loop (Sampler.stream) is checked
against the model's own next-character distribution, as scoring computes it. Every
generator is seeded, so each statistical test is deterministic: the tolerances are wide
enough (4.5 sigma per bin, chi-square at p = 1e-4) that a correct kernel passes, and a
wrong temperature, a mis-ordered filter or an off-by-one in the cumulative sum fails.
"""

import numpy as np
import pytest
from scipy.stats import chi2 as chi_square

from charrnn.kernels.decoding import BELOW_ONE, choose_token
from charrnn.model import Model, ModelConfig
from charrnn.sample import Decoding, Sampler
from charrnn.vocab import Vocab

LOGITS = np.array([1.5, -0.3, 0.8, 2.1, 0.0, -1.2], np.float32)  # 6 ids, distinct
DRAWS = 20000


def softmax(logits, temperature=1.0):
    z = np.asarray(logits, np.float64) / temperature
    p = np.exp(z - z.max())
    return p / p.sum()


def filtered(logits, temperature=1.0, top_k=0, top_p=1.0, banned=()):
    """The documented decoding order in float64: temperature, banned ids removed, top-k,
    then the smallest nucleus of what is left holding top_p of its mass."""
    p = softmax(logits, temperature)
    p[list(banned)] = 0.0
    order = np.argsort(-p, kind="stable")
    keep = np.count_nonzero(p)
    if top_k:
        keep = min(keep, top_k)
    if top_p < 1.0:
        mass = np.cumsum(p[order[:keep]])
        keep = int(np.searchsorted(mass, top_p * mass[-1])) + 1
    out = np.zeros_like(p)
    out[order[:keep]] = p[order[:keep]]
    return out / out.sum()


def draw(logits, n=DRAWS, temperature=1.0, top_k=0, top_p=1.0, banned=(), greedy=False, seed=0):
    """Counts per id of n choose_token calls fed uniforms from a seeded generator."""
    logits = np.asarray(logits, np.float32)
    mask = np.zeros(len(logits), np.bool_)
    mask[list(banned)] = True
    probs = np.empty(len(logits), np.float64)  # (V,) kernel scratch
    uniforms = np.random.default_rng(seed).random(n)
    ids = [choose_token(logits, u, 1.0 / temperature, top_k, top_p, greedy, mask, probs)
           for u in uniforms]
    return np.bincount(ids, minlength=len(logits))


def assert_matches(counts, expected):
    """Every id inside 4.5 binomial sigmas, ids of probability 0 never drawn, and the
    chi-square statistic over the ids expected at least 5 times below its 1e-4 critical
    value."""
    n = counts.sum()
    impossible = expected == 0
    drawn_but_excluded = np.flatnonzero(impossible & (counts > 0))
    assert drawn_but_excluded.size == 0, f"drew excluded ids {drawn_but_excluded}"
    possible = ~impossible
    mean = n * expected[possible]
    sigma = np.sqrt(n * expected[possible] * (1 - expected[possible]))
    assert np.all(np.abs(counts[possible] - mean) <= 4.5 * sigma + 1e-9), (counts, mean)
    bins = mean >= 5
    dof = int(bins.sum()) - 1
    if dof:
        chi2 = float(((counts[possible][bins] - mean[bins]) ** 2 / mean[bins]).sum())
        assert chi2 < chi_square.isf(1e-4, dof), f"chi-square {chi2:.1f} over {dof} dof"


@pytest.mark.parametrize("temperature", [1.0, 0.5, 2.0])
def test_frequencies_follow_softmax_with_temperature(temperature):
    assert_matches(draw(LOGITS, temperature=temperature), softmax(LOGITS, temperature))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("banned", [(0,), (2,), (0, 3)])
def test_plain_sampling_follows_softmax_with_banned_ids_on_an_even_grid(dtype, banned):
    # temperature 1 takes its own path (exp in the logits' type): a banned maximum, or a
    # banned first id below the others, must not shift the maximum it subtracts
    logits = np.array([90.0, 1.0, 2.5, 0.5, -100.0], dtype)  # exp(190) overflows float32
    mask = np.zeros(len(logits), np.bool_)
    mask[list(banned)] = True
    probs = np.empty(len(logits), np.float64)
    n = 20_000
    ids = [choose_token(logits, (k + 0.5) / n, 1.0, 0, 1.0, False, mask, probs)
           for k in range(n)]
    frequencies = np.bincount(ids, minlength=len(logits)) / n
    expected = np.where(mask, 0.0, np.exp(logits.astype(np.float64) - 90.0))
    np.testing.assert_allclose(frequencies, expected / expected.sum(), atol=1e-4)
    assert choose_token(logits, 0.5, 1.0, 0, 1.0, False, np.ones(5, np.bool_), probs) == -1


def test_temperature_is_a_divisor_not_a_multiplier():
    # Guards the oracle itself: T = 0.5 and T = 2 are far apart, so the test above would
    # notice a kernel that multiplied by T instead of dividing.
    assert np.abs(softmax(LOGITS, 0.5) - softmax(LOGITS, 2.0)).max() > 0.2


@pytest.mark.parametrize("top_k", [1, 2, 3, 5])
def test_top_k_draws_only_the_k_most_likely(top_k):
    expected = filtered(LOGITS, top_k=top_k)
    assert np.count_nonzero(expected) == top_k
    assert_matches(draw(LOGITS, top_k=top_k), expected)


@pytest.mark.parametrize("top_p", [0.3, 0.6, 0.9])
def test_top_p_draws_only_the_nucleus(top_p):
    expected = filtered(LOGITS, top_p=top_p)
    assert 0 < np.count_nonzero(expected) < len(LOGITS)
    assert_matches(draw(LOGITS, top_p=top_p), expected)


def test_temperature_then_top_k_then_top_p():
    # At T = 0.5, top-3 keeps ids 3, 0, 2 (mass .727, .219, .054 once renormalised), and a
    # nucleus of 0.94 of that keeps 3 and 0. Top-p over the unfiltered mass (.715, .930),
    # top-p before top-k, or the temperature applied late, all keep 3, 0 and 2.
    expected = filtered(LOGITS, temperature=0.5, top_k=3, top_p=0.94)
    assert set(np.flatnonzero(expected)) == {3, 0}
    assert set(np.flatnonzero(filtered(LOGITS, temperature=0.5, top_p=0.94))) == {3, 0, 2}
    assert set(np.flatnonzero(filtered(LOGITS, top_k=3, top_p=0.94))) == {3, 0, 2}
    assert_matches(draw(LOGITS, temperature=0.5, top_k=3, top_p=0.94), expected)


@pytest.mark.parametrize("u", [0.0, 0.5, float(np.nextafter(1.0, 0.0))])
@pytest.mark.parametrize("top_k, top_p", [(2, 1.0), (0, 0.5), (4, 0.7)])
def test_extreme_uniforms_never_pick_an_excluded_id(u, top_k, top_p):
    mask = np.zeros(len(LOGITS), np.bool_)
    probs = np.empty(len(LOGITS))
    token = choose_token(LOGITS, u, 1.0, top_k, top_p, False, mask, probs)
    assert filtered(LOGITS, top_k=top_k, top_p=top_p)[token] > 0


def test_banned_ids_are_never_emitted_even_when_most_likely():
    banned = (3, 5)  # 3 has the largest logit
    expected = filtered(LOGITS, banned=banned)
    assert_matches(draw(LOGITS, banned=banned), expected)
    assert_matches(draw(LOGITS, banned=banned, top_k=2), filtered(LOGITS, banned=banned, top_k=2))
    assert draw(LOGITS, n=50, banned=banned, greedy=True)[0] == 50  # id 0 is next best


@pytest.mark.parametrize("temperature", [0.1, 1.0, 5.0])
def test_greedy_returns_the_arg_max_whatever_the_uniform(temperature):
    counts = draw(LOGITS, n=200, temperature=temperature, greedy=True)
    assert counts[int(np.argmax(LOGITS))] == 200


def test_tiny_top_p_and_top_k_1_equal_greedy():
    for seed in range(20):
        logits = np.random.default_rng(seed).normal(size=40).astype(np.float32)
        greedy = int(np.argmax(draw(logits, n=1, greedy=True, seed=seed)))
        assert greedy == int(np.argmax(logits))
        assert draw(logits, n=30, top_k=1, seed=seed)[greedy] == 30
        assert draw(logits, n=30, top_p=1e-6, seed=seed)[greedy] == 30


@pytest.mark.parametrize("V", [16, 40])
def test_top_k_1_equals_greedy_when_the_maximum_is_tied(V):
    logits = np.zeros(V, np.float32)  # every id tied: greedy takes the lowest, id 0
    assert draw(logits, n=1, greedy=True)[0] == 1
    assert draw(logits, n=20, top_k=1)[0] == 20
    assert draw(logits, n=20, top_p=1e-6)[0] == 20


# ----------------------------------------------------- the generation loop, end to end
CHARS = "\n abcdefgh"


@pytest.fixture(scope="module", params=[("lstm", 4), ("gru", 4), ("rnn", 4), ("lstm", 0)],
                ids=["lstm", "gru", "rnn", "lstm-onehot"])
def toy_model(request):
    """A randomly initialised 2-layer model and its vocabulary: sampling must follow the
    model whatever it learnt."""
    cell, embed = request.param
    vocab = Vocab.from_text(CHARS * 3)
    model = Model(ModelConfig(cell=cell, vocab_size=vocab.size, hidden=8, layers=2,
                              embed=embed))
    rng = np.random.default_rng(3)
    model.initialise(rng)
    # A peaked, state-dependent distribution, so that temperature and the prime matter.
    model.params["Wy"][...] *= 6.0
    model.params["by"][...] = rng.normal(0.0, 1.0, vocab.size)
    return model, vocab


@pytest.fixture(scope="module")
def sampler(toy_model):
    return Sampler(*toy_model)


def test_one_token_steps_equal_the_batched_forward(toy_model, sampler):
    # Scoring and generation run the compiled one-token step; training runs the batched
    # (N, T) forward. Both must compute the same next-character losses.
    ids, _ = sampler.vocab.encode("abc defg\nhhab a")
    h, c = sampler.zero_state()
    stepped = sampler.token_losses(ids, h, c)
    model = toy_model[0]
    h0, c0 = model.zero_state(1)
    ids = np.asarray(ids, np.int64)
    _, batched, h_final, c_final = model.forward(ids[None, :-1], ids[None, 1:], h0, c0,
                                                 need_grad=False)
    np.testing.assert_allclose(stepped, batched, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(h, h_final[:, 0], rtol=1e-5, atol=1e-6)  # state carried out


def next_char_distribution(sampler, prime_ids):
    """p(c | prime) for every id, from the scoring path: exp(-loss of prime + c)."""
    p = np.empty(sampler.vocab.size)
    for c in range(sampler.vocab.size):
        h, cell = sampler.zero_state()
        p[c] = np.exp(-sampler.token_losses(np.append(prime_ids, c), h, cell)[-1])
    return p


@pytest.mark.parametrize("temperature", [1.0, 0.5])
def test_generated_first_character_follows_the_model(sampler, temperature):
    prime_ids, _ = sampler.vocab.encode("ab c")
    p = next_char_distribution(sampler, prime_ids)
    assert p.sum() == pytest.approx(1.0, abs=1e-5)
    expected = p ** (1 / temperature) / (p ** (1 / temperature)).sum()
    rng = np.random.default_rng(11)
    n, counts = 4000, np.zeros(sampler.vocab.size, np.int64)
    for _ in range(n):
        (text,) = sampler.stream(prime_ids, 1, Decoding(temperature), rng)
        counts[sampler.vocab.chars.index(text)] += 1
    assert_matches(counts, expected)


def test_greedy_generation_takes_the_most_likely_character_each_step(sampler):
    prime_ids, _ = sampler.vocab.encode("ba")
    text = "".join(sampler.stream(prime_ids, 8, Decoding(greedy=True), np.random.default_rng(0)))
    assert len(text) == 8
    ids = list(prime_ids)
    for ch in text:
        p = next_char_distribution(sampler, np.array(ids))
        assert sampler.vocab.chars[int(np.argmax(p))] == ch
        ids.append(sampler.vocab.chars.index(ch))


def test_generation_reaches_the_state_of_stepping_through_its_own_text(any_depth_model):
    # Generation computes every other step's recurrent products before the layers run
    # (it keeps more of the weights in cache); the state after n steps must still be
    # that of the one-token steps fed the same n tokens.
    sampler = Sampler(*any_depth_model)
    for n in (1, 2, 7, 40):
        h, c = sampler.zero_state()
        out = np.empty(n, np.int64)
        sampler.generate_into(3, np.random.default_rng(n).random(n), Decoding(0.9), h, c, out)
        h_steps, c_steps = sampler.zero_state()
        sampler.token_losses(np.concatenate([[3], out]), h_steps, c_steps)
        np.testing.assert_allclose(h, h_steps, rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(c, c_steps, rtol=1e-6, atol=1e-7)


def test_same_rng_seed_same_text_and_streaming_chunks_join_up(sampler):
    prime_ids, _ = sampler.vocab.encode("a")
    one = list(sampler.stream(prime_ids, 300, Decoding(0.8), np.random.default_rng(5)))
    two = list(sampler.stream(prime_ids, 300, Decoding(0.8), np.random.default_rng(5)))
    assert one == two
    assert len(one) > 1 and len("".join(one)) == 300  # streamed in several pieces
    other = "".join(sampler.stream(prime_ids, 300, Decoding(0.8), np.random.default_rng(6)))
    assert other != "".join(one)


@pytest.fixture(params=[2, 1], ids=["2-layer", "1-layer"])
def any_depth_model(request, toy_model):
    """toy_model, and a one-layer model of the same cell (no layers above the first)."""
    model, vocab = toy_model
    if request.param == model.config.layers:
        return model, vocab
    config = ModelConfig(cell=model.config.cell, vocab_size=vocab.size, hidden=8, layers=1,
                         embed=model.config.embed)
    one_layer = Model(config)
    one_layer.initialise(np.random.default_rng(5))
    return one_layer, vocab


@pytest.mark.parametrize("output_split", [False, True])
def test_generation_with_units_split_among_threads_is_that_of_one_thread(any_depth_model,
                                                                          monkeypatch,
                                                                          output_split):
    # Each thread computes its units' columns, and perhaps its share of the output
    # layer's, in the same order as one thread does, so the text and the final state
    # must be identical, not merely close.
    from charrnn import parallel, sample
    toy_model = any_depth_model
    single = Sampler(*toy_model)
    monkeypatch.setattr(sample, "SAMPLE_SPLIT_WIDTH", 1)
    monkeypatch.setattr(sample, "SPLIT_OUTPUT_COLUMNS", 1 if output_split else 10 ** 6)
    monkeypatch.setattr(parallel, "MIN_UNITS_PER_PART", 1)
    monkeypatch.setattr(parallel, "_threads", 3)
    split = Sampler(*toy_model)
    assert [part[:2] for part in split.unit_parts] == [(0, 2), (2, 5), (5, 8)]
    for decoding in (Decoding(0.8), Decoding(greedy=True), Decoding(1.0, top_k=3)):
        results = []
        for s in (single, split):
            h, c = s.zero_state()
            h[...], c[...] = 0.1, -0.2
            out = np.empty(200, np.int64)
            last = s.generate_into(2, np.random.default_rng(4).random(200), decoding, h, c,
                                   out)
            results.append((out, last, h, c))
        (out1, last1, h1, c1), (out2, last2, h2, c2) = results
        np.testing.assert_array_equal(out1, out2)
        assert last1 == last2 == out1[-1]
        np.testing.assert_array_equal(h1, h2)
        np.testing.assert_array_equal(c1, c2)
        assert not np.array_equal(h1, np.full_like(h1, 0.1))  # the state really moved


def test_prepare_loads_the_generation_kernel_and_changes_nothing(sampler):
    from charrnn.kernels.sampling import generate
    decoding = Decoding(0.7, 3, 0.9, False)  # the types the sample command passes
    sampler.prepare(decoding)
    signatures = list(generate.signatures)
    assert signatures  # compiled or loaded, for the stream's argument types
    prime_ids, _ = sampler.vocab.encode("ab")
    before = "".join(sampler.stream(prime_ids, 50, decoding, np.random.default_rng(3)))
    assert list(generate.signatures) == signatures  # the stream needed nothing new
    sampler.prepare(decoding)
    after = "".join(sampler.stream(prime_ids, 50, decoding, np.random.default_rng(3)))
    assert after == before


def test_bfloat16_generation_is_float32_generation_with_rounded_weights(any_depth_model,
                                                                        monkeypatch):
    # bfloat16 precision stores the multiplied weights (Wh, Wx above the first layer, Wy) as
    # bfloat16 and widens them exactly, so it must equal float32 generation from a model
    # whose weights were rounded the same way, bit for bit, split among threads or not.
    from charrnn import parallel, sample
    from charrnn.kernels.panels import to_bfloat16
    model, vocab = any_depth_model
    rounded = Model(model.config, model.flat.copy())
    for name, view in rounded.params.items():
        if name == "Wy" or name.startswith("Wh") or (name.startswith("Wx") and name != "Wx0"):
            view[...] = (to_bfloat16(view).astype(np.uint32) << 16).view(np.float32)
    assert not np.array_equal(rounded.flat, model.flat)
    for threads in (1, 3):
        monkeypatch.setattr(sample, "SAMPLE_SPLIT_WIDTH", 1 if threads > 1 else 10 ** 6)
        monkeypatch.setattr(parallel, "MIN_UNITS_PER_PART", 1)
        monkeypatch.setattr(parallel, "_threads", threads)
        results = []
        for s in (Sampler(model, vocab, "bfloat16"), Sampler(rounded, vocab, "float32")):
            h, c = s.zero_state()
            out = np.empty(300, np.int64)
            s.generate_into(1, np.random.default_rng(9).random(300), Decoding(0.9), h, c, out)
            results.append((out, h, c))
        for got, want in zip(results[0], results[1]):
            np.testing.assert_array_equal(got, want)


def test_auto_precision_rounds_to_bfloat16_only_from_the_size_limit(toy_model, monkeypatch):
    from charrnn import sample
    model, vocab = toy_model
    p = model.params
    multiplied = sum(view.size for name, view in p.items()
                     if name == "Wy" or name.startswith("Wh") or
                     (name.startswith("Wx") and name != "Wx0"))
    monkeypatch.setattr(sample, "BFLOAT16_FROM_BYTES", 4 * multiplied)  # exactly at it
    assert not Sampler(model, vocab).bfloat16
    assert Sampler(model, vocab, "bfloat16").bfloat16
    monkeypatch.setattr(sample, "BFLOAT16_FROM_BYTES", 4 * multiplied - 1)
    auto, exact = Sampler(model, vocab), Sampler(model, vocab, "float32")
    assert auto.bfloat16 and not exact.bfloat16
    assert auto.output[0].dtype == np.uint16 and exact.output[0].dtype == np.float32
    wide = Model(model.config, model.flat, dtype=np.float64)  # only float32 is rounded
    assert not Sampler(wide, vocab, "bfloat16").bfloat16
    with pytest.raises(ValueError, match="precision"):
        Sampler(model, vocab, "float16")


def test_scoring_and_beam_search_use_the_weights_as_trained(toy_model, monkeypatch):
    # However generation is set up (bfloat16, units split among threads), the one-token
    # step that scores short texts and runs beam search multiplies the float32 weights
    # on one thread: the same losses, state and continuation, bit for bit.
    from charrnn import parallel, sample
    model, vocab = toy_model
    monkeypatch.setattr(parallel, "MIN_UNITS_PER_PART", 1)
    ids, _ = vocab.encode("the garden window")
    results = []
    for precision, split in (("float32", False), ("bfloat16", False), ("float32", True)):
        monkeypatch.setattr(sample, "SAMPLE_SPLIT_WIDTH", 1 if split else 10 ** 6)
        monkeypatch.setattr(parallel, "_threads", 2 if split else 1)
        sampler = Sampler(model, vocab, precision)
        assert sampler.bfloat16 == (precision == "bfloat16")
        assert len(sampler.unit_parts) == (2 if split else 1)
        h, c = sampler.zero_state()
        losses = sampler.token_losses(ids, h, c)
        beam = sampler.beam_search(ids, 12, 3, np.random.default_rng(0))
        results.append((losses, h, c, beam))
    for other in results[1:]:
        for got, want in zip(other, results[0]):
            np.testing.assert_array_equal(got, want)


def test_bfloat16_rounds_to_nearest_even():
    from charrnn.kernels.panels import to_bfloat16
    values = np.array([1.0, 1.0 + 2 ** -8, 1.0 + 3 * 2 ** -8, 1.0 + 2 ** -9, -2.5, np.inf,
                       np.nan], np.float32)
    widened = (to_bfloat16(values).astype(np.uint32) << 16).view(np.float32)
    # 1 + 2**-8 is halfway between 1 and 1 + 2**-7: ties go to the even mantissa (1.0)
    expected = [1.0, 1.0, 1.0 + 2 ** -6, 1.0, -2.5, np.inf]
    np.testing.assert_array_equal(widened[:-1], np.array(expected, np.float32))
    assert np.isnan(widened[-1])


def test_long_texts_scored_in_chunks_equal_the_one_token_steps(toy_model, monkeypatch):
    # A long text is scored by the training forward, chunk by chunk, carrying the state
    # across chunk boundaries; it must give the one-token step's losses and final state.
    from charrnn import sample
    model, vocab = toy_model
    sampler = Sampler(model, vocab)
    ids, _ = vocab.encode("the garden window, a quiet morning.\n" * 3)
    results = []
    for batched_from, chunk in ((10 ** 9, 0), (2, 7), (2, 4096)):
        monkeypatch.setattr(sample, "BATCHED_SCORE_CHARS", batched_from)
        monkeypatch.setattr(sample, "SCORE_CHUNK", chunk)
        h, c = sampler.zero_state()
        h[...], c[...] = 0.05, -0.1  # a carried state, not zeros
        results.append((sampler.token_losses(ids, h, c), h, c))
    stepped = results[0]
    for batched in results[1:]:
        for got, want in zip(batched, stepped):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    assert len(stepped[0]) == len(ids) - 1


@pytest.mark.parametrize("n", [1, 5, 16, 17, 514, 3955])
def test_draw_by_blocks_picks_the_index_whose_share_holds_the_uniform(n):
    # kernels/decoding.draw sums by blocks of 16 ids; the index must be the one whose
    # cumulative share holds u (up to rounding at the edges), zeros never drawn
    from charrnn.kernels.decoding import draw
    rng = np.random.default_rng(n)
    probs = rng.random(n).astype(np.float32)
    probs[rng.random(n) < 0.3] = 0.0
    probs[-1] = 0.0  # a trailing zero: the last possible index is before it
    if not probs.any():
        probs[0] = 1.0
    edges = np.cumsum(probs.astype(np.float64))
    last = int(np.flatnonzero(probs)[-1])
    for u in np.concatenate([rng.random(300), [0.0, BELOW_ONE]]):
        index, fresh = draw(probs, u)
        want = min(int(np.searchsorted(edges, u * edges[-1], side="right")), last)
        assert probs[index] > 0 and 0.0 <= fresh < 1.0
        if abs(u * edges[-1] - edges[want]) > 1e-9 * edges[-1]:  # not on an edge
            assert index == want, (u, index, want)
            start = edges[want] - probs[want]
            assert fresh == pytest.approx((u * edges[-1] - start) / probs[want], abs=1e-6)


@pytest.mark.parametrize("n", [1, 15, 16, 17, 48, 514])
def test_row_max_is_the_maximum_and_carries_nan(n):
    # kernels/decoding.row_max compares block by block of 16: every position, in a
    # whole block or after the last, must be able to hold the maximum or a NaN
    from charrnn.kernels.decoding import row_max
    rng = np.random.default_rng(n)
    for dtype in (np.float32, np.float64):
        for where in range(n):
            row = rng.normal(size=n).astype(dtype)
            row[where] = 10.0
            assert row_max(row) == 10.0
            row[where] = np.nan
            assert np.isnan(row_max(row))
        assert row_max(np.full(n, -np.inf, dtype)) == -np.inf
