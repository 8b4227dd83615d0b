"""The optimizer's pieces against numpy: the global gradient norm and its clipping, and
one Adam step."""

import math

import numpy as np
import pytest

from charrnn import parallel
from charrnn.optim import Adam, clip_by_global_norm, global_norm


@pytest.mark.parametrize("size", [0, 1, 3, 4, 5, 1001])
def test_global_norm_is_the_float64_norm(size):
    grads = np.random.default_rng(size).standard_normal(size).astype(np.float32) * 3.0
    assert global_norm(grads) == pytest.approx(np.linalg.norm(grads.astype(np.float64)),
                                               rel=1e-12, abs=1e-12)


def test_global_norm_sees_every_element_and_non_finite_values():
    grads = np.zeros(7, np.float32)
    for k in range(7):  # each position counts, tails included
        grads[:] = 0.0
        grads[k] = 2.0
        assert global_norm(grads) == 2.0
    grads[5] = np.nan
    assert math.isnan(global_norm(grads))
    grads[5] = np.inf
    assert global_norm(grads) == math.inf


def test_clipping_scales_to_the_limit_and_leaves_small_gradients_alone():
    grads = np.full(9, 4.0, np.float32)  # norm 12
    assert clip_by_global_norm(grads, 6.0) == pytest.approx(12.0)
    assert global_norm(grads) == pytest.approx(6.0, rel=1e-6)
    small = np.full(9, 0.1, np.float32)
    clip_by_global_norm(small, 6.0)
    assert np.all(small == np.float32(0.1))


def test_adam_step_matches_the_formula():
    rng = np.random.default_rng(0)
    params = rng.standard_normal(11)
    grads = rng.standard_normal(11)
    adam = Adam(params.size, np.float64)
    expected = params.copy()
    m = (1 - 0.9) * grads
    v = (1 - 0.999) * grads ** 2
    m_hat, v_hat = m / (1 - 0.9), v / (1 - 0.999)
    expected -= 1e-2 * m_hat / (np.sqrt(v_hat) + adam.eps)
    adam.step(params, grads, 1e-2)
    np.testing.assert_allclose(params, expected, rtol=1e-10, atol=1e-12)


def test_global_norm_is_the_same_on_any_thread_count(monkeypatch):
    # Data-parallel replicas may run on machines with different core counts; they clip
    # the same gradient, so the norm may not depend on how threads shared the sum.
    from charrnn import optim
    monkeypatch.setattr(optim, "NORM_BLOCK", 1000)
    monkeypatch.setattr(optim, "NORM_BLOCKS_PER_THREAD", 1)
    grads = np.random.default_rng(7).standard_normal(7_500).astype(np.float32) * 1e3
    norms = set()
    team = parallel.team_size()
    for threads, team_size in ((1, team), (2, team), (2, 0), (3, team), (5, team)):
        monkeypatch.setattr(parallel, "_threads", threads)
        monkeypatch.setattr(parallel, "_team_size", team_size)  # 0: on the pool
        norms.add(global_norm(grads))
    assert len(norms) == 1
    assert norms.pop() == pytest.approx(np.linalg.norm(grads.astype(np.float64)), rel=1e-12)


def test_adam_float32_step_matches_the_float64_formula(monkeypatch):
    from charrnn import optim
    monkeypatch.setattr(optim, "ADAM_MIN_PER_THREAD", 1 << 14)
    monkeypatch.setattr(parallel, "_threads", 3)
    assert len(parallel.row_ranges(70_001, optim.ADAM_MIN_PER_THREAD)) == 3  # threads share it
    rng = np.random.default_rng(1)
    params = rng.standard_normal(70_001).astype(np.float32)
    grads = rng.standard_normal(70_001).astype(np.float32)
    adam = Adam(params.size, np.float32)
    expected = params.astype(np.float64)
    for _ in (1, 2):
        adam.step(params, grads, 1e-2)
    m = (1 - 0.9 ** 2) * grads.astype(np.float64)  # two steps of the same gradient
    v = (1 - 0.999 ** 2) * grads.astype(np.float64) ** 2
    m1, v1 = (1 - 0.9) * grads.astype(np.float64), (1 - 0.999) * grads.astype(np.float64) ** 2
    expected -= 1e-2 * (m1 / (1 - 0.9)) / (np.sqrt(v1 / (1 - 0.999)) + adam.eps)
    expected -= 1e-2 * (m / (1 - 0.9 ** 2)) / (np.sqrt(v / (1 - 0.999 ** 2)) + adam.eps)
    np.testing.assert_allclose(params, expected, rtol=1e-5, atol=1e-6)


def test_adam_is_the_same_on_the_team_the_pool_and_one_thread(monkeypatch):
    from charrnn import optim
    monkeypatch.setattr(optim, "ADAM_MIN_PER_THREAD", 1 << 14)
    rng = np.random.default_rng(3)
    start = rng.standard_normal(70_001).astype(np.float32)
    grads = rng.standard_normal(70_001).astype(np.float32)
    results = []
    team = parallel.team_size()
    for threads, team_size in ((1, team), (2, team), (2, 0)):
        monkeypatch.setattr(parallel, "_threads", threads)
        monkeypatch.setattr(parallel, "_team_size", team_size)
        ranges, on_team = parallel.compiled_ranges(start.size, optim.ADAM_MIN_PER_THREAD,
                                                   optim.ADAM_MIN_PER_TEAM_THREAD)
        assert len(ranges) == threads and on_team == (threads > 1 and team_size > 1)
        params, adam = start.copy(), Adam(start.size, np.float32)
        for step in range(3):
            adam.step(params, grads * (step + 1), 1e-2)
        results.append((params, adam.m, adam.v))
    for other in results[1:]:
        for a, b in zip(results[0], other):
            assert np.array_equal(a, b)
