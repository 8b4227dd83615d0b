"""Optimizer kernels over flat parameter buffers (one buffer holds every parameter, so
one loop updates them all and one allreduce can sum their gradients)."""

import numpy as np
from numba import njit


@njit(cache=True, error_model="numpy", nogil=True)
def adam_update(params, grads, m, v, lr, beta1, beta2, eps, step):
    """One Adam step (Kingma & Ba, bias-corrected) with grads already clipped.
    Inputs: grads (P); lr, beta1, beta2, eps; step, the 1-based count of this update.
    In/out: params, m, v (P)."""
    correction1 = 1.0 - beta1 ** step
    correction2 = 1.0 - beta2 ** step
    step_size = lr * np.sqrt(correction2) / correction1
    for k in range(params.shape[0]):
        g = grads[k]
        m[k] = beta1 * m[k] + (1.0 - beta1) * g
        v[k] = beta2 * v[k] + (1.0 - beta2) * g * g
        params[k] -= step_size * m[k] / (np.sqrt(v[k]) + eps * np.sqrt(correction2))


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
