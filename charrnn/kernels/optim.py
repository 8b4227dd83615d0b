"""Optimizer kernels over flat parameter buffers (one buffer holds every parameter, so
one loop updates them all and one allreduce can sum their gradients)."""

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic


@njit(cache=True, error_model="numpy", nogil=True)
def adam_update(params, grads, m, v, coefficients):
    """One Adam step (Kingma & Ba, bias-corrected) with grads already clipped.
    Inputs: grads (P); coefficients, in the parameters' dtype: beta1, 1 - beta1, beta2,
    1 - beta2, the step size lr * sqrt(1 - beta2**t) / (1 - beta1**t) and
    eps * sqrt(1 - beta2**t). In/out: params, m, v (P).
    The coefficients come in the buffers' dtype so no element is widened to float64
    (docs/threads-and-kernels.md, "The optimizer")."""
    beta1, rest1, beta2, rest2 = coefficients[0], coefficients[1], coefficients[2], coefficients[3]
    step_size, eps = coefficients[4], coefficients[5]
    for k in range(params.shape[0]):
        g = grads[k]
        m[k] = beta1 * m[k] + rest1 * g
        v[k] = beta2 * v[k] + rest2 * g * g
        params[k] -= step_size * m[k] / (np.sqrt(v[k]) + eps)


@njit(cache=True, error_model="numpy", nogil=True, parallel=True)
def adam_update_team(params, grads, m, v, coefficients, bounds):
    """adam_update of elements bounds[k, 0]:bounds[k, 1] for every k, on Numba's
    thread team (parallel.py), which starts far sooner than a Python thread takes a
    hand-off."""
    for k in prange(bounds.shape[0]):
        lo, hi = bounds[k, 0], bounds[k, 1]
        adam_update(params[lo:hi], grads[lo:hi], m[lo:hi], v[lo:hi], coefficients)


LANES = 16  # running sums of sum_of_squares, each over every 16th element


@intrinsic
def _lane_sums_of_squares(typingctx, x, start, stop, lanes):
    """lanes[j] = the float64 sum of x[k]**2 for k = start + j, start + j + LANES, ...
    below stop (stop - start a multiple of LANES), each one fused multiply-add per k.

    LLVM IR (as in panels.py): Numba keeps a reduction scalar, one add waiting for the
    last; a vector of 16 float64 sums is a fixed order of additions however wide the
    CPU's vectors are (LLVM splits it for AVX2), so the sum is the same on every
    machine."""
    if not (isinstance(x, types.Array) and x.dtype in (types.float32, types.float64)
            and x.layout == "C" and isinstance(lanes, types.Array)
            and lanes.dtype == types.float64):
        return None

    def codegen(context, builder, signature, args):
        x_array = context.make_array(signature.args[0])(context, builder, args[0])
        lanes_array = context.make_array(signature.args[3])(context, builder, args[3])
        start, stop = args[1], args[2]
        element = context.get_data_type(signature.args[0].dtype)
        i64, double = ir.IntType(64), ir.DoubleType()
        sums_type = ir.VectorType(double, LANES)
        fma = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(sums_type, [sums_type] * 3), f"llvm.fma.v{LANES}f64")
        zero = ir.Constant(sums_type, [ir.Constant(double, 0.0)] * LANES)
        entry = builder.block
        loop = builder.append_basic_block("squares.loop")
        done = builder.append_basic_block("squares.done")
        builder.cbranch(builder.icmp_signed("<", start, stop), loop, done)
        builder.position_at_end(loop)
        k = builder.phi(i64)
        k.add_incoming(start, entry)
        sums = builder.phi(sums_type)
        sums.add_incoming(zero, entry)
        pointer = builder.bitcast(builder.gep(x_array.data, [k]),
                                  ir.VectorType(element, LANES).as_pointer())
        values = builder.load(pointer, align=context.get_abi_sizeof(element))
        if element != double:
            values = builder.fpext(values, sums_type)
        updated = builder.call(fma, [values, values, sums])
        next_k = builder.add(k, ir.Constant(i64, LANES))
        sums.add_incoming(updated, builder.block)
        k.add_incoming(next_k, builder.block)
        builder.cbranch(builder.icmp_signed("<", next_k, stop), loop, done)
        builder.position_at_end(done)
        result = builder.phi(sums_type)
        result.add_incoming(zero, entry)
        result.add_incoming(updated, loop)
        builder.store(result, builder.bitcast(lanes_array.data, sums_type.as_pointer()),
                      align=8)
        return context.get_dummy_value()
    return types.void(x, types.int64, types.int64, lanes), codegen


@njit(cache=True, error_model="numpy", nogil=True)
def sum_of_squares(x):
    """Sum of x[k]**2 accumulated in float64, for the global gradient norm: LANES
    running sums (see _lane_sums_of_squares), then the last few elements, in a fixed
    order. x: a C-contiguous float32 or float64 vector (a strided view does not type)."""
    n = x.shape[0]
    whole = n - n % LANES
    lanes = np.empty(LANES)
    _lane_sums_of_squares(x, 0, whole, lanes)
    total = 0.0
    for k in range(whole, n):
        value = np.float64(x[k])
        total += value * value
    for j in range(LANES):
        total += lanes[j]
    return total


@njit(cache=True, error_model="numpy", nogil=True)
def block_sums_of_squares(x, block, first, last, sums):
    """sums[b] = sum_of_squares of x's block b (`block` elements; the last may be short),
    for blocks first:last. Fixed blocks give the same sums however threads share them."""
    n = x.shape[0]
    for b in range(first, last):
        sums[b] = sum_of_squares(x[b * block:min((b + 1) * block, n)])


@njit(cache=True, error_model="numpy", nogil=True, parallel=True)
def block_sums_of_squares_team(x, block, bounds, sums):
    """block_sums_of_squares of blocks bounds[k, 0]:bounds[k, 1] for every k, on Numba's
    thread team."""
    for k in prange(bounds.shape[0]):
        block_sums_of_squares(x, block, bounds[k, 0], bounds[k, 1], sums)


@njit(cache=True, error_model="numpy", nogil=True)
def pull_towards(params, anchor, rate):
    """params += rate * (anchor - params), element by element: a decay of params
    towards anchor (P each; rate in params' dtype), in one pass where numpy takes three."""
    for k in range(params.shape[0]):
        params[k] += rate * (anchor[k] - params[k])
