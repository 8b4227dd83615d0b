"""Gate nonlinearities, written so that LLVM vectorises the loops that use them.

Every cell spends most of its element-wise time in exp. libm's expf (and tanhf) is a
call that keeps a loop scalar, so float32, the training hot path, uses `exp32`:
exp(x) = 2**n * 2**f with n = floor(x log2 e), a degree-6 polynomial for 2**f on [0, 1)
(relative error 6e-9, below float32's 6e-8) and 2**n written straight into a float32's
exponent bits. float64, which the gradient checks use, keeps libm's exact exp.
tanh(x) = 2 sigmoid(2x) - 1 is exact in exact arithmetic. Kernels using these set
error_model="numpy": Python's error model puts a zero-division branch on every division,
which also blocks vectorising. Timings: docs/threads-and-kernels.md, "Element-wise math".
"""

import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic, overload

EXP_LIMIT = 64  # |log2 of the result| is clamped here: exp(+-44) is 0 or inf for a gate
# 2**f ~= sum(C[k] f**k) on [0, 1): Chebyshev least-squares fit of degree 6
C = (1.0000000061639818, 0.693146837586416, 0.24023109743629892, 0.05547891082273798,
     0.009686187991298586, 0.0012382409974989591, 0.0002187125463644086)
LOG2E = 1.4426950408889634


@intrinsic
def int32_bits_as_float32(typingctx, bits):
    """Reinterpret an int32's bits as a float32 (an LLVM bitcast, which vectorises)."""
    if bits != types.int32:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())
    return types.float32(types.int32), codegen


def fast_exp(x):
    return np.exp(x)


@overload(fast_exp, jit_options={"cache": True, "error_model": "numpy"})
def _fast_exp(x):
    if not (isinstance(x, types.Float) and x.bitwidth == 32):
        return lambda x: np.exp(x)
    f32 = np.float32
    log2e, high, low = f32(LOG2E), f32(EXP_LIMIT), f32(-EXP_LIMIT)
    c0, c1, c2, c3, c4, c5, c6 = [f32(c) for c in C]

    def exp32(x):
        y = x * log2e
        y = y if y < high else high  # NaN lands here too; restored below
        y = y if y > low else low
        n = np.floor(y)
        f = y - n
        p = c0 + f * (c1 + f * (c2 + f * (c3 + f * (c4 + f * (c5 + f * c6)))))
        # 2**n is the float32 whose exponent field is n + 127 (|n| <= 64 keeps it normal)
        p = p * int32_bits_as_float32(np.int32((np.int32(n) + 127) << 23))
        return p if x == x else x
    return exp32


def constant_of(value: float, numba_type):
    """value as a compile-time constant of this Numba float type (float32 or float64)."""
    return np.float32(value) if numba_type == types.float32 else float(value)


def one_of(dtype):
    return 1.0


@overload(one_of, jit_options={"cache": True}, inline="always")
def _one_of(dtype):
    """1 as a number of `dtype` (an array's .dtype): derivative terms like 1 - o * o
    written with it stay in float32 for float32 arrays instead of widening to float64."""
    if not isinstance(dtype, types.DType):
        return None
    one = constant_of(1.0, dtype.dtype)
    return lambda dtype: one


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def tanh(x):
    return np.tanh(x)


# The constants are of x's own type: a float64 literal such as 1.0 widened float32 x, and
# the division ran on float64 vectors, half as wide (docs/threads-and-kernels.md,
# "Element-wise math").
@overload(sigmoid, jit_options={"cache": True, "error_model": "numpy"}, inline="always")
def _sigmoid(x):
    if not isinstance(x, types.Float):
        return None
    one = constant_of(1.0, x)

    def sigmoid_impl(x):
        return one / (one + fast_exp(-x))
    return sigmoid_impl


@overload(tanh, jit_options={"cache": True, "error_model": "numpy"}, inline="always")
def _tanh(x):
    if not isinstance(x, types.Float):
        return None
    one, two = constant_of(1.0, x), constant_of(2.0, x)

    def tanh_impl(x):  # 2 sigmoid(2x) - 1, exact in exact arithmetic
        return two / (one + fast_exp(-(x + x))) - one
    return tanh_impl
