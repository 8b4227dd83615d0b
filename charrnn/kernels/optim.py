"""Optimizer kernels over flat parameter buffers (one buffer holds every parameter, so
one loop updates them all and one allreduce can sum their gradients)."""

import numpy as np
from numba import njit


@njit(cache=True, error_model="numpy", nogil=True)
def adam_update(params, grads, m, v, coefficients):
    """One Adam step (Kingma & Ba, bias-corrected) with grads already clipped.
    Inputs: grads (P); coefficients, in the parameters' dtype: beta1, 1 - beta1, beta2,
    1 - beta2, the step size lr * sqrt(1 - beta2**t) / (1 - beta1**t) and
    eps * sqrt(1 - beta2**t). In/out: params, m, v (P).
    The coefficients come in the buffers' dtype so no element is widened: with float64
    constants every float32 element went through float64, and Adam's step for 243k
    parameters (2 threads) took 226 us instead of 160."""
    beta1, rest1, beta2, rest2 = coefficients[0], coefficients[1], coefficients[2], coefficients[3]
    step_size, eps = coefficients[4], coefficients[5]
    for k in range(params.shape[0]):
        g = grads[k]
        m[k] = beta1 * m[k] + rest1 * g
        v[k] = beta2 * v[k] + rest2 * g * g
        params[k] -= step_size * m[k] / (np.sqrt(v[k]) + eps)


@njit(cache=True, error_model="numpy", nogil=True)
def sum_of_squares(x):
    """Sum of x[k]**2 accumulated in float64, for the global gradient norm. Four running
    sums over interleaved elements: one sum waits for each add to finish (measured
    0.9 ns per element); four independent ones keep the adder busy, in a fixed order."""
    n = x.shape[0]
    s0 = s1 = s2 = s3 = 0.0
    k = 0
    while k + 4 <= n:
        a, b = np.float64(x[k]), np.float64(x[k + 1])
        c, d = np.float64(x[k + 2]), np.float64(x[k + 3])
        s0 += a * a
        s1 += b * b
        s2 += c * c
        s3 += d * d
        k += 4
    while k < n:
        a = np.float64(x[k])
        s0 += a * a
        k += 1
    return (s0 + s1) + (s2 + s3)


@njit(cache=True, error_model="numpy", nogil=True)
def block_sums_of_squares(x, block, first, last, sums):
    """sums[b] = sum_of_squares of x's block b (`block` elements; the last may be short),
    for blocks first:last. Fixed blocks give the same sums however threads share them."""
    n = x.shape[0]
    for b in range(first, last):
        sums[b] = sum_of_squares(x[b * block:min((b + 1) * block, n)])
