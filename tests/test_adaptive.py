"""Tests of the adaptive softmax (charrnn/adaptive.py): its gradients against central
differences in float64, its distribution against a plain numpy computation, the
sampling kernel's head-first draw against that distribution, the layout chosen from
counts, and a whole train / sample / score / resume / fine-tune cycle on the CLI.
"""

import json

import numpy as np
import pytest
from clitools import assert_fails, run
from test_model import DROPOUT, Case, gradient_check

from charrnn import adaptive, parallel
from charrnn.kernels.sampling import draw_head_first, output_scores, output_scratch
from charrnn.model import Model, ModelConfig
from charrnn.sample import Decoding, Sampler
from charrnn.vocab import Vocab

V, H, N, T, L = 9, 4, 2, 3, 2
# ranks 0-2 the head, 3-5 the first cluster (projection 2), 6-8 the second (1)
LAYOUT = {"head": 3, "tails": ((3, 2), (3, 1)), "output_order": (4, 0, 7, 2, 8, 1, 3, 6, 5)}
# targets in the head (4, 0), the first cluster (2, 8) and the second (3, 6)
TARGETS = np.array([[4, 2, 3], [0, 8, 6]])


def adaptive_case(cell, embed, dtype=np.float64, seed=0, targets=TARGETS):
    config = ModelConfig(cell, V, H, L, embed=embed, dropout=DROPOUT, **LAYOUT)
    rng = np.random.default_rng([seed, embed, len(cell)])
    model = Model(config, rng.normal(0.0, 0.5, config.parameter_count()), dtype=dtype)
    x = rng.integers(0, V, (N, T))
    h0 = rng.uniform(-0.5, 0.5, (L, N, H)).astype(dtype)
    c0 = rng.uniform(-0.5, 0.5, (L, N, H)).astype(dtype)
    masks = ((rng.random((L, T, N, H)) >= DROPOUT) / (1.0 - DROPOUT)).astype(dtype)
    return Case(model, x, targets, h0, c0, masks)


def top_outputs(model, x, h0, c0):
    """The top layer's output at every position (time-major), from the forward's cache
    (one piece: the caller runs one thread)."""
    model.forward(x, np.zeros_like(x), h0, c0, need_grad=True)
    return np.concatenate([cache[6] for _, _, cache in model._cache])


# -- gradients ---------------------------------------------------------------------------

@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("cell, embed", [("lstm", 0), ("gru", 3), ("rnn", 3)])
def test_gradients_match_central_differences(cell, embed, threads, monkeypatch):
    monkeypatch.setattr(parallel, "_threads", threads)
    case = adaptive_case(cell, embed)
    mismatches, errors, grads = gradient_check(case)
    names = {name for name, _ in case.model.config.parameter_shapes()}
    assert {"Pt0", "Wt0", "bt0", "Pt1", "Wt1", "bt1"} <= names
    assert set(errors) == names | {"h0", "c0"}
    assert mismatches == [], {name: errors[name] for name in mismatches}
    for name, grad in grads["numerical"].items():
        if name != "c0" or cell == "lstm":  # every parameter reaches the loss
            assert np.abs(grad).max() > 1e-3, name


def test_a_cluster_no_target_falls_in_gets_zero_gradients():
    targets = np.array([[4, 2, 0], [0, 8, 4]])  # nothing in the second cluster
    case = adaptive_case("lstm", 3, targets=targets)
    case.model.grad_flat[...] = 7.0  # what a previous step left
    case.forward()
    case.model.backward()
    grads = case.model.grads
    assert not grads["Wt1"].any() and not grads["Pt1"].any() and not grads["bt1"].any()
    assert grads["Wt0"].any() and grads["Pt0"].any()
    mismatches, _, _ = gradient_check(case)
    assert mismatches == []


# -- the distribution --------------------------------------------------------------------

def test_losses_are_minus_the_log_probabilities_of_an_exact_distribution(monkeypatch):
    monkeypatch.setattr(parallel, "_threads", 1)
    case = adaptive_case("lstm", 3)
    model = case.model
    x = top_outputs(model, case.x, case.h0, case.c0)  # (T*N, H), masks off
    logp = adaptive.log_probs(model.layout, model.params, x)
    assert np.allclose(np.exp(logp).sum(axis=1), 1.0, atol=1e-12)
    _, losses, _, _ = model.forward(case.x, case.y, case.h0, case.c0, need_grad=False)
    targets = case.y.T.reshape(-1)  # time-major, as losses
    assert np.allclose(losses, -logp[np.arange(targets.size), targets], atol=1e-12)


def test_log_probabilities_follow_the_layout():
    """A head character's probability is its head softmax's; a tail character's is its
    cluster token's times its share within the cluster."""
    case = adaptive_case("gru", 0)
    p, layout = case.model.params, case.model.layout
    x = np.random.default_rng(3).normal(size=(1, H))
    logp = adaptive.log_probs(layout, p, x)[0]

    def softmax(a):
        e = np.exp(a - a.max())
        return e / e.sum()
    head = softmax(x[0] @ p["Wy"] + p["by"])
    assert np.isclose(np.exp(logp[4]), head[0])  # rank 0
    inner = softmax(x[0] @ p["Pt1"] @ p["Wt1"] + p["bt1"])
    assert np.isclose(np.exp(logp[6]), head[3 + 1] * inner[1])  # rank 7: cluster 1, #1


def sampler_of(model, unknown=False):
    chars = tuple("abcdefghij"[:V - unknown])
    vocab = Vocab(chars, (1,) * len(chars), has_unknown=unknown)
    return Sampler(model, vocab, "float32")


def test_the_kernel_scores_are_the_log_probabilities():
    case = adaptive_case("lstm", 3, dtype=np.float32)
    sampler = sampler_of(case.model)
    x = np.random.default_rng(4).normal(size=(1, H)).astype(np.float32)
    head, proj, cluster, scores = output_scratch(sampler.output, np.float32)
    got = output_scores(x, sampler.output, head, proj, cluster, scores)
    want = adaptive.log_probs(case.model.layout, case.model.params, x.astype(np.float64))[0]
    assert np.allclose(got, want, atol=1e-5)


def head_first_frequencies(output, x, draws):
    head, proj, cluster, _ = output_scratch(output, x.dtype)
    exps, counters = np.empty(V, x.dtype), np.zeros(1, np.int64)
    counts = np.zeros(V)
    for u in (np.arange(draws) + 0.5) / draws:  # an even grid: frequencies are measures
        token, _ = draw_head_first(x, output, u, head, proj, cluster, exps, 0, 1, counters, 0)
        counts[token] += 1
    return counts / draws


def test_the_head_first_draw_follows_the_exact_distribution():
    """draw_head_first is a deterministic map of u, so the share of an even grid of u
    that lands on each id is its probability, up to the grid's spacing: the head's
    draw hands its residual on to the cluster's."""
    case = adaptive_case("lstm", 0, dtype=np.float32, seed=5)
    model = case.model
    model.params["by"][:] = 0.0  # no character too rare to check
    x = np.random.default_rng(6).normal(size=(1, H)).astype(np.float32)
    probs = np.exp(adaptive.log_probs(model.layout, model.params, x.astype(np.float64))[0])
    frequencies = head_first_frequencies(sampler_of(model).output, x, 20000)
    assert np.abs(frequencies - probs).max() < 5e-4, (frequencies, probs)


def test_a_banned_character_must_be_in_the_head():
    case = adaptive_case("lstm", 0, dtype=np.float32)  # id 8 (the unknown) has rank 4
    with pytest.raises(ValueError, match="outside the adaptive softmax's head"):
        sampler_of(case.model, unknown=True)


def test_a_banned_head_character_is_never_drawn_and_the_rest_renormalise():
    layout = dict(LAYOUT, output_order=(8, 0, 7, 2, 4, 1, 3, 6, 5))  # id 8 in the head
    config = ModelConfig("lstm", V, H, L, **layout)
    model = Model(config, np.random.default_rng(7).normal(0, 0.5, config.parameter_count()),
                  dtype=np.float32)
    model.params["by"][:] = 0.0
    sampler = sampler_of(model, unknown=True)
    assert sampler.banned[8]
    x = np.random.default_rng(8).normal(size=(1, H)).astype(np.float32)
    probs = np.exp(adaptive.log_probs(model.layout, model.params, x.astype(np.float64))[0])
    probs[8] = 0.0
    frequencies = head_first_frequencies(sampler.output, x, 20000)
    assert frequencies[8] == 0.0
    assert np.abs(frequencies - probs / probs.sum()).max() < 5e-4


def test_sampling_and_scoring_agree_with_the_batched_forward():
    """Generation's one-token step scores a text as the training forward does, and every
    decoding option runs on an adaptive model."""
    case = adaptive_case("lstm", 3, dtype=np.float32)
    sampler = sampler_of(case.model)
    ids = np.random.default_rng(9).integers(0, V, 40)
    h, c = sampler.zero_state()
    stepped = sampler.token_losses(ids, h, c)  # short: the one-token step
    _, batched, _, _ = case.model.forward(ids[None, :-1], ids[None, 1:],
                                          *case.model.zero_state(1), need_grad=False)
    assert np.allclose(stepped, batched, atol=1e-4)
    rng = np.random.default_rng(1)
    for decoding in (Decoding(), Decoding(0.7), Decoding(top_k=3), Decoding(top_p=0.8),
                     Decoding(greedy=True)):
        text = "".join(sampler.stream(ids[:5], 50, decoding, rng))
        assert len(text) == 50
    assert len(sampler.beam_search(ids[:5], 10, 3, rng)) == 10


@pytest.mark.parametrize("output_split", [False, True])
def test_adaptive_generation_split_among_threads_is_that_of_one_thread(monkeypatch,
                                                                       output_split):
    """Every part draws the token itself from the same state and uniform: the text and
    state of two threads must be those of one, bit for bit, head-first draws included,
    whether each part computes the whole output layer or its share of it."""
    from charrnn import sample
    case = adaptive_case("lstm", 3, dtype=np.float32)
    single = sampler_of(case.model)
    monkeypatch.setattr(sample, "SAMPLE_SPLIT_WIDTH", 1)
    monkeypatch.setattr(sample, "SPLIT_OUTPUT_COLUMNS", 1 if output_split else 10 ** 6)
    monkeypatch.setattr(parallel, "MIN_UNITS_PER_PART", 1)
    monkeypatch.setattr(parallel, "_threads", 2)
    split = sampler_of(case.model)
    assert len(split.unit_parts) == 2
    assert (split.shared_head(2).size > 0) == output_split
    for decoding in (Decoding(), Decoding(0.8)):
        results = [generated(s, 300, decoding) for s in (single, split)]
        for one, two in zip(*results):
            np.testing.assert_array_equal(one, two)
        drawn = set(results[0][0].tolist())
        assert drawn & set(LAYOUT["output_order"][3:])  # clusters' characters drawn too


def generated(sampler, n, decoding, seed=4, token=2):
    """(ids, h, c): n ids generated from the zero state after feeding `token`, with
    the uniforms of seed."""
    h, c = sampler.zero_state()
    out = np.empty(n, np.int64)
    sampler.generate_into(token, np.random.default_rng(seed).random(n), decoding, h, c, out)
    return out, h, c


def wide_model(softmax, wide=200, layers=1):
    """A float32 GRU over `wide` characters whose output layer spans several panels,
    its biases small enough that clusters are drawn too; and its vocabulary."""
    counts = 1.0 / np.arange(1, wide + 1)
    layout = adaptive.choose_layout(counts, None, 8) if softmax == "adaptive" else {}
    model = Model(ModelConfig("gru", wide, 8, layers, embed=4, **layout), dtype=np.float32)
    model.initialise(np.random.default_rng(3), counts)
    by = model.params["by"]
    by[...] = np.random.default_rng(5).normal(0.0, 0.1, by.shape)
    return model, Vocab(tuple(chr(0x4E00 + k) for k in range(wide)), (1,) * wide)


@pytest.mark.parametrize("softmax", ["full", "adaptive"])
def test_an_output_layer_of_many_panels_split_among_threads_draws_as_one_thread(
        monkeypatch, softmax):
    """Wide enough for each of two threads to compute several panels of the output
    layer's product: the text and state must be those of one thread, bit for bit, at
    temperature 1 (clusters drawn too) and at another."""
    from charrnn import sample
    model, vocab = wide_model(softmax)
    wide, layout = vocab.size, model.config
    single = Sampler(model, vocab, "float32")
    monkeypatch.setattr(sample, "SAMPLE_SPLIT_WIDTH", 1)
    monkeypatch.setattr(sample, "SPLIT_OUTPUT_COLUMNS", 1)
    monkeypatch.setattr(parallel, "MIN_UNITS_PER_PART", 1)
    monkeypatch.setattr(parallel, "_threads", 2)
    split = Sampler(model, vocab, "float32")
    assert len(split.unit_parts) == 2 and split.output[0].shape[0] >= 2
    for decoding in (Decoding(), Decoding(0.8)):
        results = [generated(s, 400, decoding) for s in (single, split)]
        for one, two in zip(*results):
            np.testing.assert_array_equal(one, two)
        ranks = np.argsort(np.asarray(layout.output_order or range(wide)))
        assert ranks[results[0][0]].max() >= layout.head + 32  # far in a cluster


def test_bfloat16_adaptive_generation_is_float32_generation_with_rounded_weights():
    """bfloat16 rounds every weight generation multiplies, the clusters' projections
    and weights included, and widens them exactly: the text must be that of float32
    weights rounded the same way, bit for bit."""
    from charrnn.kernels.panels import to_bfloat16
    model, vocab = wide_model("adaptive", layers=2)
    rounded = Model(model.config, model.flat.copy())
    names = ("Wy", "Wh0", "Wh1", "Wx1", "Pt0", "Wt0")
    from charrnn.sample import multiplies
    assert {name for name in rounded.params if multiplies(name)} == set(names)
    for name in names:
        view = rounded.params[name]
        view[...] = (to_bfloat16(view).astype(np.uint32) << 16).view(np.float32)
    samplers = Sampler(model, vocab, "bfloat16"), Sampler(rounded, vocab, "float32")
    x = np.random.default_rng(8).normal(size=(1, 8)).astype(np.float32)
    scores = [output_scores(x, s.output, *output_scratch(s.output, np.float32)).copy()
              for s in samplers]
    np.testing.assert_array_equal(*scores)  # every id, the clusters' included
    texts = [generated(s, 300, Decoding(), seed=9, token=1)[0] for s in samplers]
    np.testing.assert_array_equal(*texts)


def test_temperature_one_draws_head_first_without_computing_the_clusters():
    """Plain sampling needs a cluster only when the head's draw lands on its token: a
    model whose cluster weights are not finite still samples cleanly from its head,
    while the whole distribution (what other decoding options read) is not finite."""
    case = adaptive_case("rnn", 3, dtype=np.float32)
    model = case.model
    model.params["by"][:3] = 50.0  # the head's characters take all the probability
    model.params["Wt1"][...] = np.nan
    sampler = sampler_of(model)
    plain = "".join(sampler.stream([0], 200, Decoding(), np.random.default_rng(2)))
    assert len(plain) == 200 and set(plain) <= {"e", "a", "h"}  # ids 4, 0, 7: the head
    scores = output_scores(np.ones((1, H), np.float32), sampler.output,
                           *output_scratch(sampler.output, np.float32))
    assert np.isnan(scores[[3, 6, 5]]).all() and np.isfinite(scores[[4, 0, 7]]).all()


def test_fine_tuning_carries_output_weights_by_character_and_place():
    """A character's output weights follow it where it sits in the same part of both
    models: a head column, or a column of the same cluster (whose projection comes
    along); a character that changed parts starts fresh."""
    from charrnn.finetune import transfer_by_character
    old = adaptive_case("lstm", 3, dtype=np.float64).model
    old_vocab = Vocab(tuple("abcdefghi"), (1,) * 9)  # "a" to "h" keep their ids
    new_vocab = Vocab(tuple("abcdefghz"), (1,) * 9)
    # old head e a h, cluster 0 c i b; new head e a c, cluster 0 h z b
    layout = dict(LAYOUT, output_order=(4, 0, 2, 7, 8, 1, 3, 6, 5))
    new = Model(ModelConfig("lstm", V, H, L, embed=3, **layout), dtype=np.float64)
    new.initialise(np.random.default_rng(1))
    fresh = {name: view.copy() for name, view in new.params.items()}
    transfer_by_character(old, old_vocab, new, new_vocab)
    po, pn = old.params, new.params
    assert np.array_equal(pn["Wy"][:, 0], po["Wy"][:, 0])  # "e": head column 0 in both
    assert np.array_equal(pn["Pt0"], po["Pt0"])  # the same projection width
    assert np.array_equal(pn["Wt0"][:, 1], fresh["Wt0"][:, 1])  # "z": new
    assert np.array_equal(pn["Wy"][:, 2], fresh["Wy"][:, 2])  # "c": cluster -> head
    assert np.array_equal(pn["Wt0"][:, 0], fresh["Wt0"][:, 0])  # "h": head -> cluster
    assert np.array_equal(pn["Wt0"][:, 2], po["Wt0"][:, 2])  # "b": cluster 0 in both
    assert np.array_equal(pn["bt0"][2], po["bt0"][2])
    assert np.array_equal(pn["Wh0"], po["Wh0"]) and np.array_equal(pn["embed"][:8],
                                                                   po["embed"][:8])


# -- the layout ----------------------------------------------------------------------------

def test_choose_layout_covers_the_vocabulary_and_keeps_the_unknown_in_the_head():
    counts = np.concatenate([np.full(300, 1000), np.arange(2000, 0, -1) % 50 + 1, [3]])
    unknown = counts.size - 1  # the rarest id
    layout = adaptive.choose_layout(counts, unknown, 256)
    config = ModelConfig("lstm", counts.size, 256, 1, **layout)  # validates the fit
    head = layout["head"]
    assert adaptive.HEAD_MIN <= head <= adaptive.HEAD_MAX
    assert unknown in layout["output_order"][:head]
    assert [dim for _, dim in layout["tails"]] == [64, 16][:len(layout["tails"])]
    ranked = counts[list(layout["output_order"])]
    assert (np.diff(np.delete(ranked, head - 1)) <= 0).all()  # by frequency, but the unknown
    assert config.parameter_count() < ModelConfig("lstm", counts.size, 256, 1
                                                  ).parameter_count()


def test_auto_uses_the_adaptive_softmax_from_the_measured_size():
    assert not adaptive.uses_adaptive("auto", adaptive.ADAPTIVE_FROM_CHARS - 1)
    assert adaptive.uses_adaptive("auto", adaptive.ADAPTIVE_FROM_CHARS)
    assert adaptive.uses_adaptive("adaptive", 10) and not adaptive.uses_adaptive("full", 10**5)
    with pytest.raises(ValueError):
        adaptive.choose_layout([5, 4], None, 8)


@pytest.mark.parametrize("fields", [
    {"head": 3, "tails": ((3, 2),), "output_order": tuple(range(9))},  # sizes short of V
    {"head": 3, "tails": ((6, 2),), "output_order": (0,) * 9},  # not a permutation
    {"head": 3, "tails": (), "output_order": tuple(range(9))},  # no cluster
    {"head": 3, "tails": ((6, 0),), "output_order": tuple(range(9))},
    {"head": 3, "tails": ((6, 2),), "output_order": tuple(range(8))}])  # one id short
def test_config_refuses_a_layout_that_does_not_fit(fields):
    with pytest.raises(ValueError, match="adaptive softmax"):
        ModelConfig("lstm", V, H, L, **fields)


def test_config_round_trips_and_full_softmax_configs_stay_as_before():
    config = ModelConfig("lstm", V, H, L, **LAYOUT)
    record = json.loads(json.dumps(config.to_dict()))
    assert ModelConfig.from_dict(record) == config
    assert "head" not in ModelConfig("lstm", V, H, L).to_dict()  # older charrnn reads it


# -- the command line ------------------------------------------------------------------

def large_alphabet_text(chars=400, length=60_000, seed=0):
    """Zipf-distributed characters from a block of CJK ideographs, in lines."""
    rng = np.random.default_rng(seed)
    ranks = np.minimum(rng.zipf(1.3, length), chars) - 1
    text = "".join(chr(0x4E00 + int(r)) for r in ranks)
    return "\n".join(text[k:k + 40] for k in range(0, len(text), 40))


@pytest.mark.slow
def test_train_sample_score_resume_and_fine_tune_with_the_adaptive_softmax(tmp_path):
    corpus = tmp_path / "zh.txt"
    corpus.write_text(large_alphabet_text(), encoding="utf-8")
    ckpt = tmp_path / "zh.ckpt"
    small = ["--hidden", "16", "--embed", "8", "--layers", "1", "--batch-size", "4",
             "--seq-len", "16", "--eval-every", "5", "--seed", "3"]
    trained = run(*["train", str(corpus), "-o", str(ckpt), "--softmax", "adaptive",
                       "--steps", "10", *small])
    assert trained.exit_code == 0, trained.output
    assert "adaptive softmax" in trained.stderr
    info = json.loads(run(*["info", str(ckpt), "--json"]).stdout)
    assert info["softmax"] == "adaptive"
    assert "output        adaptive softmax (head " in run("info", str(ckpt)).stdout

    # resuming 10 more steps equals 20 steps straight
    more = run(*["train", str(corpus), "-o", str(ckpt), "--resume", "--steps", "20"])
    assert more.exit_code == 0, more.output
    straight = tmp_path / "straight.ckpt"
    assert run(*["train", str(corpus), "-o", str(straight), "--softmax", "adaptive",
                    "--steps", "20", *small]).exit_code == 0
    import charrnn
    a, b = charrnn.load(str(ckpt)), charrnn.load(str(straight))
    assert np.array_equal(a.model.flat, b.model.flat)

    sampled = run(*["sample", str(ckpt), "-n", "100", "--seed", "1"])
    assert sampled.exit_code == 0 and len(sampled.output) >= 100
    for extra in (["--temperature", "0.8"], ["--top-k", "5"], ["--top-p", "0.9"],
                  ["--beam", "3"]):
        assert run(*["sample", str(ckpt), "-n", "20", "--prime", "一", *extra]
                       ).exit_code == 0, extra
    text = large_alphabet_text(seed=1)[:3000] + "Ω"  # a character no model saw
    scored = json.loads(run(*["score", str(ckpt), "--json"], input=text).stdout)
    adapted = json.loads(run(*["score", str(ckpt), "--json", "--adapt"], input=text).stdout)
    plain = json.loads(run(*["score", str(ckpt), "--json"], input=text[:-1]).stdout)
    assert scored["unknown_chars"] == plain["unknown_chars"] + 1
    assert scored["chars"] == plain["chars"] + 1  # charged, not skipped
    assert np.isfinite(scored["bits_per_char"])
    assert np.isfinite(adapted["bits_per_char"])

    # fine-tuning on a corpus with other characters, and with the full softmax
    other = tmp_path / "other.txt"
    other.write_text(large_alphabet_text(chars=300, seed=2) + "ABC", encoding="utf-8")
    for softmax in ("adaptive", "full"):
        tuned = run(*["train", str(other), "-o", str(tmp_path / f"{softmax}.ckpt"),
                         "--init-from", str(ckpt), "--softmax", softmax, "--steps", "3",
                         "--batch-size", "4", "--seq-len", "16"])
        assert tuned.exit_code == 0, tuned.output
        assert json.loads(run(*["info", str(tmp_path / f"{softmax}.ckpt"), "--json"]
                                  ).stdout)["softmax"] == softmax


@pytest.mark.slow
def test_adaptive_on_a_tiny_alphabet_is_a_clear_usage_error(tmp_path):
    corpus = tmp_path / "ab.txt"
    corpus.write_text("ab" * 500)
    result = run(*["train", str(corpus), "-o", str(tmp_path / "ab.ckpt"), "--softmax",
                   "adaptive", "--steps", "1", "--hidden", "8"])
    assert_fails(result, 2)
    assert "--softmax adaptive" in result.stderr
