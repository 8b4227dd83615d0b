"""Matrix products of few rows (a batch of one: 50 rows), split by columns across
Numba's thread team.

At 50 rows a training step's products are too small to hand to a pool thread, so they
would run on one core while the other waits. The team starts far sooner, and the packed
panel product (panels.py) of 50 rows beats the BLAS call even with its packing
(docs/threads-and-kernels.md, "Products of few rows").
"""

import numpy as np
from numba import njit, prange

from .panels import pack_transposed_panels, pack_unit_panels, panel_matmul, panel_width_of


@njit(cache=True, error_model="numpy", nogil=True, parallel=True)
def matmul_team(a, b, out, transpose_a, transpose_b, bounds):
    """out (M, P) = op(a) @ op(b), where op(x) is x.T if transpose_x else x; a, b, out
    C-contiguous, float32 or float64, out not overlapping a or b (parallel.team_product
    checks all that). Part k computes columns bounds[k]:bounds[k + 1] on a thread of
    the team and packs only its own columns of op(b). The parts never meet, so any team
    size gives the right product; parallel.team_runs sizes it to one part per thread."""
    width = panel_width_of(b)
    K = b.shape[1] if transpose_b else b.shape[0]
    for k in prange(bounds.shape[0] - 1):
        c0, c1 = bounds[k], bounds[k + 1]
        # each thread its own transpose: cheaper than reading one made on another core
        rows = _transposed(a) if transpose_a else a
        # allocated here, by the thread that uses them: as fast as scratch passed in
        panels = np.empty(((c1 - c0 + width - 1) // width, K, width), b.dtype)
        if transpose_b:
            pack_transposed_panels(b[c0:c1], panels)
        else:
            pack_unit_panels(b, 1, c0, c1, panels)  # one gate: columns c0:c1
        products = np.empty((rows.shape[0], panels.shape[0] * width), out.dtype)
        panel_matmul(rows, panels, products)
        for r in range(rows.shape[0]):  # sliced first: the copy then vectorizes
            target, source = out[r, c0:c1], products[r, :c1 - c0]
            for c in range(c1 - c0):
                target[c] = source[c]


@njit(cache=True, nogil=True)
def _transposed(a):
    """a.T (K, M) as a new C-contiguous array, read along a's rows (faster than Numba's
    own copy of a transposed view)."""
    M, K = a.shape
    result = np.empty((K, M), a.dtype)
    for m in range(M):
        for k in range(K):
            result[k, m] = a[m, k]
    return result
