"""Truncated-BPTT batches, as char-rnn and torch-rnn cut them: the last val_fraction of
the ids is the validation split (contiguous, so no validation text leaks into
training); the rest is N parallel streams, each batch the next T characters of every
stream, and the caller (trainer.py) carries the hidden state from one batch to the next
until the streams wrap around to the start of the text.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .corpus import IdFile
from .textfile import CorpusError


def split_ids(ids: np.ndarray, val_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """Contiguous split: the last val_fraction of ids is validation."""
    n_val = int(round(len(ids) * val_fraction))
    return ids[: len(ids) - n_val], ids[len(ids) - n_val:]

READ_AHEAD_IDS = 4096  # ids of each stream read at once, whole batches of them


@dataclass
class BatchStream:
    """Truncated-BPTT batches over one id array.

    Stream s covers ids[s*S : s*S + S + 1] with S = (len(ids) - 1) // N; batch b is
    x = ids[s*S + b*T : +T], y the same shifted by one. `cursor` is the index of the next
    batch; when it passes the end it wraps to 0, and next_batch says so, because the
    state carried to that point belongs to other text. ids is anything that slices into
    arrays: an ndarray, or an IdFile, of which a batch reads N windows of T + 1 ids.

    `rows` (lo, hi) keeps only streams lo..hi-1 of the N (one rank's share in
    data-parallel training): S still comes from N, so each kept stream is the same text
    whatever the share, and its batches are the rows lo..hi-1 of the full batches.
    """
    ids: np.ndarray | IdFile
    batch_size: int  # N parallel streams
    seq_len: int  # T characters per stream per batch
    cursor: int = 0
    rows: tuple[int, int] | None = None  # (lo, hi): the streams produced; None = all N

    def __post_init__(self):
        self.lo, self.hi = self.rows or (0, self.batch_size)
        if not 0 <= self.lo <= self.hi <= self.batch_size:
            raise ValueError(f"rows {self.rows} are not a range of the {self.batch_size} streams")
        self.stream_len = (len(self.ids) - 1) // self.batch_size
        self.batches_per_epoch = self.stream_len // self.seq_len
        if self.batches_per_epoch < 1:
            raise CorpusError(
                f"training text is {len(self.ids)} chars but --batch-size "
                f"{self.batch_size} x --seq-len {self.seq_len} needs at least "
                f"{self.batch_size * self.seq_len + 1}: lower --batch-size or --seq-len, "
                f"lower --val-fraction, or give a larger corpus")
        # Batches b0.. b0 + K - 1 of every stream, read together: one read per stream
        # for K batches, where one per batch cost a good part of a small model's step.
        self._ahead = max(1, READ_AHEAD_IDS // self.seq_len)  # K
        self._block = np.empty((self.hi - self.lo, self._ahead * self.seq_len + 1), np.int32)
        self._block_first = -self._ahead - 1  # b0 of the batches in _block; none yet

    def batch(self, b: int) -> tuple[np.ndarray, np.ndarray]:
        """Batch b: x, y (n, T) int32 ids, n = hi - lo streams (N unless rows is given)."""
        T = self.seq_len
        if not self._block_first <= b < self._block_first + self._ahead:
            count = min(self._ahead, self.batches_per_epoch - b) * T + 1
            for row, s in enumerate(range(self.lo, self.hi)):
                start = s * self.stream_len + b * T
                self._block[row, :count] = self.ids[start:start + count]
            self._block_first = b
        offset = (b - self._block_first) * T
        window = self._block[:, offset:offset + T + 1]
        return window[:, :-1].copy(), window[:, 1:].copy()

    def next_batch(self) -> tuple[np.ndarray, np.ndarray, bool]:
        """Return (x, y, wrapped): x, y (n, T) int32 ids; wrapped is true when this
        batch starts a new pass over the text."""
        wrapped = self.cursor >= self.batches_per_epoch
        if wrapped:
            self.cursor = 0
        self.cursor += 1
        return (*self.batch(self.cursor - 1), wrapped)

    def epoch_batches(self):
        """Every batch of one pass from the start, without touching the cursor."""
        for b in range(self.batches_per_epoch):
            yield self.batch(b)
