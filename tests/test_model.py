"""Tests of charrnn.model: gradients against central differences, the forward against
the numpy oracle in tests/reference.py, chunked runs against whole runs, the one-step
sampling path against the batched forward, float32 against float64, and the parameter
layout.

Every case is tiny (V=5, H=4, N=2, T=3, two layers) so a full gradient check of every
parameter entry takes a fraction of a second once the kernels are compiled.
"""

from dataclasses import dataclass

import numpy as np
import pytest
from reference import reference_forward

from charrnn.model import Model, ModelConfig, flat_views
from charrnn.sample import Sampler
from charrnn.vocab import Vocab

CELLS = ("lstm", "gru", "rnn")
EMBEDS = (0, 3)  # one-hot input, and a learned embedding of width 3
V, H, N, T, L = 5, 4, 2, 3, 2
DROPOUT = 0.25

EPS = 1e-6  # central-difference step (float64)
GRAD_RTOL = 1e-5  # largest relative error allowed between analytic and numerical
# Relative errors are |a - n| / max(|a| + |n|, GRAD_FLOOR): entries whose gradients are
# far below the typical ~1e-2 are held to an absolute error of GRAD_RTOL * GRAD_FLOOR
# = 1e-8 instead, since central differences of a float64 loss near 1.6 carry ~1e-10 of
# rounding noise that would make a purely relative test on a near-zero entry flaky.
GRAD_FLOOR = 1e-3


@dataclass
class Case:
    model: Model
    x: np.ndarray  # (N, T) input ids
    y: np.ndarray  # (N, T) target ids
    h0: np.ndarray  # (L, N, H)
    c0: np.ndarray  # (L, N, H)
    masks: np.ndarray | None  # (L, T, N, H) inverted-dropout multipliers

    def forward(self, need_grad=True, h0=None, c0=None):
        return self.model.forward(self.x, self.y, self.h0 if h0 is None else h0,
                                  self.c0 if c0 is None else c0, self.masks, need_grad)


def make_case(cell, embed, dtype=np.float64, steps=T, batch=N, seed=0, dropout=True):
    """A model with every parameter (biases included) random and non-zero, a random
    batch, a random non-zero initial state and a fixed dropout mask."""
    config = ModelConfig(cell, V, H, L, embed=embed, dropout=DROPOUT if dropout else 0.0)
    rng = np.random.default_rng([seed, embed, CELLS.index(cell)])
    flat = rng.normal(0.0, 0.5, config.parameter_count())
    model = Model(config, flat, dtype=dtype)
    x = rng.integers(0, V, (batch, steps))
    y = rng.integers(0, V, (batch, steps))
    h0 = rng.uniform(-0.5, 0.5, (L, batch, H)).astype(dtype)
    c0 = rng.uniform(-0.5, 0.5, (L, batch, H)).astype(dtype)
    masks = None
    if dropout:
        keep = rng.random((L, steps, batch, H)) >= DROPOUT
        masks = (keep / (1.0 - DROPOUT)).astype(dtype)
        assert 0 < keep.mean() < 1  # the mask really drops some units and keeps others
    return Case(model, x, y, h0, c0, masks)


# -- the gradient checker ---------------------------------------------------------------

def analytic_gradients(case):
    """Model.backward's gradient of every parameter, and of h0 and c0."""
    case.forward(need_grad=True)
    dh0, dc0 = case.model.backward()
    grads = {name: grad.copy() for name, grad in case.model.grads.items()}
    grads["h0"], grads["c0"] = np.array(dh0), np.array(dc0)
    return grads


def numerical_gradients(case, eps=EPS):
    """Central differences of the mean loss for every entry of every parameter, h0, c0."""
    def loss(h0=None, c0=None):
        return case.forward(need_grad=False, h0=h0, c0=c0)[0]

    grads = {}
    targets = dict(case.model.params)  # views into model.flat: writes perturb the model
    targets["h0"], targets["c0"] = case.h0.copy(), case.c0.copy()
    for name, array in targets.items():
        grad = np.zeros(array.shape)
        flat = array.reshape(-1)  # a view: array is contiguous
        assert np.shares_memory(flat, array)
        for k in range(flat.size):
            saved = flat[k]
            values = []
            for delta in (eps, -eps):
                flat[k] = saved + delta
                state = {name: array} if name in ("h0", "c0") else {}
                values.append(loss(**state))
            flat[k] = saved
            grad.reshape(-1)[k] = (values[0] - values[1]) / (2 * eps)
        grads[name] = grad
    return grads


def relative_errors(analytic, numerical):
    """{name: largest elementwise relative error}, see GRAD_FLOOR."""
    assert analytic.keys() == numerical.keys()
    errors = {}
    for name in analytic:
        a, n = analytic[name], numerical[name]
        assert a.shape == n.shape, name
        errors[name] = float(np.max(np.abs(a - n) / np.maximum(np.abs(a) + np.abs(n),
                                                                GRAD_FLOOR)))
    return errors


def gradient_check(case, rtol=GRAD_RTOL):
    """Returns (names whose gradients disagree, errors by name, gradients), gradients
    being {"analytic": {...}, "numerical": {...}}."""
    analytic = analytic_gradients(case)
    numerical = numerical_gradients(case)
    errors = relative_errors(analytic, numerical)
    mismatches = sorted(name for name, err in errors.items() if not err < rtol)
    return mismatches, errors, {"analytic": analytic, "numerical": numerical}


# -- (a) gradients ----------------------------------------------------------------------

@pytest.mark.parametrize("threads", [1, 2])  # 2: each thread runs one row (batch_pieces)
@pytest.mark.parametrize("embed", EMBEDS)
@pytest.mark.parametrize("cell", CELLS)
def test_gradients_match_central_differences(cell, embed, threads, monkeypatch):
    from charrnn import parallel
    monkeypatch.setattr(parallel, "_threads", threads)
    assert len(parallel.batch_pieces(N, H)) == threads
    case = make_case(cell, embed)
    mismatches, errors, grads = gradient_check(case)
    expected = {name for name, _ in case.model.config.parameter_shapes()} | {"h0", "c0"}
    assert set(errors) == expected
    assert mismatches == [], {name: errors[name] for name in mismatches}
    # Every parameter and h0 must actually influence the loss, or agreeing zeros would
    # prove nothing; c0 only exists for the LSTM (GRU and RNN carry it unused).
    for name, grad in grads["numerical"].items():
        if name == "c0" and cell != "lstm":
            assert not grad.any() and not grads["analytic"]["c0"].any()
        else:
            assert np.abs(grad).max() > 1e-3, name


def fold_of(model, x):
    """Which way layer 0 computes embed[x] @ Wx0 for the ids x (N, T): "every id",
    "ids present" or None (model.embedding_fold)."""
    fold = model.embedding_fold(np.ascontiguousarray(x.T).reshape(-1))
    return None if fold is None else ("every id" if fold[0] is None else "ids present")


def test_the_ids_present_are_numpys_unique_ids_and_their_inverse():
    """embedding_fold's "ids present" (counted, not sorted) is what np.unique gives:
    the distinct ids ascending, and each position's index among them."""
    model = Model(ModelConfig("lstm", vocab_size=500, hidden=4, layers=1, embed=3))
    rng = np.random.default_rng(5)
    for size in (2, 50, 499):
        xs = rng.integers(0, 500, size)
        xs[-1] = xs[0]  # one repeat at least
        present, where = model.embedding_fold(xs)
        want_present, want_where = np.unique(xs, return_inverse=True)
        assert np.array_equal(present, want_present) and np.array_equal(where, want_where)


# one-hot Wx0 in two pieces; the lookup in every id's row (one thread: M = 6 > V); in
# the rows of the ids present (M = 3 < V, one id repeated); embed[x] @ Wx0 in one piece
# and in two (each piece's M = 3 < V, its ids distinct)
@pytest.mark.parametrize("embed, batch, threads, fold", [
    (0, 2, 2, None), (3, 2, 1, "every id"), (3, 1, 1, "ids present"), (3, 1, 1, None),
    (3, 2, 2, None)])
@pytest.mark.parametrize("cell", CELLS)
def test_backward_overwrites_every_gradient(cell, embed, batch, threads, fold, monkeypatch):
    """backward writes each gradient whole (zeroing only those rows scatter into), so
    whatever the buffers held before cannot leak into a step's gradient."""
    from charrnn import parallel
    monkeypatch.setattr(parallel, "_threads", threads)
    pieces = parallel.batch_pieces(batch, H)
    assert len(pieces) == min(batch, threads)
    case = make_case(cell, embed, batch=batch)
    case.x[...] = np.arange(case.x.size).reshape(case.x.shape) % V  # distinct per row
    if fold == "ids present":
        case.x[:, 0] = case.x[:, 1]
    assert fold_of(case.model, case.x[pieces[0][0]:pieces[0][1]]) == fold
    clean = analytic_gradients(case)
    assert len(case.model._piece_grads) == len(pieces) - 1
    case.model.grad_flat[:] = np.nan
    for piece in case.model._piece_grads:
        piece[:] = np.nan
    again = analytic_gradients(case)
    for name in clean:
        np.testing.assert_array_equal(again[name], clean[name], err_msg=name)


@pytest.mark.parametrize("cell", CELLS)
def test_gradients_match_whichever_way_the_embedding_is_folded(cell, monkeypatch):
    """Layer 0 looks rows up in embed @ Wx0 when the batch has more positions than the
    vocabulary has ids (M = N * T > V), in embed[ids present] @ Wx0 when fewer but
    some id repeats, and multiplies embed[x] @ Wx0 when none does: every way must pass
    the gradient check and give the loss of the plain product. One thread: in pieces
    of one row each, M = T < V would never look up every id."""
    from charrnn import parallel
    monkeypatch.setattr(parallel, "_threads", 1)
    every = make_case(cell, 3, steps=T, batch=N)
    present = make_case(cell, 3, steps=4, batch=1)
    present.x[...] = [[3, 1, 3, 0]]  # 0 and 2 absent: their rows' gradients are zero
    plain = make_case(cell, 3, steps=2, batch=1)
    plain.x[...] = [[4, 1]]
    for case, fold in ((every, "every id"), (present, "ids present"), (plain, None)):
        assert fold_of(case.model, case.x) == fold
        mismatches, errors, _ = gradient_check(case)
        assert mismatches == [], {name: errors[name] for name in mismatches}
        if fold is not None:  # the same losses as the plain product
            losses = case.forward(need_grad=False)[1]
            monkeypatch.setattr(case.model, "embedding_fold", lambda xs: None)
            assert np.allclose(case.forward(need_grad=False)[1], losses, rtol=1e-12)
            monkeypatch.undo()
            monkeypatch.setattr(parallel, "_threads", 1)


@pytest.mark.parametrize("target", ["Wh1", "bn0", "embed", "h0"])
def test_gradient_check_reports_a_corrupted_gradient(monkeypatch, target):
    """(f) The checker is sensitive: one entry off by 1e-4 relative is reported, and
    nothing else is."""
    case = make_case("gru", 3)
    clean, _, _ = gradient_check(case)
    assert clean == []
    original_backward = Model.backward

    def corrupted_backward(self):
        dh0, dc0 = original_backward(self)
        grad = dh0 if target == "h0" else self.grads[target]
        index = np.unravel_index(np.argmax(np.abs(grad)), grad.shape)
        grad[index] *= 1.0 + 1e-4
        return dh0, dc0

    monkeypatch.setattr(Model, "backward", corrupted_backward)
    mismatches, errors, _ = gradient_check(case)
    assert mismatches == [target]
    assert 2e-5 < errors[target] < 1e-4


def test_gradient_check_reports_an_ignored_dropout_mask(monkeypatch):
    """A backward that forgets the dropout mask (a plausible bug) fails the check."""
    case = make_case("lstm", 0)
    original_forward = Model.forward

    def forward_forgetting_masks(self, x_ids, y_ids, h0, c0, masks=None, need_grad=True):
        result = original_forward(self, x_ids, y_ids, h0, c0, masks, need_grad)
        if self._cache is not None:  # [(lo, hi, cache)] per batch piece
            self._cache = [(lo, hi, cache[:3] + (None,) + cache[4:])
                           for lo, hi, cache in self._cache]
        return result

    monkeypatch.setattr(Model, "forward", forward_forgetting_masks)
    mismatches, _, _ = gradient_check(case)
    assert "Wx0" in mismatches and "h0" in mismatches


# -- (b) the forward against the oracle -------------------------------------------------

@pytest.mark.parametrize("with_masks", [True, False])
@pytest.mark.parametrize("embed", EMBEDS)
@pytest.mark.parametrize("cell", CELLS)
def test_forward_matches_reference(cell, embed, with_masks):
    case = make_case(cell, embed, dropout=with_masks)
    loss, losses, h_final, c_final = case.forward(need_grad=False)
    ref_loss, ref_losses, ref_h, ref_c = reference_forward(
        case.model.config, case.model.flat, case.x, case.y, case.h0, case.c0, case.masks)
    assert losses.shape == (T * N,)
    np.testing.assert_allclose(losses, ref_losses, rtol=1e-12, atol=1e-12)
    assert loss == pytest.approx(ref_loss, rel=1e-12)
    np.testing.assert_allclose(h_final, ref_h, rtol=1e-12, atol=1e-12)
    if cell == "lstm":
        np.testing.assert_allclose(c_final, ref_c, rtol=1e-12, atol=1e-12)


def test_reference_notices_a_changed_parameter():
    """The oracle comparison can fail: nudging one weight changes the reference loss."""
    case = make_case("lstm", 3)
    loss = case.forward(need_grad=False)[0]
    flat = case.model.flat.copy()
    flat_views(flat, case.model.config)["Wh1"][0, 0] += 1e-3
    ref_loss = reference_forward(case.model.config, flat, case.x, case.y, case.h0,
                                 case.c0, case.masks)[0]
    assert abs(ref_loss - loss) > 1e-9


@pytest.mark.parametrize("cell", CELLS)
def test_forward_with_need_grad_gives_the_same_losses(cell):
    case = make_case(cell, 0)
    with_grad = case.forward(need_grad=True)
    without = case.forward(need_grad=False)
    np.testing.assert_array_equal(with_grad[1], without[1])
    np.testing.assert_array_equal(with_grad[2], without[2])


# -- (c) whole sequence == chunks with carried state -------------------------------------

@pytest.mark.parametrize("embed", EMBEDS)
@pytest.mark.parametrize("cell", CELLS)
def test_whole_sequence_equals_chunks_with_carried_state(cell, embed):
    steps = 7
    case = make_case(cell, embed, steps=steps)
    whole_loss, whole_losses, whole_h, whole_c = case.forward(need_grad=False)
    h, c = case.h0, case.c0
    chunk_losses = []
    for begin, end in [(0, 3), (3, 4), (4, 7)]:
        _, losses, h, c = case.model.forward(case.x[:, begin:end], case.y[:, begin:end],
                                             h, c, case.masks[:, begin:end],
                                             need_grad=False)
        chunk_losses.append(losses)  # time-major, so chunks concatenate in time
    np.testing.assert_allclose(np.concatenate(chunk_losses), whole_losses,
                               rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(h, whole_h, rtol=1e-13, atol=1e-13)
    if cell == "lstm":
        np.testing.assert_allclose(c, whole_c, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("cell", CELLS)
def test_chunks_without_carried_state_differ(cell):
    """The chunk test above can fail: dropping the state changes the later losses."""
    case = make_case(cell, 0, steps=6)
    _, whole_losses, _, _ = case.forward(need_grad=False)
    _, tail, _, _ = case.model.forward(case.x[:, 3:], case.y[:, 3:], case.h0, case.c0,
                                       case.masks[:, 3:], need_grad=False)
    assert np.abs(tail - whole_losses[3 * N:]).max() > 1e-6


@pytest.mark.parametrize("cell", ["gru", "rnn"])
def test_unused_cell_state_is_carried_not_garbage(cell):
    case = make_case(cell, 0)
    zeros = np.zeros_like(case.c0)
    # Leave NaN-filled blocks of the (T, N, H) size in numpy's allocator cache, so an
    # uninitialised allocation of that size shows up as NaN rather than as lucky zeros.
    junk = [np.full((T, N, H), np.nan) for _ in range(16)]
    del junk
    _, _, _, c_final = case.forward(need_grad=False, c0=zeros)
    assert np.array_equal(c_final, zeros)


# -- (d) the one-step sampling path ------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("embed", EMBEDS)
@pytest.mark.parametrize("cell", CELLS)
def test_sampler_token_losses_match_batched_forward(cell, embed, dtype):
    # float32: the two paths sum in different orders (BLAS GEMM vs packed panels); see
    # F32_ATOL below for the size of float32 rounding here.
    tol = 1e-12 if dtype == np.float64 else F32_ATOL
    steps = 6
    case = make_case(cell, embed, dtype, steps=steps, batch=1, dropout=False)
    vocab = Vocab.from_text("abcde")
    assert vocab.size == V
    ids = np.concatenate([case.x[0], case.y[0, -1:]])  # (T + 1,)
    _, losses, h_final, c_final = case.model.forward(ids[None, :-1], ids[None, 1:],
                                                     case.h0, case.c0, need_grad=False)
    sampler = Sampler(case.model, vocab)
    h, c = case.h0[:, 0].copy(), case.c0[:, 0].copy()  # (L, H) one stream's state
    token_losses = sampler.token_losses(ids, h, c)
    assert h.dtype == dtype
    np.testing.assert_allclose(token_losses, losses, rtol=tol, atol=tol)
    np.testing.assert_allclose(h, h_final[:, 0], rtol=tol, atol=tol)
    if cell == "lstm":
        np.testing.assert_allclose(c, c_final[:, 0], rtol=tol, atol=tol)


def test_sampler_token_losses_of_short_inputs():
    case = make_case("lstm", 0, batch=1, dropout=False)
    sampler = Sampler(case.model, Vocab.from_text("abcde"))
    h, c = sampler.zero_state()
    assert sampler.token_losses(np.array([2]), h, c).shape == (0,)
    assert not h.any() and not c.any()  # nothing to predict: the state is not advanced


# -- (e) float32 against float64 ---------------------------------------------------------

# float32 carries ~6e-8 relative rounding per operation (6e-8 x a loss near 1.6 is
# ~1e-7); over two layers x three steps the differences from float64 measured at most
# 1.4e-7 on losses, states in (-1, 1) and gradients of size ~0.1. 1e-5 leaves ~50x room
# for another BLAS's summation order, another CPU, or a float32 tanh/sigmoid that is a
# fast approximation good to a few ulps, and is still far below the effect of a real
# mistake (a wrong gate, a float16-like truncation, an approximation off by more than a
# few ulps), which shifts losses by 1e-4 or more.
F32_ATOL = 1e-5


@pytest.mark.parametrize("embed", EMBEDS)
@pytest.mark.parametrize("cell", CELLS)
def test_float32_agrees_with_float64(cell, embed):
    case64 = make_case(cell, embed, np.float64)
    case32 = make_case(cell, embed, np.float32)
    assert case32.model.flat.dtype == np.float32
    results = {}
    for name, case in (("64", case64), ("32", case32)):
        loss, losses, h, c = case.forward(need_grad=True)
        dh0, dc0 = case.model.backward()
        results[name] = dict(loss=loss, losses=losses, h=h, c=c, dh0=dh0, dc0=dc0,
                             grads=case.model.grad_flat.copy())
    ref, low = results["64"], results["32"]
    assert low["h"].dtype == np.float32 and low["grads"].dtype == np.float32
    assert abs(low["loss"] - ref["loss"]) < F32_ATOL
    for key in ("losses", "h", "dh0", "grads") + (("c", "dc0") if cell == "lstm" else ()):
        np.testing.assert_allclose(low[key], ref[key], rtol=0, atol=F32_ATOL, err_msg=key)


# -- the parameter layout ----------------------------------------------------------------

def expected_parameter_count(cell, V, H, L, E):
    total = V * E + H * V + V  # embedding, output projection
    for layer in range(L):
        D = (E or V) if layer == 0 else H
        total += {"lstm": 4 * H * (D + H + 1),
                  "gru": 3 * H * (D + H + 1) + H,
                  "rnn": H * (D + H + 1)}[cell]
    return total


@pytest.mark.parametrize("layers", [1, 3])
@pytest.mark.parametrize("embed", [0, 7])
@pytest.mark.parametrize("cell", CELLS)
def test_parameter_count_formula(cell, embed, layers):
    config = ModelConfig(cell, vocab_size=11, hidden=6, layers=layers, embed=embed)
    assert config.parameter_count() == expected_parameter_count(cell, 11, 6, layers, embed)
    assert Model(config).flat.size == config.parameter_count()


def test_flat_views_tile_the_buffer_in_order():
    config = ModelConfig("gru", V, H, L, embed=3)
    flat = np.arange(config.parameter_count(), dtype=np.float64)
    views = flat_views(flat, config)
    assert list(views) == ["embed", "Wx0", "Wh0", "b0", "bn0", "Wx1", "Wh1", "b1", "bn1",
                           "Wy", "by"]
    assert np.array_equal(np.concatenate([v.reshape(-1) for v in views.values()]), flat)
    assert all(np.shares_memory(v, flat) for v in views.values())
    assert views["Wx0"].shape == (3, 3 * H) and views["Wx1"].shape == (H, 3 * H)


def test_model_rejects_a_buffer_of_the_wrong_size():
    config = ModelConfig("rnn", V, H, L)
    with pytest.raises(ValueError, match=f"expected {config.parameter_count()} parameters"):
        Model(config, np.zeros(config.parameter_count() + 1))


@pytest.mark.parametrize("kwargs", [dict(cell="transformer"), dict(hidden=0),
                                    dict(embed=-1), dict(dropout=1.0)])
def test_config_rejects_bad_values(kwargs):
    with pytest.raises(ValueError):
        ModelConfig(**{**dict(cell="lstm", vocab_size=V, hidden=H, layers=L), **kwargs})


def test_config_round_trips_through_a_dict():
    config = ModelConfig("gru", 7, 5, 3, embed=2, dropout=0.5)
    assert ModelConfig.from_dict({**config.to_dict(), "unknown_future_field": 1}) == config


def test_backward_without_forward_is_an_error():
    model = Model(ModelConfig("lstm", V, H, L), dtype=np.float64)
    with pytest.raises(RuntimeError, match="forward"):
        model.backward()
    model.forward(np.zeros((N, T), int), np.zeros((N, T), int), *model.zero_state(N),
                  need_grad=False)
    with pytest.raises(RuntimeError, match="forward"):
        model.backward()


def test_initialise():
    config = ModelConfig("lstm", V, H, L, embed=3)
    model = Model(config, dtype=np.float64)
    counts = np.array([9, 0, 3, 1, 6])
    model.initialise(np.random.default_rng(0), counts)
    bound = 1.0 / np.sqrt(H)
    for layer in range(L):
        b = model.params[f"b{layer}"]
        assert np.all(b[H:2 * H] == 1.0) and not b[:H].any() and not b[2 * H:].any()
        for name in (f"Wx{layer}", f"Wh{layer}"):
            w = model.params[name]
            assert np.abs(w).max() <= bound and w.std() > bound / 4
    assert np.abs(model.params["embed"]).max() > bound  # N(0, 1), not the uniform bound
    probs = np.exp(model.params["by"])
    np.testing.assert_allclose(probs, (counts + 1) / (counts + 1).sum())
    again = Model(config, dtype=np.float64)
    again.initialise(np.random.default_rng(0), counts)
    assert np.array_equal(again.flat, model.flat)


# -- threads that split a layer's units ----------------------------------------------------

@pytest.fixture
def split_units(monkeypatch):
    """Three threads, each owning one or two of the H = 4 units (sizes 1, 1, 2), so
    every layer runs as units split across threads that meet once per step."""
    from charrnn import parallel
    monkeypatch.setattr(parallel, "MIN_UNITS_PER_PART", 1)
    monkeypatch.setattr(parallel, "UNIT_SPLIT_WIDTH", 1)
    monkeypatch.setattr(parallel, "splits_units", lambda *layer: True)
    monkeypatch.setattr(parallel, "_threads", 3)
    assert [j1 - j0 for j0, j1 in parallel.layer_units(H)] == [1, 1, 2]
    assert parallel.batch_pieces(N, H) == [(0, N)]


@pytest.fixture
def split_units_on_team(monkeypatch):
    """Two threads, units split (2 and 2 of the H = 4), the parts run on Numba's
    thread team (recurrent_*_team) rather than the pool."""
    from charrnn import parallel
    if parallel.team_size() < 2:
        pytest.skip("no GNU OpenMP team here: the pool runs the parts (tested above)")
    monkeypatch.setattr(parallel, "MIN_UNITS_PER_PART", 1)
    monkeypatch.setattr(parallel, "UNIT_SPLIT_WIDTH", 1)
    monkeypatch.setattr(parallel, "splits_units", lambda *layer: True)
    monkeypatch.setattr(parallel, "_threads", 2)
    assert parallel.layer_units(H) == [(0, 2), (2, 4)] and parallel.team_runs(2)


@pytest.mark.parametrize("embed", EMBEDS)
@pytest.mark.parametrize("cell", CELLS)
def test_gradients_match_central_differences_with_split_units(cell, embed, split_units):
    mismatches, errors, _ = gradient_check(make_case(cell, embed))
    assert not mismatches, errors


@pytest.mark.parametrize("embed", EMBEDS)
@pytest.mark.parametrize("cell", CELLS)
def test_gradients_match_central_differences_with_units_split_on_the_team(
        cell, embed, split_units_on_team):
    mismatches, errors, _ = gradient_check(make_case(cell, embed))
    assert not mismatches, errors


@pytest.mark.parametrize("cell", CELLS)
def test_threads_give_the_results_of_one_thread(cell, monkeypatch):
    from charrnn import parallel
    results = []
    monkeypatch.setattr(parallel, "UNIT_SPLIT_WIDTH", 1)
    monkeypatch.setattr(parallel, "MIN_UNITS_PER_PART", 1)
    team = parallel.team_size()
    # (3, 1), (2, 1): units split, on the pool (no team, or, here on 2 cores, more parts
    # than its threads) and on Numba's team where there is one; (2, 1000), (3, 1000):
    # the batch split into row pieces
    for threads, pieces_below, team_size in ((1, 1000, team), (3, 1, team), (2, 1, 0),
                                             (2, 1, team), (2, 1000, team), (3, 1000, team)):
        monkeypatch.setattr(parallel, "splits_units", lambda *layer, below=pieces_below: H >= below)
        monkeypatch.setattr(parallel, "_threads", threads)
        monkeypatch.setattr(parallel, "_team_size", team_size)
        pieces = threads if pieces_below > H else 1
        assert len(parallel.batch_pieces(3, H)) == pieces
        if pieces == 1:  # the layers split their units (inside a piece: one thread)
            assert len(parallel.layer_units(H)) == threads
        case = make_case(cell, 3, steps=7, batch=3)
        loss, losses, h, c = case.forward()
        dh0, dc0 = case.model.backward()
        results.append([losses, h, c, dh0, dc0, case.model.grad_flat.copy()])
    for other in results[1:]:
        for a, b in zip(results[0], other):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("threads", [1, 2])
def test_forward_backward_is_forward_then_backward(threads, monkeypatch):
    """A training step's fused pass runs each piece's backward straight after its
    forward: the same losses, state and gradients as the two passes, bit for bit."""
    from charrnn import parallel
    monkeypatch.setattr(parallel, "_threads", threads)
    case = make_case("lstm", 3, dtype=np.float32, batch=4)
    assert len(parallel.batch_pieces(4, H)) == threads
    loss, losses, h, c = case.forward()
    case.model.backward()
    grads = case.model.grad_flat.copy()
    case.model.grad_flat[:] = np.nan
    fused = case.model.forward_backward(case.x, case.y, case.h0, case.c0, case.masks)
    for got, want in zip(fused, (loss, losses, h, c)):
        np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(case.model.grad_flat, grads)
    assert np.abs(grads).max() > 0
