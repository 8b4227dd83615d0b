"""batches.py: the contiguous validation split and the truncated-BPTT batch streams
(N streams, T characters each step, wrapping, a rank's share of the rows)."""

import numpy as np
import pytest

from charrnn.batches import BatchStream, split_ids
from charrnn.corpus import corpus_ids
from charrnn.textfile import CorpusError
from charrnn.vocab import Vocab

# -- split_ids ---------------------------------------------------------------------------

@pytest.mark.parametrize("n, fraction, n_val", [(100, 0.1, 10), (101, 0.05, 5), (10, 0.0, 0),
                                                (7, 0.5, 4)])
def test_split_is_contiguous_and_the_tail_is_validation(n, fraction, n_val):
    ids = np.arange(n)
    train, val = split_ids(ids, fraction)
    assert len(val) == n_val
    assert np.array_equal(np.concatenate([train, val]), ids)
    assert np.array_equal(val, ids[n - n_val:])


# -- BatchStream -------------------------------------------------------------------------

def test_batches_are_consecutive_within_each_stream():
    N, T, n = 3, 4, 50
    stream = BatchStream(np.arange(n), batch_size=N, seq_len=T)
    S = (n - 1) // N  # 16 ids per stream
    assert stream.batches_per_epoch == S // T == 4
    batches = [stream.next_batch() for _ in range(stream.batches_per_epoch)]
    for b, (x, y, wrapped) in enumerate(batches):
        assert x.shape == y.shape == (N, T) and x.dtype == y.dtype == np.int32
        assert not wrapped
        assert np.array_equal(y, x + 1)  # y is x shifted by one
        assert np.array_equal(x[:, 0], np.arange(N) * S + b * T)  # stream s starts at s*S
        assert np.array_equal(np.diff(x, axis=1), np.ones((N, T - 1)))
        if b:
            assert np.array_equal(x[:, 0], batches[b - 1][0][:, -1] + 1)  # continues
    # the streams do not overlap and every target lies inside the text
    seen = np.concatenate([x.reshape(-1) for x, _, _ in batches])
    assert len(np.unique(seen)) == seen.size
    assert max(y.max() for _, y, _ in batches) <= n - 1


@pytest.mark.parametrize("ahead", [1, 2, 3, 100])
@pytest.mark.parametrize("rows", [None, (1, 3)])
def test_batches_read_ahead_are_the_text_at_every_block_edge(ahead, rows, monkeypatch):
    # Streams are read READ_AHEAD_IDS at a time, whole batches of them: every batch,
    # across two passes, must be the slices of the text it stands for
    from charrnn import batches
    N, T, n = 3, 4, 87
    monkeypatch.setattr(batches, "READ_AHEAD_IDS", ahead * T)
    ids = np.arange(1000, 1000 + n)
    stream = BatchStream(ids, batch_size=N, seq_len=T, rows=rows)
    lo, hi = rows or (0, N)
    S = (n - 1) // N
    for step in range(2 * stream.batches_per_epoch + 1):
        x, y, wrapped = stream.next_batch()
        b = step % stream.batches_per_epoch
        assert wrapped == (step > 0 and b == 0)
        starts = np.arange(lo, hi)[:, None] * S + b * T + np.arange(T)
        np.testing.assert_array_equal(x, ids[starts])
        np.testing.assert_array_equal(y, ids[starts + 1])


def test_batches_follow_real_text(tiny_text):
    vocab = Vocab.from_text(tiny_text)
    ids, missing = corpus_ids(tiny_text, vocab)
    assert missing == []
    stream = BatchStream(ids, batch_size=4, seq_len=16)
    x, y, _ = stream.next_batch()
    S = (len(ids) - 1) // 4
    for s in range(4):
        assert vocab.decode(x[s]) == tiny_text[s * S:s * S + 16]
        assert vocab.decode(y[s]) == tiny_text[s * S + 1:s * S + 17]


def test_wrap_flag_and_restart():
    stream = BatchStream(np.arange(40), batch_size=2, seq_len=5)  # S = 19: 3 batches
    first = [stream.next_batch() for _ in range(3)]
    assert [wrapped for _, _, wrapped in first] == [False, False, False]
    x, y, wrapped = stream.next_batch()
    assert wrapped
    assert np.array_equal(x, first[0][0]) and np.array_equal(y, first[0][1])
    assert not stream.next_batch()[2]
    assert stream.cursor == 2


def test_epoch_batches_match_next_batch_and_leave_the_cursor():
    stream = BatchStream(np.arange(60) % 7, batch_size=2, seq_len=4)
    stream.cursor = 1
    epoch = list(stream.epoch_batches())
    assert len(epoch) == stream.batches_per_epoch and stream.cursor == 1
    stream.cursor = 0
    for x, y in epoch:
        nx, ny, _ = stream.next_batch()
        assert np.array_equal(x, nx) and np.array_equal(y, ny)


@pytest.mark.parametrize("rows", [(0, 5), (0, 2), (2, 5), (4, 5), (3, 3)])
def test_a_share_of_the_streams_is_those_rows_of_the_full_batches(rows):
    # One rank's share in data-parallel training: the same text as with every stream.
    full = BatchStream(np.arange(203), batch_size=5, seq_len=6)
    share = BatchStream(np.arange(203), batch_size=5, seq_len=6, rows=rows)
    assert share.stream_len == full.stream_len
    assert share.batches_per_epoch == full.batches_per_epoch
    for _ in range(full.batches_per_epoch + 2):  # across the wrap
        x, y, wrapped = full.next_batch()
        sx, sy, swrapped = share.next_batch()
        assert sx.shape == (rows[1] - rows[0], 6) and swrapped == wrapped
        assert np.array_equal(sx, x[rows[0]:rows[1]]) and np.array_equal(sy, y[rows[0]:rows[1]])


@pytest.mark.parametrize("rows", [(-1, 2), (3, 2), (0, 6)])
def test_a_share_outside_the_streams_is_refused(rows):
    with pytest.raises(ValueError, match="not a range"):
        BatchStream(np.arange(203), batch_size=5, seq_len=6, rows=rows)


def test_a_memory_mapped_corpus_works(tmp_path):
    path = tmp_path / "ids.u8"
    np.arange(100, dtype=np.uint8).tofile(path)
    ids = np.memmap(path, dtype=np.uint8, mode="r")
    x, y, _ = BatchStream(ids, batch_size=2, seq_len=3).next_batch()
    assert x.tolist() == [[0, 1, 2], [49, 50, 51]] and np.array_equal(y, x + 1)


def test_shortest_corpus_that_fits():
    N, T = 3, 5
    stream = BatchStream(np.arange(N * T + 1), batch_size=N, seq_len=T)
    assert stream.batches_per_epoch == 1
    x, y, _ = stream.next_batch()
    assert y.max() == N * T


def test_too_short_corpus_names_the_options():
    N, T = 3, 5
    with pytest.raises(CorpusError) as error:
        BatchStream(np.arange(N * T), batch_size=N, seq_len=T)
    message = str(error.value)
    assert "--batch-size 3" in message and "--seq-len 5" in message
    assert f"{N * T} chars" in message and f"at least {N * T + 1}" in message
