"""Tests of charrnn.corpus: reading text and its errors, chunked decoding, the streaming
corpus with its id cache, the train/validation split, and truncated-BPTT batch streams."""

import io
import os
import sys
import threading
import time
from collections import Counter

import numpy as np
import pytest

from charrnn.batches import BatchStream, split_ids
from charrnn.corpus import CACHE_KEEP_DAYS, Corpus, IdFile, cache_dir, corpus_ids
from charrnn.textfile import CorpusError, iter_text, read_text
from charrnn.vocab import Vocab

MIXED = "Hello, wörld! 你好，世界。🎉 emoji 👍🏽\tand\r\nnewlines\n"


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


# -- chunked decoding ----------------------------------------------------------------------

@pytest.mark.parametrize("chunk", [1, 2, 3, 5, 1 << 20])
def test_chunked_decoding_equals_decoding_whole(tmp_path, chunk):
    path = tmp_path / "mixed.txt"
    path.write_bytes((MIXED * 5).encode("utf-8"))
    with open(path, "rb") as handle:
        pieces = list(iter_text(handle, "mixed.txt", chunk_bytes=chunk))
    assert "".join(pieces) == MIXED * 5
    assert chunk > 100 or len(pieces) > 5  # it really was read in pieces


BAD_UTF8 = [
    b"abc\xffdef",  # a byte that starts nothing
    "中文".encode() + b"\xe4\xb8" + b"x",  # a character cut short
    "🎉".encode() + b"\xf0\x9f" + "中".encode(),  # a cut 4-byte start, then a good char
    "x".encode() * 9 + b"\x80" + "🎉".encode(),  # a stray continuation byte
    "🎉🎉".encode() + b"\xed\xa0\x80",  # an encoded surrogate
    "中文".encode() + b"\xe4",  # cut at the very end of the file
]


@pytest.mark.parametrize("data", BAD_UTF8)
@pytest.mark.parametrize("chunk", [1, 2, 3, 4, 5, 7, 1 << 20])
def test_bad_byte_offset_is_absolute_whatever_the_chunks(tmp_path, data, chunk):
    with pytest.raises(UnicodeDecodeError) as whole:
        data.decode("utf-8")
    path = tmp_path / "bad.txt"
    path.write_bytes(data)
    with pytest.raises(CorpusError, match=f"offset {whole.value.start};"):
        with open(path, "rb") as handle:
            list(iter_text(handle, "bad.txt", chunk_bytes=chunk))
    with pytest.raises(CorpusError, match=f"bad.txt is not valid utf-8: bad byte at offset "
                                          f"{whole.value.start}; use --encoding NAME or "
                                          "--errors replace"):
        Corpus(str(path), cache=str(tmp_path / "cache"), chunk_bytes=chunk)


def test_binary_file_is_found_across_small_chunks(tmp_path):
    path = tmp_path / "data.bin"
    path.write_bytes(b"text at first" * 100 + b"\x00" + b"more")
    with pytest.raises(CorpusError, match="binary"):
        Corpus(str(path), cache=str(tmp_path / "cache"), chunk_bytes=16)


# -- Corpus: counts, ids and the cache ------------------------------------------------------

@pytest.fixture
def cache(tmp_path):
    return str(tmp_path / "cache")


def write(tmp_path, text, name="c.txt"):
    path = tmp_path / name
    path.write_bytes(text.encode("utf-8"))
    return str(path)


def test_counts_are_every_code_point_in_code_point_order(tmp_path, cache, tiny_text):
    text = tiny_text + MIXED * 3
    with Corpus(write(tmp_path, text), cache=cache, chunk_bytes=7) as corpus:
        assert corpus.counts == Counter(text)
        assert list(corpus.counts) == sorted(set(text))
        assert corpus.n_chars == len(text)
        assert Vocab.from_counter(corpus.counts) == Vocab.from_text(text)


@pytest.mark.parametrize("text, dtype", [(MIXED, np.uint8),
                                         ("".join(chr(0x4E00 + k) for k in range(300)), np.uint16)])
def test_ids_are_the_encoded_text_in_the_smallest_type_read_from_the_cache(tmp_path, cache,
                                                                          text, dtype):
    text = text * 4
    with Corpus(write(tmp_path, text), cache=cache, chunk_bytes=5) as corpus:
        vocab = Vocab.from_counter(corpus.counts)
        ids = corpus.ids(vocab)
    assert isinstance(ids, IdFile) and ids.dtype == dtype and len(ids) == len(text)
    expected = vocab.encode(text)[0]
    assert np.asarray(ids).tolist() == expected.tolist()
    assert os.path.getsize(ids.path) == len(text) * np.dtype(dtype).itemsize
    train, val = split_ids(ids, 0.1)
    assert isinstance(train, IdFile) and isinstance(val, IdFile)  # nothing read yet
    assert np.array_equal(np.concatenate([np.asarray(train), np.asarray(val)]), expected)


def test_id_file_slices_like_an_array(tmp_path):
    path = tmp_path / "ids.u16"
    array = np.arange(1000, dtype=np.uint16) * 7
    array.tofile(path)
    ids = IdFile(str(path), np.uint16)
    assert len(ids) == 1000 and ids.shape == (1000,)
    for key in (slice(None), slice(3, 10), slice(-5, None), slice(990, 2000), slice(10, 3),
                slice(0, 0)):
        assert np.array_equal(np.asarray(ids[key]), array[key]), key
        assert np.array_equal(np.asarray(ids[100:][key]), array[100:][key]), key
    assert np.asarray(ids[5:9], dtype=np.int32).dtype == np.int32
    with pytest.raises(ValueError):
        ids[::2]
    with pytest.raises(TypeError):
        ids[3]


def test_id_file_cut_short_under_a_reader_says_how_to_fix_it(tmp_path):
    path = tmp_path / "ids.u8"
    np.arange(100, dtype=np.uint8).tofile(path)
    ids = IdFile(str(path), np.uint8)
    os.truncate(path, 50)
    with pytest.raises(CorpusError, match="cache file"):
        np.asarray(ids[40:60])


@pytest.mark.skipif(not os.path.exists("/proc/self/maps"), reason="needs /proc")
def test_batches_read_from_an_id_file_map_nothing_of_it(tmp_path):
    # A memory map's touched pages count in RSS (and a whole page-cache folio each on
    # Linux 6.x); training must read ids without mapping the file.
    path = tmp_path / "ids.u8"
    array = (np.arange(100_000) % 251).astype(np.uint8)
    array.tofile(path)
    from_file, in_memory = BatchStream(IdFile(str(path), np.uint8), 8, 16), \
        BatchStream(array, 8, 16)
    for _ in range(5):
        x, y, _ = from_file.next_batch()
        nx, ny, _ = in_memory.next_batch()
        assert np.array_equal(x, nx) and np.array_equal(y, ny)
    assert list(from_file.epoch_batches())[3][0].tolist() == \
        list(in_memory.epoch_batches())[3][0].tolist()
    with open("/proc/self/maps") as maps:
        assert str(path) not in maps.read()


def test_folded_characters_become_the_unknown_id(tmp_path, cache):
    text = "aaaa bbb cc d 世"
    with Corpus(write(tmp_path, text), cache=cache) as corpus:
        vocab = Vocab.from_counter(corpus.counts, min_count=3)
        assert corpus.missing(vocab) == ["c", "d", "世"]
        assert np.asarray(corpus.ids(vocab)).tolist() == vocab.encode(text)[0].tolist()
        assert corpus.id_counts(vocab).tolist() == [4, 4, 3, 4]  # " ", a, b, unknown
        assert corpus.id_counts(vocab).sum() == corpus.n_chars
        with pytest.raises(ValueError, match="no unknown symbol"):
            corpus.ids(Vocab.from_text("ab "))


def test_a_second_run_decodes_nothing(tmp_path, cache, monkeypatch):
    path = write(tmp_path, MIXED * 20)
    with Corpus(path, cache=cache) as first:
        vocab = Vocab.from_counter(first.counts)
        first_ids = np.array(first.ids(vocab))
    assert not first.counts_cached and not first.ids_cached

    def no_decoding(self):
        raise AssertionError("decoded the corpus again")
    monkeypatch.setattr(Corpus, "code_point_chunks", no_decoding)
    with Corpus(path, cache=cache) as second:
        assert second.counts == first.counts and second.counts_cached
        assert np.array_equal(np.asarray(second.ids(vocab)), first_ids) and second.ids_cached


def test_the_cache_key_is_the_content_and_the_decoding(tmp_path, cache):
    with Corpus(write(tmp_path, MIXED, "a.txt"), cache=cache) as corpus:
        key = corpus.key
    with Corpus(write(tmp_path, MIXED, "b.txt"), cache=cache) as renamed:
        assert renamed.key == key and renamed.counts_cached
    with Corpus(write(tmp_path, MIXED + "!", "a.txt"), cache=cache) as edited:
        assert edited.key != key and not edited.counts_cached
        assert edited.counts["!"] == MIXED.count("!") + 1
    with Corpus(write(tmp_path, MIXED, "a.txt"), errors="replace", cache=cache) as other:
        assert other.key != key


def test_each_vocabulary_has_its_own_ids_file(tmp_path, cache):
    text = "aaaa bbb cc d"
    with Corpus(write(tmp_path, text), cache=cache) as corpus:
        full, folded = Vocab.from_counter(corpus.counts), \
            Vocab.from_counter(corpus.counts, max_size=2)
        assert corpus.ids_path(full) != corpus.ids_path(folded)
        assert np.asarray(corpus.ids(full)).tolist() == full.encode(text)[0].tolist()
        assert np.asarray(corpus.ids(folded)).tolist() == folded.encode(text)[0].tolist()
        assert np.asarray(corpus.ids(full)).tolist() == full.encode(text)[0].tolist()
        assert corpus.ids_cached


def test_corpora_unused_for_a_month_leave_the_cache(tmp_path, cache):
    """Opening a corpus marks its own entries used and removes other corpora's counts and
    ids unused for CACHE_KEEP_DAYS, and temporaries of killed runs as old, its own
    corpus's too; kernel caches and unknown files stay."""
    def cached(text, name):
        with Corpus(write(tmp_path, text, name), cache=cache) as corpus:
            corpus.ids(Vocab.from_counter(corpus.counts))
            return sorted(n for n in os.listdir(cache) if n.startswith(corpus.key))
    stale, recent, current = cached("old text", "a.txt"), cached("newer", "b.txt"), \
        cached("the one in use", "c.txt")
    assert len(stale) == len(recent) == len(current) == 2  # counts and ids each
    os.mkdir(os.path.join(cache, "numba-00000000000000aa"))
    # what killed runs leave: a spool of stdin, temporaries of this corpus's entries
    stale_temporaries = ["spool-k2j_9x0q.tmp", f"{current[0]}.tmp4242-0a1b2c3d",
                         f"{stale[1]}.tmp9-00ff00ff"]
    recent_temporaries = ["spool-abc123de.tmp", f"{current[1]}.tmp77-deadbeef"]
    not_ours = ["notes.txt", "spool-NOTOURS.tmp", "model.ckpt.tmp12-0a1b2c3d"]
    for name in [*not_ours, *stale_temporaries, *recent_temporaries]:
        with open(os.path.join(cache, name), "w") as handle:
            handle.write("not ours" if name in not_ours else "half written")
    day, now = 86400, time.time()
    for names, age in ((stale, CACHE_KEEP_DAYS + 1), (recent, CACHE_KEEP_DAYS - 1),
                       (current, 400), (["numba-00000000000000aa", *not_ours], 400),
                       (stale_temporaries, CACHE_KEEP_DAYS + 1),
                       (recent_temporaries, CACHE_KEEP_DAYS - 1)):
        for name in names:
            os.utime(os.path.join(cache, name), (now - age * day, now - age * day))
    assert cached("the one in use", "c.txt") == sorted(current + [recent_temporaries[1]])
    assert sorted(os.listdir(cache)) == sorted(recent + current + recent_temporaries
                                               + not_ours + ["numba-00000000000000aa"])
    assert all(os.stat(os.path.join(cache, name)).st_mtime > now - day for name in current)


def test_damaged_cache_files_are_rebuilt(tmp_path, cache):
    path = write(tmp_path, MIXED * 3)
    with Corpus(path, cache=cache) as corpus:
        vocab = Vocab.from_counter(corpus.counts)
        ids_path = corpus.ids_path(vocab)
        expected = np.array(corpus.ids(vocab))
        counts_path = os.path.join(cache, f"{corpus.key}.counts.json")
    with open(ids_path, "r+b") as handle:
        handle.truncate(10)  # as a crash mid-write would, were writes not atomic
    with open(counts_path, "w") as handle:
        handle.write('{"code_points": [97')
    with Corpus(path, cache=cache) as again:
        assert not again.counts_cached and again.counts == Counter(MIXED * 3)
        assert np.array_equal(np.asarray(again.ids(vocab)), expected) and not again.ids_cached
    assert not [name for name in os.listdir(cache) if ".tmp" in name]


def test_stdin_is_spooled_and_the_spool_removed(monkeypatch, cache):
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO((MIXED * 3).encode())))
    with Corpus("-", cache=cache, chunk_bytes=4) as corpus:
        assert corpus.name == "stdin"
        assert [name for name in os.listdir(cache) if name.startswith("spool-")]
        vocab = Vocab.from_counter(corpus.counts)
        ids = corpus.ids(vocab)
    assert not [name for name in os.listdir(cache) if name.startswith("spool-")]
    assert vocab.decode(np.asarray(ids)) == MIXED * 3  # the ids outlive the spool


def test_a_named_pipe_is_read_once_and_spooled(tmp_path, cache):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    writer = threading.Thread(target=lambda: fifo.write_bytes((MIXED * 2).encode()))
    writer.start()
    try:
        with Corpus(str(fifo), cache=cache) as corpus:
            ids = corpus.ids(Vocab.from_counter(corpus.counts))
    finally:
        writer.join(timeout=10)
    assert corpus.n_chars == len(MIXED * 2) and len(ids) == corpus.n_chars


@pytest.mark.parametrize("content, message", [(b"", "is empty"), ("\ufeff".encode(), "is empty"),
                                              (b"\x00\x01binary", "binary")])
def test_unusable_corpus_leaves_no_spool(monkeypatch, cache, content, message):
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(content)))
    with pytest.raises(CorpusError, match=f"stdin.*{message}"):
        Corpus("-", encoding="utf-8-sig", cache=cache)
    assert not [name for name in os.listdir(cache) if name.startswith("spool-")]


def test_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("CHARRNN_CACHE_DIR", str(tmp_path / "mine"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == str(tmp_path / "mine")
    monkeypatch.delenv("CHARRNN_CACHE_DIR")
    assert cache_dir() == str(tmp_path / "xdg" / "charrnn")
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir() == str(tmp_path / "home" / ".cache" / "charrnn")


def test_an_unusable_cache_is_one_error_naming_the_fix(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with pytest.raises(CorpusError, match="corpus cache .* set CHARRNN_CACHE_DIR"):
        Corpus(write(tmp_path, MIXED), cache=str(blocker / "cache"))


def test_corpus_reports_the_same_errors_as_read_text(tmp_path, cache):
    with pytest.raises(CorpusError, match="no such file"):
        Corpus(str(tmp_path / "nope.txt"), cache=cache)
    with pytest.raises(CorpusError, match="is a directory"):
        Corpus(str(tmp_path), cache=cache)
    with pytest.raises(CorpusError, match="unknown encoding"):
        Corpus(write(tmp_path, MIXED), encoding="no-such-codec", cache=cache)


def test_corpus_ids_lists_missing_characters():
    vocab = Vocab.from_text("abc")
    ids, missing = corpus_ids("abzcy世z", vocab)
    assert missing == ["y", "z", "世"]
    assert vocab.decode(ids) == "abc"
    folded = Vocab.from_text("aaab", min_count=2)
    ids, missing = corpus_ids("abz", folded)
    assert ids.tolist() == [0, 1, 1] and missing == ["b", "z"]
