"""The packed recurrent product (kernels/panels.py) against numpy's."""

import numpy as np
import pytest

from charrnn.kernels.panels import ROWS_PER_TILE, padded_columns, panel_matmul, panel_width
from charrnn.model import packed_panels


def product(x, W):
    out = np.full((x.shape[0], padded_columns(W.shape[1], W.dtype)), np.nan, W.dtype)
    panel_matmul(x, packed_panels(W), out)
    return out


@pytest.mark.parametrize("dtype, tolerance", [(np.float64, 1e-12), (np.float32, 1e-5)])
@pytest.mark.parametrize("K, C", [(1, 1), (7, 50), (64, 33), (128, 512)])
def test_matches_numpy_for_every_row_remainder(dtype, tolerance, K, C):
    rng = np.random.default_rng(K * 1000 + C)
    W = rng.standard_normal((K, C)).astype(dtype)
    for rows in range(1, 2 * ROWS_PER_TILE + 2):  # whole tiles plus every remainder
        x = rng.standard_normal((rows, K)).astype(dtype)
        out = product(x, W)
        scale = np.abs(x) @ np.abs(W)
        assert np.all(np.abs(out[:, :C] - x @ W) <= tolerance * scale), rows
        assert np.all(out[:, C:] == 0.0)  # the padding past C


def test_padding_rounds_up_to_whole_panels():
    width = panel_width(np.float32)
    assert padded_columns(1, np.float32) == width
    assert padded_columns(width, np.float32) == width
    assert padded_columns(width + 1, np.float32) == 2 * width
    assert panel_width(np.float64) == width // 2  # two vectors, whatever the dtype


def test_strided_rows_of_a_time_major_array():
    # the time loops pass views like hs[t, lo:hi] and write gh[lo:hi]
    rng = np.random.default_rng(3)
    hs = rng.standard_normal((4, 13, 24))
    W = rng.standard_normal((24, 40))
    out = np.zeros((13, padded_columns(40, W.dtype)))
    panel_matmul(hs[2, 3:11], packed_panels(W), out[3:11])
    np.testing.assert_allclose(out[3:11, :40], hs[2, 3:11] @ W, rtol=1e-12, atol=1e-12)
    assert np.all(out[:3] == 0.0) and np.all(out[11:] == 0.0)


def test_each_element_independent_of_its_tile_and_panel():
    # Threads splitting rows or units must agree bit for bit: a row's result may not
    # depend on which rows share its tile, nor a column's on which panel holds it.
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2 * ROWS_PER_TILE + 3, 96)).astype(np.float32)
    W = rng.standard_normal((96, 3 * panel_width(np.float32))).astype(np.float32)
    whole = product(x, W)
    for lo, hi in [(0, 1), (1, 4), (5, x.shape[0])]:
        np.testing.assert_array_equal(product(x[lo:hi], W), whole[lo:hi])
    width = panel_width(np.float32)
    right = product(x, W[:, width + 5:])
    np.testing.assert_array_equal(right[:, :W.shape[1] - width - 5], whole[:, width + 5:W.shape[1]])


AVX2_CHECK = """
import numpy as np
from charrnn.kernels.panels import ROWS_PER_TILE, VECTOR_BYTES, padded_columns, panel_matmul
from charrnn.model import packed_panels
rng = np.random.default_rng(0)
for dtype, tolerance in ((np.float64, 1e-12), (np.float32, 1e-5)):
    for rows in range(1, 2 * ROWS_PER_TILE + 2):
        x = rng.standard_normal((rows, 70)).astype(dtype)
        W = rng.standard_normal((70, 45)).astype(dtype)
        out = np.zeros((rows, padded_columns(45, dtype)), dtype)
        panel_matmul(x, packed_panels(W), out)
        assert np.all(np.abs(out[:, :45] - x @ W) <= tolerance * (np.abs(x) @ np.abs(W)))
print(VECTOR_BYTES, ROWS_PER_TILE, "ok")
"""


@pytest.mark.slow  # a subprocess or a compile: `make test-fast` leaves it out
def test_products_on_a_cpu_without_avx512(tmp_path):
    # Most laptops have AVX2 but not AVX-512: there the tiles use 32-byte vectors and
    # 6 rows. Compile for such a CPU (Haswell) in a child process and check them.
    import os
    import subprocess
    import sys

    import llvmlite.binding as llvm
    features = [f for f in llvm.get_host_cpu_features().flatten().split(",")
                if not any(word in f for word in ("avx512", "amx", "avx10"))]
    if "+avx2" not in features or "+fma" not in features:
        pytest.skip("this CPU cannot run AVX2 code")
    env = {**os.environ, "NUMBA_CPU_NAME": "haswell", "NUMBA_CPU_FEATURES": ",".join(features),
           "NUMBA_CACHE_DIR": str(tmp_path)}
    result = subprocess.run([sys.executable, "-c", AVX2_CHECK], env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["32", "6", "ok"]


def test_mismatched_shapes_are_refused_not_written_past():
    W = np.ones((8, 40), np.float32)
    panels = packed_panels(W)
    x = np.ones((3, 8), np.float32)
    for bad_x, bad_out in [(np.ones((3, 9), np.float32), np.zeros((3, 64), np.float32)),
                           (x, np.zeros((3, 40), np.float32)),  # not padded
                           (x, np.zeros((2, 64), np.float32))]:
        with pytest.raises(ValueError, match="shapes"):
            panel_matmul(bad_x, panels, bad_out)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("gates, H, j0, j1", [(4, 128, 0, 64), (4, 128, 64, 128), (3, 20, 3, 11),
                                              (1, 40, 0, 40), (4, 7, 2, 5)])
def test_packing_a_threads_units_equals_packing_their_columns(dtype, gates, H, j0, j1):
    """pack_unit_panels (each team thread packs its own columns) is pack_panels of
    model.unit_columns: the columns feeding units j0:j1, gate-major, zero-padded."""
    from charrnn.kernels.panels import pack_unit_panels
    from charrnn.model import empty_panels, unit_columns
    W = np.random.default_rng(H + j0).standard_normal((9, gates * H)).astype(dtype)
    panels = empty_panels(9, gates * (j1 - j0), dtype)
    panels.fill(np.nan)
    pack_unit_panels(W, gates, j0, j1, panels)
    assert np.array_equal(panels, packed_panels(unit_columns(W, gates, j0, j1)))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("C, K, rows", [(1, 1, None), (8, 8, None), (33, 20, None),
                                        (64, 512, (0, 64)), (128, 512, (64, 128)),
                                        (45, 13, (5, 42)), (70, 9, None)])
def test_packing_a_transpose_equals_packing_its_columns(dtype, C, K, rows):
    """pack_transposed_panels (the backward's Wh.T, a team product's transposed
    operand) writes what pack_panels writes for the transposed view: every 8 x 8
    block, the rows and columns left over, the zero padding; also from a slice of
    rows, as threads pass their own units' rows of Wh."""
    from charrnn.kernels.panels import pack_panels, pack_transposed_panels
    from charrnn.model import empty_panels, transposed_panels
    W = np.random.default_rng(C + K).standard_normal((C, K)).astype(dtype)
    if rows:
        W = W[rows[0]:rows[1]]
    want = empty_panels(W.shape[1], W.shape[0], dtype)
    pack_panels(W.T, want)
    got = np.full_like(want, np.nan)
    pack_transposed_panels(W, got)
    assert np.array_equal(got, want)
    assert np.array_equal(transposed_panels(W), want)


@pytest.mark.parametrize("shape, transposed, bfloat16", [
    ((7, 5), False, False), ((70, 45), False, True), ((128, 64), False, False),
    ((2, 3, 33), False, False), ((2, 3, 33), False, True), ((40, 9), True, False),
    ((0, 4, 9), False, False)])
def test_packed_panels_in_numpy_equal_the_packing_kernel(shape, transposed, bfloat16):
    """model.packed_panels packs in numpy (no kernel to load when sampling starts);
    the bytes must be pack_panels', padding included, for stacks, partial last panels,
    transposed views and bfloat16."""
    from charrnn.kernels.panels import bfloat16_pairs, pack_panels, to_bfloat16
    from charrnn.model import empty_panels
    W = np.random.default_rng(len(shape)).standard_normal(shape).astype(np.float32)
    W = W.T if transposed else W
    *lead, K, C = W.shape
    want = empty_panels(K, C, W.dtype, tuple(lead), bfloat16)
    want.fill(7)
    for index in np.ndindex(*lead):
        pack_panels(to_bfloat16(W[index]) if bfloat16 else W[index], want[index])
    want = bfloat16_pairs(want) if bfloat16 else want
    got = packed_panels(W, bfloat16)
    assert got.dtype == want.dtype and np.array_equal(got, want)


@pytest.mark.parametrize("K, C", [(1, 1), (7, 50), (64, 33), (128, 512)])
def test_bfloat16_panels_multiply_as_their_float32_values(K, C):
    """bfloat16 panels (paired halves, bfloat16_pairs) give x @ W with W rounded to
    bfloat16, for every row remainder and every group of panels a tile takes."""
    from charrnn.kernels.panels import to_bfloat16
    rng = np.random.default_rng(K + C)
    W = rng.standard_normal((K, C)).astype(np.float32)
    W[0, 0] = 1.0 + 2.0 ** -7  # rounds up to the next bfloat16 (ties to even)
    rounded = (to_bfloat16(W).astype(np.uint32) << 16).view(np.float32)
    panels = packed_panels(W, bfloat16=True)
    assert panels.dtype == np.uint16
    for rows in range(1, 2 * ROWS_PER_TILE + 2):
        x = rng.standard_normal((rows, K)).astype(np.float32)
        out = np.full((rows, padded_columns(C, np.float32)), np.nan, np.float32)
        panel_matmul(x, panels, out)
        exact = x.astype(np.float64) @ rounded.astype(np.float64)
        scale = np.abs(x) @ np.abs(rounded)
        assert np.all(np.abs(out[:, :C] - exact) <= 1e-5 * scale + 1e-30), rows
        assert np.all(out[:, C:] == 0.0)
