"""Optimizer, gradient clipping and learning-rate schedule, over flat buffers."""

from __future__ import annotations

import math

import numpy as np

from . import parallel
from .kernels.optim import (
    adam_update,
    adam_update_team,
    block_sums_of_squares,
    block_sums_of_squares_team,
)

SCHEDULES = ("auto", "constant", "cosine", "step")
NORM_BLOCK = 1 << 16  # elements per partial sum of the gradient norm
NORM_BLOCKS_PER_THREAD = 8  # fewer: handing blocks to a thread costs more than it saves
# Adam splits its update among threads from twice this many parameters: below, a
# hand-off costs more than it saves (docs/threads-and-kernels.md, "The optimizer").
ADAM_MIN_PER_THREAD = 1 << 18
ADAM_MIN_PER_TEAM_THREAD = 1 << 14  # ... on Numba's team, which starts sooner (parallel.py)


def learning_rate(step: int, base_lr: float, schedule: str, total_steps: int | None,
                  warmup: int = 0, min_fraction: float = 0.1,
                  time_fraction: float | None = None) -> float:
    """Learning rate for update number `step` (0-based).

    1. warm-up: linear from base_lr / warmup up to base_lr over `warmup` steps;
    2. then by schedule: constant; cosine from base_lr down to min_fraction * base_lr at
       the end; step, halving at 50%, 75% and 90% of the way.
    The way is measured in steps when total_steps is known, else by time_fraction (the
    share of a time limit used so far); with neither, cosine and step stay at base_lr.
    When both are known, whichever is further along counts, as the run stops at the first.
    """
    if warmup and step < warmup:
        return base_lr * (step + 1) / warmup
    if schedule == "constant":
        return base_lr
    fractions = [] if time_fraction is None else [time_fraction]
    if total_steps and total_steps > warmup:
        fractions.append((step - warmup) / (total_steps - warmup))
    if not fractions:
        return base_lr
    progress = min(1.0, max(fractions))
    if schedule == "cosine":
        cosine = 0.5 * (1 + math.cos(math.pi * progress))
        return base_lr * (min_fraction + (1 - min_fraction) * cosine)
    return base_lr * 0.5 ** sum(progress >= mark for mark in (0.5, 0.75, 0.9))


def global_norm(grads: np.ndarray) -> float:
    """The float64 norm of grads, from partial sums over fixed blocks shared among the
    threads: the result does not depend on the thread count (replicas with different
    core counts must clip alike)."""
    blocks = max(1, -(-grads.size // NORM_BLOCK))
    sums = np.empty(blocks, np.float64)
    ranges, on_team = parallel.compiled_ranges(blocks, NORM_BLOCKS_PER_THREAD, 1)
    if on_team:
        block_sums_of_squares_team(grads, NORM_BLOCK, np.array(ranges), sums)
    else:
        parallel.run_parts(block_sums_of_squares, [(grads, NORM_BLOCK, first, last, sums)
                                                   for first, last in ranges])
    return math.sqrt(sum(sums.tolist()))  # block order, whatever the thread count


def clip_by_global_norm(grads: np.ndarray, max_norm: float) -> float:
    """Scale grads in place so their global norm is at most max_norm (0 = no clipping).
    Returns the norm before clipping (inf or nan when the gradient is not finite)."""
    norm = global_norm(grads)
    if max_norm and math.isfinite(norm) and norm > max_norm:
        grads *= grads.dtype.type(max_norm / norm)
    return norm


class Adam:
    """Adam with its moments in flat buffers shaped like the parameters."""

    def __init__(self, size: int, dtype=np.float32, beta1=0.9, beta2=0.999, eps=1e-8):
        self.m = np.zeros(size, dtype)
        self.v = np.zeros(size, dtype)
        self.beta1, self.beta2, self.eps = beta1, beta2, eps
        self.updates = 0  # how many steps have been applied (bias correction needs it)

    def step(self, params: np.ndarray, grads: np.ndarray, lr: float) -> None:
        self.updates += 1
        correction1 = 1.0 - self.beta1 ** self.updates
        correction2 = 1.0 - self.beta2 ** self.updates
        coefficients = np.array([self.beta1, 1.0 - self.beta1, self.beta2, 1.0 - self.beta2,
                                 lr * math.sqrt(correction2) / correction1,
                                 self.eps * math.sqrt(correction2)], params.dtype)
        ranges, on_team = parallel.compiled_ranges(params.size, ADAM_MIN_PER_THREAD,
                                                   ADAM_MIN_PER_TEAM_THREAD)
        if on_team:
            adam_update_team(params, grads, self.m, self.v, coefficients, np.array(ranges))
        else:
            parallel.run_parts(adam_update, [
                (params[lo:hi], grads[lo:hi], self.m[lo:hi], self.v[lo:hi], coefficients)
                for lo, hi in ranges])
