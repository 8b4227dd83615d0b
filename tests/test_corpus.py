"""Tests of charrnn.corpus: reading text and its errors, the train/validation split, and
truncated-BPTT batch streams."""

import io
import sys

import numpy as np
import pytest

from charrnn.corpus import BatchStream, CorpusError, corpus_ids, read_text, split_ids
from charrnn.vocab import Vocab


# -- read_text ---------------------------------------------------------------------------

def test_read_text_returns_the_file_contents(tiny_text_file, tiny_text):
    assert read_text(str(tiny_text_file)) == tiny_text


def test_read_text_decodes_utf8_with_chinese_and_emoji(tmp_path):
    path = tmp_path / "u.txt"
    path.write_bytes("中文 and 🎉\r\n".encode("utf-8"))
    assert read_text(str(path)) == "中文 and 🎉\r\n"  # bytes, so no newline translation


def test_read_text_from_stdin(monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO("héllo\n".encode())))
    assert read_text("-") == "héllo\n"


def test_missing_path(tmp_path):
    missing = tmp_path / "nope.txt"
    with pytest.raises(CorpusError, match="no such file") as error:
        read_text(str(missing))
    assert str(missing) in str(error.value)


def test_directory(tmp_path):
    with pytest.raises(CorpusError, match="is a directory"):
        read_text(str(tmp_path))


def test_empty_file(tmp_path):
    path = tmp_path / "empty.txt"
    path.write_bytes(b"")
    with pytest.raises(CorpusError, match="is empty"):
        read_text(str(path))


def test_empty_stdin(monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"")))
    with pytest.raises(CorpusError, match="stdin is empty"):
        read_text("-")


def test_binary_file_with_nul_bytes(tmp_path):
    path = tmp_path / "data.bin"
    path.write_bytes(b"text at first" + bytes(range(256)))
    with pytest.raises(CorpusError, match="binary file.*NUL"):
        read_text(str(path))


def test_utf16_may_contain_nul_bytes(tmp_path):
    path = tmp_path / "wide.txt"
    path.write_bytes("wide text".encode("utf-16"))
    assert read_text(str(path), encoding="utf-16") == "wide text"


@pytest.mark.parametrize("offset", [0, 5, 17])
def test_invalid_utf8_reports_the_byte_offset(tmp_path, offset):
    path = tmp_path / "latin1.txt"
    path.write_bytes(b"x" * offset + "é rest".encode("latin-1"))
    with pytest.raises(CorpusError) as error:
        read_text(str(path))
    message = str(error.value)
    assert f"offset {offset};" in message
    assert "utf-8" in message and "--encoding" in message and "--errors replace" in message


def test_invalid_utf8_offset_counts_bytes_not_characters(tmp_path):
    path = tmp_path / "mixed.txt"
    path.write_bytes("中文".encode("utf-8") + b"\xff")  # two 3-byte characters first
    with pytest.raises(CorpusError, match="offset 6;"):
        read_text(str(path))


def test_errors_replace_and_other_encodings(tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes("café".encode("latin-1"))
    assert read_text(str(path), errors="replace") == "caf\ufffd"
    assert read_text(str(path), encoding="latin-1") == "café"
    with pytest.raises(CorpusError, match="unknown encoding"):
        read_text(str(path), encoding="no-such-codec")


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


def test_corpus_ids_lists_missing_characters():
    vocab = Vocab.from_text("abc")
    ids, missing = corpus_ids("abzcy世z", vocab)
    assert missing == ["y", "z", "世"]
    assert vocab.decode(ids) == "abc"
    folded = Vocab.from_text("aaab", min_count=2)
    ids, missing = corpus_ids("abz", folded)
    assert ids.tolist() == [0, 1, 1] and missing == ["b", "z"]
