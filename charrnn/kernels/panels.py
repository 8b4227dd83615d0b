"""The recurrent product h_prev @ Wh of a time step, from weights packed once per step.

A BLAS call per time step repacks the whole of Wh into its own panel format every call
(50 calls per layer per batch), and its tiles fit large matrices, not the 16-50 rows a
thread multiplies here. Packing Wh once per training step instead, into column panels
two vector registers wide, leaves a small loop per tile of rows x panel: per k, load
the panel's two vectors of W, broadcast each row's x[r, k], and accumulate 2 * rows
fused multiply-adds held in registers; store once at the end. The speeds of both:
docs/threads-and-kernels.md, "The recurrent product: panels".

Numba cannot hold vector registers across a loop, so the tile loop is LLVM IR built
with llvmlite (an intrinsic, like the atomics in sync.py): plain vector loads, splats
and llvm.fma, which LLVM lowers for whatever CPU it targets (two ymm halves per vector
without AVX-512, where the row block is also halved to fit 16 registers).

Each output element is one sequential sum over k, whatever its tile, panel or thread,
so threads that split rows or units compute bit-identical results.

Panels may also hold bfloat16 weights (uint16 bit patterns) for float32 rows: generation
reads every weight once per character, so for models too big for the caches it is
bound by memory, and half the bytes per weight is up to twice the speed.
"""

import llvmlite.binding as llvm
import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic


def _target_features() -> str:
    """The CPU features Numba compiles for: the host's, unless NUMBA_CPU_NAME or
    NUMBA_CPU_FEATURES chose others (e.g. for a cache shared by several machines)."""
    try:
        from numba.core.registry import cpu_target
        return cpu_target.target_context.codegen()._tm_features
    except Exception:  # a Numba without this internal: the host's features
        return llvm.get_host_cpu_features().flatten()


# 64-byte vectors (AVX-512: 32 registers) or 32-byte ones (AVX2: 16 registers).
VECTOR_BYTES = 64 if "+avx512f" in _target_features().split(",") else 32
# A tile of r rows and g panels holds 2 * g sums per row, the 2 * g weight vectors of a
# k and one splat. On AVX2 all 16 registers can hold them; with AVX-512, tiles of more
# than 25 measured much slower (docs/threads-and-kernels.md, "The recurrent product:
# panels").
TILE_REGISTERS = 25 if VECTOR_BYTES == 64 else 16
ROWS_PER_TILE = 8 if VECTOR_BYTES == 64 else 6
# Rows left over, up to this many, join the last whole tile instead of another pass
# over the panels, as long as the larger tile still fits TILE_REGISTERS.
JOIN_ROWS = min(ROWS_PER_TILE // 2, (TILE_REGISTERS - 3) // 2 - ROWS_PER_TILE)
TILE_AND_1, TILE_AND_2 = ROWS_PER_TILE + 1, ROWS_PER_TILE + 2
TILE_AND_3, TILE_AND_4 = ROWS_PER_TILE + 3, ROWS_PER_TILE + 4


def panel_width(dtype) -> int:
    """Columns per panel: two vectors of this dtype."""
    return 2 * VECTOR_BYTES // np.dtype(dtype).itemsize


def padded_columns(columns: int, dtype) -> int:
    """Width of an output that panel_matmul writes for `columns` columns of W."""
    width = panel_width(dtype)
    return -(-columns // width) * width


def to_bfloat16(W: np.ndarray) -> np.ndarray:
    """float32 W rounded to bfloat16 (to nearest, ties to even), as uint16 bit patterns:
    the top half of each float32. Packed with pack_panels at float32's panel width, then
    paired (bfloat16_pairs), panel_matmul reads them as float32 weights with 8
    significant bits, half the bytes."""
    bits = np.ascontiguousarray(W, np.float32).view(np.uint32)
    rounded = ((bits + np.uint32(0x7FFF) + ((bits >> 16) & np.uint32(1))) >> 16).astype(np.uint16)
    return np.where(np.isnan(W), np.uint16(0x7FC0), rounded)


def bfloat16_pairs(panels: np.ndarray) -> np.ndarray:
    """bfloat16 panels (..., PW) from pack_panels' column order to the one the tile
    reads: each 32-bit word holds column q in its low half and column q + PW / 2 in its
    high half, so one load and two integer operations give both weight vectors (two
    widening loads and four operations otherwise: docs/threads-and-kernels.md)."""
    half = panels.shape[-1] // 2
    return np.ascontiguousarray(
        panels.reshape(*panels.shape[:-1], 2, half).swapaxes(-1, -2)).reshape(panels.shape)


@intrinsic
def _tile(typingctx, x, r0, panels, p, out, rows, group):
    """out[r0:r0+rows, columns of panels p:p+group] = x[r0:r0+rows] @ those panels of W;
    rows and group literals. Each row keeps 2 * group sums in registers: a few rows use
    several panels at once, so enough independent sums are in flight to hide the
    multiply-add's latency (each is still one sequential sum over k)."""
    literal = (isinstance(rows, types.IntegerLiteral) and isinstance(group, types.IntegerLiteral))
    if not literal or any(array.layout != "C" for array in (x, panels, out)):
        return None  # rows and group must be compile-time constants; elements contiguous
    bfloat16 = panels.dtype == types.uint16  # bfloat16 bit patterns (to_bfloat16)
    if not (panels.dtype == x.dtype == out.dtype or (bfloat16 and x.dtype == types.float32)):
        return None
    row_count, group_size = rows.literal_value, group.literal_value

    def codegen(context, builder, signature, args):
        x_array = context.make_array(signature.args[0])(context, builder, args[0])
        w_array = context.make_array(signature.args[2])(context, builder, args[2])
        out_array = context.make_array(signature.args[4])(context, builder, args[4])
        first_row, panel = args[1], args[3]
        element = context.get_data_type(signature.args[0].dtype)
        itemsize = context.get_abi_sizeof(element)
        lanes = VECTOR_BYTES // itemsize
        vector = ir.VectorType(element, lanes)
        i32, i64 = ir.IntType(32), ir.IntType(64)
        byte = ir.IntType(8).as_pointer()

        def constant(value):
            return ir.Constant(i64, value)

        def row_pointer(array, row, row_stride, byte_offset):
            offset = builder.add(builder.mul(builder.add(first_row, constant(row)), row_stride),
                                 byte_offset)
            return builder.bitcast(builder.gep(builder.bitcast(array.data, byte), [offset]),
                                   element.as_pointer())

        def vector_at(pointer, lane_offset, kind=vector):
            return builder.bitcast(builder.gep(pointer, [constant(lane_offset)]),
                                   kind.as_pointer())

        def load_weights(pointer):
            """The panel's two weight vectors at pointer (its row k)."""
            if not bfloat16:
                return [builder.load(vector_at(pointer, 0), align=itemsize),
                        builder.load(vector_at(pointer, lanes), align=itemsize)]
            # a bfloat16 is the top half of a float32, and each 32-bit word holds one
            # of each vector (bfloat16_pairs): shift the low one up, mask the high one
            words_type = ir.VectorType(i32, lanes)
            words = builder.load(vector_at(pointer, 0, words_type), align=4)
            low = builder.shl(words, ir.Constant(words_type, [16] * lanes))
            high = builder.and_(words, ir.Constant(words_type, [-65536] * lanes))
            return [builder.bitcast(low, vector), builder.bitcast(high, vector)]

        width = 2 * lanes  # columns per panel
        vectors = 2 * group_size  # weight vectors per k, and sums per row
        K = builder.extract_value(w_array.shape, 1)
        panel_size = builder.mul(K, constant(width))
        x_stride = builder.extract_value(x_array.strides, 0)
        out_stride = builder.extract_value(out_array.strides, 0)
        x_rows = [row_pointer(x_array, r, x_stride, constant(0)) for r in range(row_count)]
        w_panels = [builder.gep(w_array.data, [builder.mul(builder.add(panel, constant(g)),
                                                           panel_size)])
                    for g in range(group_size)]
        fma = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(vector, [vector] * 3),
            f"llvm.fma.v{lanes}f{itemsize * 8}")
        zero = ir.Constant(vector, [ir.Constant(element, 0.0)] * lanes)
        undefined = ir.Constant(vector, ir.Undefined)
        splat_mask = ir.Constant(ir.VectorType(i32, lanes), [0] * lanes)

        entry = builder.block
        loop = builder.append_basic_block("tile.loop")
        done = builder.append_basic_block("tile.done")
        builder.branch(loop)
        builder.position_at_end(loop)
        k = builder.phi(i64)
        k.add_incoming(constant(0), entry)
        sums = []
        for _ in range(row_count * vectors):
            total = builder.phi(vector)
            total.add_incoming(zero, entry)
            sums.append(total)
        k_offset = builder.mul(k, constant(width))
        weights = []
        for w_panel in w_panels:
            weights += load_weights(builder.gep(w_panel, [k_offset]))
        updated = []
        for r in range(row_count):
            scalar = builder.load(builder.gep(x_rows[r], [k]), align=itemsize)
            splat = builder.shuffle_vector(
                builder.insert_element(undefined, scalar, ir.Constant(i32, 0)), undefined,
                splat_mask)
            updated += [builder.call(fma, [splat, weight, sums[r * vectors + v]])
                        for v, weight in enumerate(weights)]
        next_k = builder.add(k, constant(1))
        for total, value in zip(sums, updated):
            total.add_incoming(value, builder.block)
        k.add_incoming(next_k, builder.block)
        builder.cbranch(builder.icmp_signed("<", next_k, K), loop, done)

        builder.position_at_end(done)
        column_bytes = builder.mul(panel, constant(width * itemsize))
        for r in range(row_count):
            target = row_pointer(out_array, r, out_stride, column_bytes)
            for v in range(vectors):
                builder.store(updated[r * vectors + v], vector_at(target, v * lanes),
                              align=itemsize)
        return context.get_dummy_value()
    return types.void(x, types.int64, panels, types.int64, out, rows, group), codegen


@njit(cache=True, inline="always")
def panel_width_of(array):
    """panel_width of array's dtype, in compiled code."""
    return 2 * VECTOR_BYTES // array.itemsize


@njit(cache=True, inline="always")
def panel_columns(panels):
    """Width of the output panel_matmul writes from panels (..., P, K, PW), a matrix or a
    stack of them: its columns padded to whole panels, P * PW (padded_columns, read
    from the packed array)."""
    return panels.shape[-3] * panels.shape[-1]


@njit(cache=True, nogil=True)
def pack_panels(W, panels):
    """panels (P, K, PW) <- W (K, C) in column panels of PW, zero past column C."""
    K, C = W.shape
    P, _, PW = panels.shape
    for p in range(P):
        first = p * PW
        width = min(PW, C - first)
        for k in range(K):
            source, target = W[k, first:first + width], panels[p, k]
            for q in range(width):
                target[q] = source[q]
            for q in range(width, PW):
                target[q] = 0.0


@njit(cache=True, nogil=True)
def pack_transposed_panels(W, panels):
    """panels (P, K, PW) <- W.T for W (C, K) with contiguous rows: pack_panels of the
    transpose, without reading down its columns. It moves blocks of 8 x 8, each read
    along 8 rows of W and written along 8 rows of a panel, so both sides stay in a few
    cache lines (element by element down W's columns, packing a backward's Wh.T took
    several times longer)."""
    C, K = W.shape
    P, _, PW = panels.shape
    for p in range(P):
        first = p * PW
        width = min(PW, C - first)
        target = panels[p]
        whole = width // 8 * 8
        k_whole = K // 8 * 8
        for q0 in range(0, whole, 8):
            for k0 in range(0, k_whole, 8):
                for q in range(8):
                    source = W[first + q0 + q, k0:k0 + 8]
                    for k in range(8):
                        target[k0 + k, q0 + q] = source[k]
            for q in range(q0, q0 + 8):
                for k in range(k_whole, K):
                    target[k, q] = W[first + q, k]
        for q in range(whole, width):
            source = W[first + q]
            for k in range(K):
                target[k, q] = source[k]
        for k in range(K):
            for q in range(width, PW):
                target[k, q] = 0.0


@njit(cache=True, nogil=True)
def pack_unit_panels(W, gates, j0, j1, panels):
    """panels (P, K, PW) <- the columns of W (K, gates * H) that feed units j0:j1,
    gate-major (as model.unit_columns selects them), in column panels of PW, zero past
    them: pack_panels of those columns without copying them out first."""
    K, H = W.shape[0], W.shape[1] // gates
    P, _, PW = panels.shape
    U = j1 - j0
    for k in range(K):
        p, q = 0, 0  # panel and column within it of the next logical column
        for g in range(gates):
            u = 0
            while u < U:
                run = min(PW - q, U - u)  # columns that fit this panel
                # both sliced to the run: the copy then vectorizes
                source = W[k, g * H + j0 + u:g * H + j0 + u + run]
                target = panels[p, k, q:q + run]
                for r in range(run):
                    target[r] = source[r]
                u += run
                q += run
                if q == PW:
                    p, q = p + 1, 0
        while p < P:
            panels[p, k, q] = 0.0
            q += 1
            if q == PW:
                p, q = p + 1, 0


@njit(cache=True, nogil=True)
def panel_matmul(x, panels, out):
    """out[:, :P*PW] = x (R, K) @ W, where panels (P, K, PW) = pack_panels(W); K >= 1.
    Rows of x and out may be strided (views of time-major arrays); columns contiguous."""
    R, P = x.shape[0], panels.shape[0]
    if (x.shape[1] != panels.shape[1] or out.shape[0] < R
            or out.shape[1] < panel_columns(panels)):
        raise ValueError("panel_matmul: shapes do not match")  # the tiles do not check
    left = R % ROWS_PER_TILE
    whole = R - left
    if whole and 0 < left <= JOIN_ROWS:  # the last tile takes the rows left
        last = whole - ROWS_PER_TILE
        for p in range(P):  # panel by panel: each stays in L1 while its rows pass
            for r in range(0, last, ROWS_PER_TILE):
                _tile(x, r, panels, p, out, ROWS_PER_TILE, 1)
            if left == 1:
                _tile(x, last, panels, p, out, TILE_AND_1, 1)
            elif left == 2:
                _tile(x, last, panels, p, out, TILE_AND_2, 1)
            elif left == 3:
                _tile(x, last, panels, p, out, TILE_AND_3, 1)
            else:
                _tile(x, last, panels, p, out, TILE_AND_4, 1)
        return
    for p in range(P):
        for r in range(0, whole, ROWS_PER_TILE):
            _tile(x, r, panels, p, out, ROWS_PER_TILE, 1)
    if left == 1:
        _rows_left(x, whole, panels, out, 1)
    elif left == 2:
        _rows_left(x, whole, panels, out, 2)
    elif left == 3:
        _rows_left(x, whole, panels, out, 3)
    elif left == 4:
        _rows_left(x, whole, panels, out, 4)
    elif left == 5:
        _rows_left(x, whole, panels, out, 5)
    elif left == 6:
        _rows_left(x, whole, panels, out, 6)
    elif left == 7:
        _rows_left(x, whole, panels, out, 7)


@njit(cache=True, nogil=True, inline="always")
def _tile_fits(rows, group):
    """Whether a tile of rows x group panels keeps its vectors in TILE_REGISTERS."""
    return 2 * group * rows + 2 * group + 1 <= TILE_REGISTERS


@njit(cache=True, nogil=True, inline="always")
def _rows_left(x, r, panels, out, rows):
    """The last rows (fewer than a tile), four panels at a time for one row, and three
    or two for a few rows where they fit the registers, so that enough sums are in flight
    (docs/threads-and-kernels.md, "The recurrent product: panels"). Beyond that one row
    is bound by reading W from L2."""
    P = panels.shape[0]
    p = 0
    if rows == 1 and _tile_fits(rows, 4):
        while p + 4 <= P:
            _tile(x, r, panels, p, out, rows, 4)
            p += 4
    if P - p == 3 and _tile_fits(rows, 3):  # e.g. a 65-wide output layer: one pass
        _tile(x, r, panels, p, out, rows, 3)
        return
    if _tile_fits(rows, 2):
        while p + 2 <= P:
            _tile(x, r, panels, p, out, rows, 2)
            p += 2
    while p < P:
        _tile(x, r, panels, p, out, rows, 1)
        p += 1
