"""kernels/products.py: a product of few rows split by columns across the team, and
parallel.team_product, which decides when to use it."""

import os

import numpy as np
import pytest

from charrnn import parallel
from charrnn.kernels.panels import panel_width
from charrnn.kernels.products import matmul_team


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("transpose_a", [False, True])
@pytest.mark.parametrize("transpose_b", [False, True])
@pytest.mark.parametrize("rows, K, bounds", [(50, 128, [0, 256, 512]), (7, 33, [0, 64, 100]),
                                             (13, 5, [0, 32, 64, 70]), (1, 9, [0, 40])])
def test_every_part_writes_its_columns_of_the_product(dtype, transpose_a, transpose_b, rows,
                                                      K, bounds):
    rng = np.random.default_rng([rows, K, len(bounds)])
    P = bounds[-1]
    A = rng.standard_normal((K, rows) if transpose_a else (rows, K)).astype(dtype)
    B = rng.standard_normal((P, K) if transpose_b else (K, P)).astype(dtype)
    out = np.full((rows, P), np.nan, dtype)
    matmul_team(A, B, out, transpose_a, transpose_b, np.array(bounds))
    expected = (A.T if transpose_a else A).astype(np.float64) @ (B.T if transpose_b else B)
    tolerance = 1e-4 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(out, expected, rtol=tolerance, atol=tolerance)


@pytest.fixture
def two_threads(monkeypatch):
    monkeypatch.setattr(parallel, "_threads", 2)
    if parallel.team_size() < 2:
        pytest.skip("no GNU OpenMP team of two threads here")


@pytest.fixture
def team_calls(monkeypatch):
    """The (transpose_a, transpose_b) of every matmul_team call."""
    from charrnn.kernels import products
    calls = []

    def spy(a, b, out, transpose_a, transpose_b, bounds):
        calls.append((transpose_a, transpose_b))
        matmul_team(a, b, out, transpose_a, transpose_b, bounds)
    monkeypatch.setattr(products, "matmul_team", spy)
    return calls


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_products_of_few_rows_run_on_the_team_and_equal_numpy(two_threads, team_calls, dtype):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((50, 128)).astype(dtype)
    W = rng.standard_normal((128, 500)).astype(dtype)
    d = rng.standard_normal((50, 500)).astype(dtype)
    tolerance = 1e-4 if dtype == np.float32 else 1e-12
    out = np.full((50, 500), np.nan, dtype)
    assert parallel.matmul(x, W, out) is out
    np.testing.assert_allclose(out, x @ W, rtol=tolerance, atol=tolerance)
    # as the backward pass calls them: x.T @ d and d @ W.T, from transposed views
    grad = np.full((128, 500), np.nan, dtype)
    assert parallel.matmul_tn(x, d, grad) is grad
    np.testing.assert_allclose(grad, x.T @ d, rtol=tolerance, atol=tolerance)
    dx = np.full((50, 128), np.nan, dtype)
    assert parallel.matmul(d, W.T, dx) is dx
    np.testing.assert_allclose(dx, d @ W.T, rtol=tolerance, atol=tolerance)
    assert team_calls == [(False, False), (True, False), (False, True)]


def test_what_the_team_cannot_multiply_is_left_to_numpy(two_threads, team_calls):
    rng = np.random.default_rng(5)
    x, W = rng.standard_normal((50, 128)), rng.standard_normal((128, 512))
    with pytest.raises(ValueError):  # numpy's message, as without the team
        parallel.matmul(x, W[:100], np.empty((50, 512)))
    for wrong_out in (np.empty((60, 512)), np.empty((50, 600))):
        assert not parallel.team_product(x, W, wrong_out)
    square = rng.standard_normal((512, 512))
    b = rng.standard_normal((50, 512))
    expected = b @ square
    assert parallel.matmul(b, square, b) is b  # out overlaps an operand: numpy copies
    np.testing.assert_allclose(b, expected, rtol=1e-12)
    ints = np.ones((50, 128), np.int64)
    assert (parallel.matmul(ints, np.ones((128, 512), np.int64),
                            np.empty((50, 512), np.int64)) == 128).all()
    assert team_calls == []


def test_small_narrow_or_strided_products_stay_with_numpy(two_threads, monkeypatch):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((50, 128))
    small = rng.standard_normal((128, 40))  # below MIN_TEAM_PRODUCT
    assert not parallel.team_product(x, small, np.empty((50, 40)))
    wide = rng.standard_normal((128, 600))
    strided = wide[:, ::2]  # neither C- nor F-contiguous
    out = np.empty((50, 300))
    assert not parallel.team_product(x, strided, out)
    assert parallel.matmul(x, strided, out) is out
    np.testing.assert_allclose(out, x @ strided, rtol=1e-12)
    narrow = panel_width(np.float64) * (2 * parallel.MIN_PANELS_PER_TEAM_PART - 1)
    monkeypatch.setattr(parallel, "MIN_TEAM_PRODUCT", 1)  # too few panels for two threads
    assert not parallel.team_product(x, wide[:, :narrow], np.empty((50, narrow)))
    monkeypatch.setattr(parallel, "_team_pid", os.getpid() + 1)  # a forked child: no team
    assert not parallel.team_product(x, wide, np.empty((50, 600)))
