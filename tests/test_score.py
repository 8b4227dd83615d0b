"""score.py: unknown characters charged at the unknown symbol's probability; and
`score --adapt` (score.AdaptiveScorer): dynamic evaluation, the model learning from a
text as it scores it; and `sample --adapt`, which generates after learning the prime so.

What must hold: each character is scored before the model learns from it (a prefix of
a text gets the same losses alone as within the whole text, and the first segment gets
the static losses); one step is RMS-normalised descent (Adam without momentum: the
first step moves each weight by the rate against its gradient's sign, then the decay
takes a share of that back); the state is
carried across segments; the model handed in is left as it was; and on a text with
habits of its own, adapting scores better than not.
"""

import json

import numpy as np
import pytest
from clitools import assert_fails, run

from charrnn.bench import quality as bench_quality
from charrnn.checkpoint import load_trained
from charrnn.model import Model, ModelConfig
from charrnn.sample import Decoding, Sampler
from charrnn.score import AdaptiveScorer, adapted_to, score_text
from charrnn.vocab import Vocab

CHARS = "abcdefgh \n"


@pytest.fixture(scope="module", params=["lstm", "gru", "rnn"])
def toy(request):
    vocab = Vocab.from_text(CHARS)
    model = Model(ModelConfig(cell=request.param, vocab_size=vocab.size, hidden=8,
                              layers=2, embed=4))
    model.initialise(np.random.default_rng(5))
    return model, vocab


def adaptive_losses(model, vocab, text, lr=1e-3, segment=5, decay=1e-3):
    scorer = AdaptiveScorer(model, vocab, lr, segment, decay)
    ids, _ = vocab.encode(text)
    h, c = scorer.zero_state()
    return scorer.token_losses(ids, h, c), scorer, (h, c)


def test_each_character_is_scored_before_the_model_learns_from_it(toy):
    model, vocab = toy
    text = "abc defg hab\nhgf edcba ab cd"
    whole, _, _ = adaptive_losses(model, vocab, text)
    for cut in (2, 6, 7, 13, 20):  # inside, at and beyond segment ends
        prefix, _, _ = adaptive_losses(model, vocab, text[:cut])
        np.testing.assert_allclose(prefix, whole[:cut - 1], rtol=1e-6)
    static = Sampler(model, vocab).token_losses(vocab.encode(text)[0],
                                                *Sampler(model, vocab).zero_state())
    np.testing.assert_allclose(whole[:5], static[:5], rtol=1e-5)  # no step yet
    assert np.abs(whole[5:] - static[5:]).max() > 1e-4  # then the weights move


def test_one_step_is_rms_normalised_descent_on_the_segment_loss(toy):
    model, vocab = toy
    text, lr = "abcdefgh ab", 1e-3
    ids, _ = vocab.encode(text)
    _, scorer, _ = adaptive_losses(model, vocab, text[:6], lr, segment=5)  # one segment
    reference = Model(model.config, model.flat.copy(), model.dtype)
    h, c = reference.zero_state(1)
    reference.forward(ids[None, :5], ids[None, 1:6], h, c)
    reference.backward()
    gradient = reference.grad_flat
    # Adam without momentum, first step: m = g, v_hat = g^2, so each weight moves by
    # lr * g / (|g| + eps), lr against the sign of its gradient; then the decay takes
    # back `decay` of that way
    stepped = model.flat - lr * gradient / (np.abs(gradient) + 1e-8)
    expected = stepped + scorer.decay * (model.flat - stepped)
    np.testing.assert_allclose(scorer.model.flat, expected, rtol=1e-5, atol=1e-9)
    assert scorer.decay > 0
    assert np.count_nonzero(gradient) > model.flat.size // 2


def test_the_state_is_carried_across_segments(toy):
    model, vocab = toy
    text = "hgfe dcba abcd efgh hgfe"
    _, _, (h_whole, c_whole) = adaptive_losses(model, vocab, text, lr=1e-12, segment=4,
                                               decay=0.0)
    # at a vanishing rate the weights stay put (float32 cannot even hold the steps), so
    # the carried state must be the static one: a state reset per segment would differ
    sampler = Sampler(model, vocab)
    h, c = sampler.zero_state()
    sampler.token_losses(vocab.encode(text)[0], h, c)
    np.testing.assert_allclose(h_whole, h, atol=1e-5)
    np.testing.assert_allclose(c_whole, c, atol=1e-5)


def test_chunks_of_a_long_text_do_not_move_the_segments(toy):
    # score_text encodes a long text a chunk at a time (1 MiB in the CLI); an adapting
    # scorer must still step exactly where it would on the text read whole
    model, vocab = toy
    text = "abc defg hab\nhgf ¿edcba ab cd\n" * 9  # "¿" is unknown: skipped, counted
    whole = score_text(AdaptiveScorer(model, vocab, 1e-2, 8), text, chunk_chars=10 ** 6)
    for chunk_chars in (5, 8, 9, 64, 100):
        chunked = score_text(AdaptiveScorer(model, vocab, 1e-2, 8), text, chunk_chars)
        assert chunked["chars"] == whole["chars"] == len(text) - 1 - 9
        assert chunked["unknown_chars"] == whole["unknown_chars"] == 9
        assert chunked["nats_per_char"] == pytest.approx(whole["nats_per_char"], rel=1e-12)


def test_a_segment_whose_gradient_is_not_finite_is_not_learnt_from(toy, monkeypatch):
    from charrnn import score
    model, vocab = toy
    monkeypatch.setattr(score, "clip_by_global_norm", lambda grads, norm: float("nan"))
    losses, scorer, _ = adaptive_losses(model, vocab, "abcdefgh abcdefgh")
    np.testing.assert_array_equal(scorer.model.flat, model.flat)
    assert scorer.optimizer.updates == 0 and np.isfinite(losses).all()


def test_the_model_given_is_not_changed(toy):
    model, vocab = toy
    before = model.flat.copy()
    _, scorer, _ = adaptive_losses(model, vocab, "abcdefgh" * 4)
    np.testing.assert_array_equal(model.flat, before)
    assert np.abs(scorer.model.flat - before).max() > 0


def test_adapting_learns_a_texts_own_habits(toy):
    model, vocab = toy
    text = "cab hedge fad\n" * 40  # a phrase the random model knows nothing of
    static = score_text(Sampler(model, vocab), text)
    adapted = score_text(AdaptiveScorer(model, vocab, lr=1e-2, segment=8), text)
    assert adapted["chars"] == static["chars"] == len(text) - 1
    assert adapted["nats_per_char"] < static["nats_per_char"] - 0.25


@pytest.mark.slow  # a subprocess or a compile: `make test-fast` leaves it out
def test_adapting_matches_pytorch_taking_the_same_steps():
    # An independent implementation of the same protocol, the one bench_quality's peer
    # adapts by: PyTorch's LSTM and Adam, in float64, from charrnn's weights.
    torch = pytest.importorskip("torch")
    vocab = Vocab.from_text(CHARS)
    V, E, H, L = vocab.size, 4, 6, 2
    model = Model(ModelConfig("lstm", V, hidden=H, layers=L, embed=E), dtype=np.float64)
    model.initialise(np.random.default_rng(7))
    text, lr, segment, decay = "abc defg hab\nhgf edcba\n" * 6, 1e-2, 16, 0.1
    ours, _, _ = adaptive_losses(model, vocab, text, lr, segment, decay)

    p = model.params
    embed = torch.nn.Embedding(V, E).double()
    lstm = torch.nn.LSTM(E, H, L, batch_first=True).double()
    head = torch.nn.Linear(H, V).double()
    to_torch = [0, 1, 3, 2]  # our gate blocks i, f, o, g in PyTorch's order i, f, g, o
    with torch.no_grad():
        embed.weight.copy_(torch.from_numpy(p["embed"]))
        for layer in range(L):
            for name, ours_name in (("weight_ih", "Wx"), ("weight_hh", "Wh")):
                W = p[f"{ours_name}{layer}"]  # (D, 4H)
                blocks = W.reshape(W.shape[0], 4, H)[:, to_torch].reshape(W.shape[0], 4 * H)
                getattr(lstm, f"{name}_l{layer}").copy_(torch.from_numpy(blocks.T.copy()))
            getattr(lstm, f"bias_ih_l{layer}").copy_(torch.from_numpy(
                p[f"b{layer}"].reshape(4, H)[to_torch].reshape(4 * H).copy()))
            getattr(lstm, f"bias_hh_l{layer}").zero_()
        head.weight.copy_(torch.from_numpy(p["Wy"].T.copy()))
        head.bias.copy_(torch.from_numpy(p["by"]))
    # PyTorch's second bias per layer is one more copy of ours: it stays at zero
    # PyTorch's second bias per layer is one more copy of ours: it stays at zero
    params = [*embed.parameters(), *(value for name, value in lstm.named_parameters()
                                     if not name.startswith("bias_hh")), *head.parameters()]
    ids = torch.tensor(vocab.encode(text)[0], dtype=torch.long)
    theirs = bench_quality.peer_val_nats((embed, lstm, head, params), ids, segment, lr,
                                         decay)
    assert theirs == pytest.approx(ours.mean(), rel=1e-9, abs=0)
    static = adaptive_losses(model, vocab, text, 1e-12, segment, 0.0)[0].mean()
    assert abs(theirs - static) > 1e-3  # the steps mattered: the agreement is not trivial


def test_a_model_adapted_to_a_prime_has_learnt_it(toy):
    model, vocab = toy
    phrase = "cab hedge fad\n"
    before = model.flat.copy()
    adapted = adapted_to(model, vocab, vocab.encode(phrase * 60)[0], lr=1e-2)
    np.testing.assert_array_equal(model.flat, before)
    fresh_text = phrase * 5  # scored from a fresh state, weights fixed
    assert (score_text(Sampler(adapted, vocab), fresh_text)["nats_per_char"]
            < score_text(Sampler(model, vocab), fresh_text)["nats_per_char"] - 0.25)


def test_bad_rates_and_segments_are_refused(toy):
    model, vocab = toy
    for lr, segment, decay in ((0.0, 64, 0.0), (-1e-3, 64, 0.0), (1e-3, 0, 0.0),
                               (1e-3, 64, -0.1), (1e-3, 64, 1.0)):
        with pytest.raises(ValueError):
            AdaptiveScorer(model, vocab, lr, segment, decay)


# ------------------------------------------------------------------------ the command
@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from clitools import english_text, tiny_model
    return tiny_model(tmp_path_factory.mktemp("adapt"), english_text(), "m")


def test_score_adapt_scores_lower_on_a_repeated_text_and_leaves_the_checkpoint(tiny):
    text = "a lazy dog at dawn sings while the fox jumps\n" * 30
    before = tiny.ckpt.read_bytes()
    static = json.loads(run("score", tiny.ckpt, "--json", input=text).stdout)
    result = run("score", tiny.ckpt, "--json", "--adapt", "--adapt-lr", "0.01",
                 "--threads", "1", input=text)
    assert result.exit_code == 0 and result.stderr == ""
    adapted = json.loads(result.stdout)
    assert adapted["adapt_lr"] == 0.01 and adapted["chars"] == static["chars"]
    assert adapted["nats_per_char"] < static["nats_per_char"]
    assert tiny.ckpt.read_bytes() == before
    human = run("score", tiny.ckpt, "--adapt", input=text)
    assert human.exit_code == 0 and "adapting at lr 0.001" in human.stdout


@pytest.mark.parametrize("args", [["--adapt", "--per-line"], ["--adapt-lr", "0.01"],
                                  ["--adapt", "--adapt-lr", "0"],
                                  ["--adapt", "--adapt-lr", "inf"]])
def test_score_adapt_usage_errors(tiny, args):
    assert_fails(run("score", tiny.ckpt, *args, input="some text\n"), code=2)


def test_sample_adapt_generates_from_the_model_adapted_to_the_prime(tiny):
    prime = "seven dogs jump at a lazy fox\n" * 10
    before = tiny.ckpt.read_bytes()
    args = ("sample", tiny.ckpt, "--prime", prime, "-n", "80", "--seed", "4", "--threads", "1")
    adapted = run(*args, "--adapt", "--adapt-lr", "0.01")
    assert adapted.exit_code == 0, adapted.stderr
    plain = run(*args)
    assert adapted.stdout.startswith(prime) and adapted.stdout != plain.stdout
    model, vocab, _, _ = load_trained(tiny.ckpt)
    prime_ids, _ = vocab.encode(prime)
    sampler = Sampler(adapted_to(model, vocab, prime_ids, 0.01), vocab)
    expected = "".join(sampler.stream(prime_ids, 80, Decoding(1.0, 0, 1.0, False),
                                      np.random.default_rng([4, 0])))
    assert adapted.stdout == prime + expected
    assert tiny.ckpt.read_bytes() == before


@pytest.mark.parametrize("args", [["--adapt"], ["--prime", "a dog", "--adapt-lr", "0.01"]])
def test_sample_adapt_usage_errors(tiny, args):
    assert_fails(run("sample", tiny.ckpt, "-n", "5", *args), code=2)


@pytest.mark.parametrize("prime", ["", "a", "€€€"])
def test_sample_adapt_needs_a_prime_the_model_can_learn_from(tiny, prime):
    result = run("sample", tiny.ckpt, "-n", "5", "--seed", "1", "--adapt", "--prime", prime)
    assert result.exit_code == 1 and result.stdout == "" and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("Error: --adapt learns from")


@pytest.mark.parametrize("folded", [True, False])
def test_unknown_characters_cost_the_unknown_symbols_probability(folded):
    # "q" is rare in the corpus (folded into the unknown symbol when folded), "Z" never
    # seen: with an unknown symbol both are scored as it, as validation in training
    # scores them; without one they are skipped, as before.
    from charrnn.score import score_line
    from charrnn.trainer import evaluate
    vocab = Vocab.from_text("abcab cba\n" * 20 + "q", min_count=2 if folded else 1)
    assert vocab.has_unknown == folded
    model = Model(ModelConfig(cell="lstm", vocab_size=vocab.size, hidden=8, layers=1, embed=4))
    model.initialise(np.random.default_rng(3), vocab.counts + ((1,) if folded else ()))
    text = "abc qZ cab\nbZa"
    result = score_text(Sampler(model, vocab), text)
    ids, unknown = vocab.encode(text)
    assert result["unknown_chars"] == int(unknown.sum()) == (3 if folded else 2)
    if folded:
        assert result["chars"] == len(text) - 1  # every character after the first
        losses = Sampler(model, vocab).token_losses(ids, *Sampler(model, vocab).zero_state())
        charged = losses[np.flatnonzero(unknown[1:])]
        assert np.all(charged > 0) and len(charged) == 3
        # what training's validation reports for the same ids (one stream, state carried)
        assert result["bits_per_char"] == pytest.approx(
            evaluate(model, ids, 1, len(ids) - 1), rel=1e-5)
        assert np.isfinite(score_line(Sampler(model, vocab), "Zq"))
    else:
        assert result["chars"] == len(text) - 1 - 2

