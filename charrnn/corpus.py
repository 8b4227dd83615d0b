"""Reading corpora and cutting them into truncated-BPTT batches.

Text comes from a path or '-' (stdin), decoded as UTF-8 unless told otherwise. The last
`val_fraction` of the ids is the validation split (contiguous, so no validation text
leaks into training). Training follows char-rnn/torch-rnn: the text is cut into N
parallel streams, each batch is the next T characters of every stream, and the caller
carries the hidden state from one batch to the next.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

import numpy as np


class CorpusError(ValueError):
    """A corpus that cannot be used; the message says how to fix it."""


def read_text(path: str, encoding: str = "utf-8", errors: str = "strict") -> str:
    """Read a whole corpus from a path or '-' (stdin) as text."""
    if path == "-":
        data = sys.stdin.buffer.read()
        name = "stdin"
    else:
        if os.path.isdir(path):
            raise CorpusError(f"{path} is a directory: give a text file (or "
                              f"`cat {path}/* | charrnn train - ...`)")
        try:
            with open(path, "rb") as handle:
                data = handle.read()
        except FileNotFoundError:
            raise CorpusError(f"{path}: no such file") from None
        except OSError as error:
            raise CorpusError(f"{path}: cannot read: {error.strerror}") from None
        name = path
    return decode_bytes(data, name, encoding, errors)


def decode_bytes(data: bytes, name: str, encoding: str = "utf-8", errors: str = "strict") -> str:
    if not data:
        raise CorpusError(f"{name} is empty: give a text file with some characters in it")
    if b"\x00" in data[:65536] and not encoding.lower().startswith("utf-16"):
        raise CorpusError(f"{name} looks like a binary file (it contains NUL bytes): "
                          "give a text file")
    try:
        return data.decode(encoding, errors)
    except UnicodeDecodeError as error:
        raise CorpusError(f"{name} is not valid {error.encoding}: bad byte at offset "
                          f"{error.start}; use --encoding NAME or --errors replace") from None
    except LookupError:
        raise CorpusError(f"unknown encoding {encoding!r}: try utf-8, latin-1, cp1252") from None


def split_ids(ids: np.ndarray, val_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """Contiguous split: the last val_fraction of ids is validation."""
    n_val = int(round(len(ids) * val_fraction))
    return ids[: len(ids) - n_val], ids[len(ids) - n_val:]


@dataclass
class BatchStream:
    """Truncated-BPTT batches over one id array.

    Stream s covers ids[s*S : s*S + S + 1] with S = (len(ids) - 1) // N; batch b is
    x = ids[s*S + b*T : +T], y the same shifted by one. `cursor` is the index of the next
    batch; when it passes the end it wraps to 0, and next_batch says so, because the
    state carried to that point belongs to other text.
    """
    ids: np.ndarray
    batch_size: int  # N parallel streams
    seq_len: int  # T characters per stream per batch
    cursor: int = 0

    def __post_init__(self):
        self.stream_len = (len(self.ids) - 1) // self.batch_size
        self.batches_per_epoch = self.stream_len // self.seq_len
        if self.batches_per_epoch < 1:
            raise CorpusError(
                f"training text is {len(self.ids)} chars but --batch-size "
                f"{self.batch_size} x --seq-len {self.seq_len} needs at least "
                f"{self.batch_size * self.seq_len + 1}: lower --batch-size or --seq-len, "
                f"lower --val-fraction, or give a larger corpus")
        self._offsets = (np.arange(self.batch_size) * self.stream_len)[:, None] \
            + np.arange(self.seq_len)[None, :]  # (N, T)

    def next_batch(self) -> tuple[np.ndarray, np.ndarray, bool]:
        """Return (x, y, wrapped): x, y (N, T) int32 ids; wrapped is true when this
        batch starts a new pass over the text."""
        wrapped = self.cursor >= self.batches_per_epoch
        if wrapped:
            self.cursor = 0
        index = self._offsets + self.cursor * self.seq_len
        self.cursor += 1
        return (np.asarray(self.ids[index], dtype=np.int32),
                np.asarray(self.ids[index + 1], dtype=np.int32), wrapped)

    def epoch_batches(self):
        """Every batch of one pass from the start, without touching the cursor."""
        for b in range(self.batches_per_epoch):
            index = self._offsets + b * self.seq_len
            yield (np.asarray(self.ids[index], dtype=np.int32),
                   np.asarray(self.ids[index + 1], dtype=np.int32))


def corpus_ids(text: str, vocab) -> tuple[np.ndarray, list[str]]:
    """Encode a corpus with a given vocabulary. Returns (ids, characters the vocabulary
    lacks); those are mapped to its unknown symbol, or dropped if it has none."""
    ids, unknown = vocab.encode(text)
    missing = sorted(set(np.asarray(list(text))[unknown])) if unknown.any() else []
    return ids, missing
