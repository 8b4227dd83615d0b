"""The training loop, as a function of its inputs: it reports through a callback and
prints nothing.

Truncated BPTT: each step runs the model over the next (N, T) batch from the state the
previous batch ended in, backpropagates T steps, clips the global gradient norm, and
takes an Adam step. The state is reset only when the batch stream wraps to the start of
the text. Everything that decides the trajectory (weights, Adam moments, step, data
cursor, carried state, RNG state, learning-rate scale) is in the checkpoint, so a
resumed run continues bit for bit. Validation uses its own state and never touches
the RNG, so evaluating does not change training.

Data parallel (distributed.py): with K ranks, rank r owns the streams
rank_rows(N, r, K) and carries their state; each step every rank computes the gradient
of its rows, and one allreduce of the flat gradient buffer gives every rank the gradient
of the whole batch. Clipping, the Adam step and the RNG draws (dropout masks are drawn
for all N rows, each rank using its own) are then the same on every rank, so the
weights stay identical, and K = 1 is exactly the single-process trainer.
"""

from __future__ import annotations

import math
import os
import time
import zlib
from dataclasses import asdict, dataclass, field

import numpy as np

from .batches import BatchStream
from .checkpoint import save_trained
from .distributed import LocalComm, rank_rows
from .model import Model
from .optim import Adam, clip_by_global_norm, learning_rate

LN2 = math.log(2.0)
MAX_ROLLBACKS = 3


class TrainingDiverged(RuntimeError):
    """The loss stayed non-finite after MAX_ROLLBACKS rollbacks in a row."""


class ReplicasDiffer(RuntimeError):
    """Ranks that should hold the same weights do not (raised on every rank at once)."""


@dataclass
class TrainOptions:
    seq_len: int = 64  # T: characters per stream per step (BPTT length)
    batch_size: int = 32  # N: parallel streams per step
    lr: float = 3e-3  # Adam base learning rate
    lr_schedule: str = "auto"  # auto | constant | cosine | step (see current_lr)
    warmup: int = 50  # linear warm-up steps
    clip: float = 5.0  # global gradient-norm clip; 0 = off
    steps: int | None = None  # stop when the checkpoint has this many steps in total
    time_limit: float | None = None  # stop after this many seconds of this run
    eval_every: int = 200  # steps between validation passes; 0 = only at the end
    save_every: int = 500  # steps between checkpoint writes; 0 = only at the end
    val_fraction: float = 0.1  # last fraction of the corpus held out
    val_chars: int = 0  # evaluate on at most this many validation chars; 0 = all
    patience: int = 0  # stop after this many evaluations without improvement; 0 = off
    seed: int = 0


@dataclass
class TrainState:
    """Counters and records that travel in the checkpoint's JSON header."""
    step: int = 0
    chars_seen: int = 0
    train_seconds: float = 0.0
    cursor: int = 0
    rng_state: dict | None = None
    lr_scale: float = 1.0  # halved by every divergence rollback
    best_val_bpc: float | None = None
    best_step: int | None = None
    last_val_bpc: float | None = None
    evals_since_best: int = 0
    history: list = field(default_factory=list)  # one dict per evaluation


def best_path(path: str) -> str:
    """model.ckpt -> model.best.ckpt; model -> model.best."""
    root, ext = os.path.splitext(path)
    return f"{root}.best{ext}"


def evaluate(model: Model, ids: np.ndarray, batch_size: int, seq_len: int,
             comm=None) -> float | None:
    """Mean loss over ids in bits/char, the state carried through each of up to
    batch_size streams; None if there is too little text. With a communicator, each
    rank runs its share of the streams and the sums are reduced: every rank gets the
    same value."""
    comm = comm or LocalComm()
    if len(ids) < 2:
        return None
    seq_len = min(seq_len, len(ids) - 1)
    streams = max(1, min(batch_size, (len(ids) - 1) // seq_len))
    stream = BatchStream(ids, streams, seq_len, rows=rank_rows(streams, comm.rank, comm.size))
    sums = np.zeros(2)  # (2,) loss total in nats, positions scored
    if stream.hi > stream.lo:  # more ranks than streams leaves some with none
        h, c = model.zero_state(stream.hi - stream.lo)
        for x, y in stream.epoch_batches():
            _, losses, h, c = model.forward(x, y, h, c, need_grad=False)
            sums[0] += losses.sum()
            sums[1] += losses.size
    total, count = comm.allreduce_sum(sums)
    return float(total / count / LN2)


class Trainer:
    """Trains model in place. comm (distributed.py) shares the work among ranks; every
    rank builds its Trainer from the same arguments."""

    def __init__(self, model: Model, vocab, train_ids, val_ids, options: TrainOptions,
                 out_path: str, state: TrainState | None = None, arrays: dict | None = None,
                 comm=None):
        self.model, self.vocab, self.options, self.out_path = model, vocab, options, out_path
        self.comm = comm or LocalComm()
        if options.batch_size < self.comm.size:
            raise ValueError(f"batch of {options.batch_size} streams for {self.comm.size} "
                             "ranks: each rank needs at least one")
        self.lo, self.hi = rank_rows(options.batch_size, self.comm.rank, self.comm.size)
        self.stream = BatchStream(train_ids, options.batch_size, options.seq_len,
                                  rows=(self.lo, self.hi))
        self.val_ids = val_ids[: options.val_chars] if options.val_chars else val_ids
        self.state = state or TrainState()
        self.rng = np.random.default_rng(options.seed)
        if self.state.rng_state is not None:
            self.rng.bit_generator.state = self.state.rng_state
        self.adam = Adam(model.flat.size, model.dtype)
        self.h, self.c = model.zero_state(self.hi - self.lo)  # (L, n, H) this rank's rows
        if arrays:
            self.adam.m[:], self.adam.v[:] = arrays["adam_m"], arrays["adam_v"]
            # The checkpoint holds all N streams' state, whatever K wrote it.
            self.h[...] = arrays["state_h"][:, self.lo:self.hi]
            self.c[...] = arrays["state_c"][:, self.lo:self.hi]
        self.adam.updates = self.state.step
        self.stream.cursor = self.state.cursor
        self.stop_signal = 0  # the signal that ended run() with "interrupted", if any
        self.elapsed = 0.0  # seconds of this run by rank 0's clock, the same on every rank
        self._snapshot = None
        self._rollbacks_in_row = 0  # rollbacks since training last got past a failure
        self._failed_at = -1  # step count at the last non-finite loss

    # -- what a checkpoint holds ------------------------------------------------------
    def training_record(self) -> dict:
        self.state.cursor = self.stream.cursor
        self.state.rng_state = self.rng.bit_generator.state
        return {"options": asdict(self.options), "state": asdict(self.state)}

    def save(self, path: str | None = None) -> None:
        """Write a checkpoint (rank 0 alone; every rank must call it: the carried
        state of all N streams is gathered from the ranks that own them)."""
        h = self.comm.allgather_rows(self.h, axis=1)  # (L, N, H)
        c = self.comm.allgather_rows(self.c, axis=1)
        self.check_replicas()
        if self.comm.rank == 0:
            save_trained(path or self.out_path, self.model, self.vocab,
                         self.training_record(),
                         {"adam_m": self.adam.m, "adam_v": self.adam.v,
                          "state_h": h, "state_c": c})

    def check_replicas(self) -> None:
        """Every rank must hold the weights rank 0 saves; a cheap checksum proves it."""
        if self.comm.size == 1:
            return
        sums = self.comm.allgather(zlib.crc32(self.model.flat))
        if len(set(sums)) > 1:
            raise ReplicasDiffer(
                f"at step {self.state.step} the ranks hold different weights (the MPI "
                "library's allreduce gave ranks different sums); the last checkpoint in "
                f"{self.out_path} is rank 0's and resumes")

    def take_snapshot(self) -> None:
        self._snapshot = (self.model.flat.copy(), self.adam.m.copy(), self.adam.v.copy(),
                          self.h.copy(), self.c.copy(), self.stream.cursor,
                          self.rng.bit_generator.state, self.state.step, self.state.chars_seen,
                          self.state.lr_scale)

    def restore_snapshot(self) -> None:
        flat, m, v, h, c, cursor, rng_state, step, chars, lr_scale = self._snapshot
        self.model.flat[:], self.adam.m[:], self.adam.v[:] = flat, m, v
        self.h[...], self.c[...] = h, c
        self.stream.cursor, self.rng.bit_generator.state = cursor, rng_state
        self.state.step, self.state.chars_seen, self.state.lr_scale = step, chars, lr_scale
        self.state.history = [record for record in self.state.history if record["step"] <= step]
        self.adam.updates = step

    def roll_back(self) -> None:
        """Back to the last snapshot with half the learning rate in force now."""
        lr_scale = self.state.lr_scale
        self.restore_snapshot()
        self.state.lr_scale = lr_scale * 0.5
        self._rollbacks_in_row += 1

    # -- one step -----------------------------------------------------------------------
    def current_lr(self) -> float:
        """The learning rate for the next step. A time-limited run measures its progress
        by self.elapsed, rank 0's clock, so every rank agrees."""
        o = self.options
        schedule = o.lr_schedule
        if schedule == "auto":
            schedule = "cosine" if o.time_limit else "constant"
        time_fraction = self.elapsed / o.time_limit if o.time_limit else None
        return self.state.lr_scale * learning_rate(self.state.step, o.lr, schedule, o.steps,
                                                   o.warmup, time_fraction=time_fraction)

    def dropout_masks(self):
        p, cfg = self.model.config.dropout, self.model.config
        if not p:
            return None
        shape = (cfg.layers, self.options.seq_len, self.options.batch_size, cfg.hidden)
        # Drawn for all N rows on every rank, so the RNG and each row's mask are those
        # of a single process; this rank keeps its own rows.
        keep = self.rng.random(shape, dtype=np.float32)[:, :, self.lo:self.hi] >= p
        return keep.astype(self.model.dtype) / self.model.dtype.type(1.0 - p)

    def train_step(self) -> tuple[float, float]:
        """One update. Returns (loss in nats, gradient norm); non-finite values mean the
        update was not applied."""
        x, y, wrapped = self.stream.next_batch()
        if wrapped:  # a new pass over the text: the carried state belongs elsewhere
            self.h[...] = 0.0
            self.c[...] = 0.0
        loss, _, h, c = self.model.forward_backward(x, y, self.h, self.c, self.dropout_masks())
        loss = self.reduce_gradient(loss, x.shape[0])
        norm = clip_by_global_norm(self.model.grad_flat, self.options.clip)
        if not (math.isfinite(loss) and math.isfinite(norm)):
            return math.nan, norm
        self.adam.step(self.model.flat, self.model.grad_flat, self.current_lr())
        self.h, self.c = h, c
        self.state.step += 1
        self.state.chars_seen += x_chars(self.options)
        return loss, norm

    def reduce_gradient(self, loss: float, rows: int) -> float:
        """Turn this rank's mean loss and gradient over its rows into those of the whole
        batch, on every rank: each is weighted by its share of the N rows and summed.
        Returns the batch's mean loss (nats). A non-finite value anywhere spreads to
        every rank, so all of them roll back together."""
        if self.comm.size == 1:
            return loss
        share = rows / self.options.batch_size  # M_local / M_global (T is common)
        grad = self.model.grad_flat
        grad *= grad.dtype.type(share)
        self.comm.allreduce_sum(grad)  # (P,) one flat buffer, one call
        return float(self.comm.allreduce_sum(np.array([loss * share]))[0])

    def stop_reason(self, start: float, stop_requested) -> str | None:
        """Why to stop before the next step, or None; the same on every rank: the step
        count is, a signal to any rank stops them all, and the clock is rank 0's (kept
        in self.elapsed, which is what anything timed must read)."""
        o, s = self.options, self.state
        if o.steps is not None and s.step >= o.steps:
            return "steps"
        clock = time.perf_counter() - start if self.comm.rank == 0 else 0.0
        shared = np.array([clock, int(stop_requested())], np.float64)  # (2,) exact values
        self.elapsed, signum = self.comm.allreduce_max(shared)
        if o.time_limit is not None and self.elapsed >= o.time_limit:
            return "time"
        if signum:
            self.stop_signal = int(signum)
            return "interrupted"
        return None

    # -- the loop -------------------------------------------------------------------------
    def run(self, on_event=lambda event: None, stop_requested=lambda: 0) -> str:
        """Train until a stop condition; returns why it stopped: "steps", "time",
        "patience" or "interrupted". stop_requested() returns a signal number, or
        anything true, to stop (kept in stop_signal). Raises TrainingDiverged."""
        o, s = self.options, self.state
        start = time.perf_counter()
        seconds_before = s.train_seconds
        self.take_snapshot()
        on_event({"kind": "start", "step": s.step, "steps": o.steps,
                  "params": self.model.config.parameter_count()})
        reason, last_eval_step, train_loss_sum, train_count = "steps", None, 0.0, 0
        while True:
            stop = self.stop_reason(start, stop_requested)
            if stop:
                reason = stop
                break
            loss, norm = self.train_step()
            if not math.isfinite(loss):
                self._failed_at = max(self._failed_at, s.step)
                if self._rollbacks_in_row >= MAX_ROLLBACKS:
                    self.restore_snapshot()
                    self.save()  # the last good state, so the run is never lost
                    raise TrainingDiverged(
                        f"loss is not finite after {MAX_ROLLBACKS} rollbacks in a row; the "
                        f"last good state is saved in {self.out_path}: lower --lr or --clip")
                self.roll_back()
                on_event({"kind": "rollback", "step": s.step, "lr": self.current_lr()})
                continue
            if s.step > self._failed_at:
                self._rollbacks_in_row = 0  # got past the step that failed
            train_loss_sum += loss
            train_count += 1
            s.train_seconds = seconds_before + time.perf_counter() - start
            on_event({"kind": "step", "step": s.step, "steps": o.steps, "loss_bpc": loss / LN2,
                      "elapsed": time.perf_counter() - start, "time_limit": o.time_limit,
                      "chars": x_chars(o), "lr": self.current_lr()})
            if o.eval_every and s.step % o.eval_every == 0:
                last_eval_step = s.step
                if self.evaluate_and_record(train_loss_sum / train_count, on_event):
                    reason = "patience"
                    break
                train_loss_sum, train_count = 0.0, 0
            if o.save_every and s.step % o.save_every == 0:
                self.save()
                self.take_snapshot()
                on_event({"kind": "save", "step": s.step, "path": self.out_path})
        if last_eval_step != s.step and train_count:
            self.evaluate_and_record(train_loss_sum / train_count, on_event)
        s.train_seconds = seconds_before + time.perf_counter() - start
        self.save()
        on_event({"kind": "done", "step": s.step, "reason": reason, "path": self.out_path,
                  "best_val_bpc": s.best_val_bpc, "last_val_bpc": s.last_val_bpc})
        return reason

    def evaluate_and_record(self, train_loss: float, on_event) -> bool:
        """Validate, record history, keep the best checkpoint. Returns True when
        patience has run out."""
        o, s = self.options, self.state
        val_bpc = evaluate(self.model, self.val_ids, o.batch_size, o.seq_len, self.comm)
        s.last_val_bpc = val_bpc
        record = {"step": s.step, "seconds": round(s.train_seconds, 3),
                  "train_bpc": train_loss / LN2, "val_bpc": val_bpc, "lr": self.current_lr()}
        s.history.append(record)
        improved = val_bpc is not None and (s.best_val_bpc is None or val_bpc < s.best_val_bpc)
        if improved:
            s.best_val_bpc, s.best_step, s.evals_since_best = val_bpc, s.step, 0
            self.save(best_path(self.out_path))
        elif val_bpc is not None:
            s.evals_since_best += 1
        on_event({"kind": "eval", **record, "best_val_bpc": s.best_val_bpc,
                  "improved": improved})
        return bool(o.patience) and s.evals_since_best >= o.patience


def x_chars(options: TrainOptions) -> int:
    """Characters consumed by one step."""
    return options.batch_size * options.seq_len
