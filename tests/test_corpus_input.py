"""Bad input meets one line and a non-zero exit, never a traceback or lost data: a
damaged corpus cache, encodings that fail or are not text encodings, lone surrogates,
endless binary streams, and error advice that names only the options a command has."""

import io
import json
import os
import sys

import numpy as np
import pytest
from clitools import assert_fails, run
from test_bigcorpus import TINY

from charrnn.checkpoint import load_trained
from charrnn.corpus import Corpus
from charrnn.textfile import SNIFF_BYTES, CorpusError, read_text
from charrnn.vocab import Vocab

LONE_SURROGATES = b"ab+2AA-cd" * 400  # utf-7 for "ab\ud800cd": a high half alone


@pytest.fixture
def cache(tmp_path):
    return str(tmp_path / "cache")


def write_bytes(tmp_path, data, name="c.txt"):
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


# -- a damaged cache -----------------------------------------------------------------------

def test_cached_ids_past_the_vocabulary_are_rebuilt(tmp_path, cache, tiny_text):
    path = write_bytes(tmp_path, tiny_text.encode())
    with Corpus(path, cache=cache) as corpus:
        vocab = Vocab.from_counter(corpus.counts)
        ids_path = corpus.ids_path(vocab)
        expected = np.asarray(corpus.ids(vocab))
    with open(ids_path, "r+b") as handle:  # the right size, ids out of range
        handle.write(b"\xff" * os.path.getsize(ids_path))
    with Corpus(path, cache=cache) as again:
        ids = again.ids(vocab)
        assert not again.ids_cached
    assert np.array_equal(np.asarray(ids), expected)
    with Corpus(path, cache=cache) as third:  # the rebuilt entry is trusted again
        third.ids(vocab)
        assert third.ids_cached


def test_resume_on_a_damaged_id_cache_trains_on_the_text(tmp_path, tiny_text, monkeypatch):
    monkeypatch.setenv("CHARRNN_CACHE_DIR", str(tmp_path / "cache"))
    corpus, out = tmp_path / "small.txt", tmp_path / "m.ckpt"
    corpus.write_text(tiny_text, encoding="utf-8")
    assert run("train", corpus, "-o", out, *TINY).exit_code == 0
    for ids_file in (tmp_path / "cache").glob("*.uint8"):
        ids_file.write_bytes(b"\xff" * ids_file.stat().st_size)
    result = run("train", corpus, "-o", out, "--resume", "--steps", "8", "--threads", "1")
    assert result.exit_code == 0, result.stderr
    assert "ids cached in" in result.stderr and "rolled back" not in result.stderr
    model, _, record, _ = load_trained(out)
    assert record["state"]["step"] == 8 and np.isfinite(model.flat).all()


@pytest.mark.parametrize("lost", ["z", "b"])  # above the largest counted, and below it
@pytest.mark.parametrize("max_vocab", [0, 2])  # 2: the lost character would be unknown
def test_cached_counts_that_lack_a_character_are_one_error_and_removed(tmp_path, cache,
                                                                      lost, max_vocab):
    path = write_bytes(tmp_path, b"abcz" * 50)
    with Corpus(path, cache=cache) as corpus:
        counts_path = os.path.join(cache, f"{corpus.key}.counts.json")
    kept = [ord(ch) for ch in "abcz" if ch != lost]
    with open(counts_path, "w") as handle:  # well formed, but one character is gone
        json.dump({"code_points": kept, "counts": [50] * len(kept)}, handle)
    with Corpus(path, cache=cache) as damaged:
        with pytest.raises(CorpusError, match="damaged.*run again"):
            damaged.ids(Vocab.from_counter(damaged.counts, max_vocab))
    assert not os.path.exists(counts_path)
    assert not [name for name in os.listdir(cache) if ".tmp" in name]
    with Corpus(path, cache=cache) as again:
        assert again.counts[lost] == 50


# -- encodings -----------------------------------------------------------------------------

@pytest.mark.parametrize("command", ["train", "score"])
def test_utf16_without_a_byte_order_mark_is_one_line(tmp_path, tiny_text, command):
    text = write_bytes(tmp_path, tiny_text.encode("utf-16-le"), "le.txt")
    out = tmp_path / "u.ckpt"
    if command == "train":
        result = run("train", text, "-o", out, *TINY, "--encoding", "utf-16")
    else:
        corpus = write_bytes(tmp_path, tiny_text.encode(), "good.txt")
        assert run("train", corpus, "-o", out, *TINY).exit_code == 0
        result = run("score", out, text, "--encoding", "utf-16")
    message = assert_fails(result)
    assert "le.txt" in message and "utf-16" in message and "BOM" in message
    assert "--encoding utf-16-le" in message and "--errors" not in message


def test_random_bytes_as_utf32_with_errors_ignore_is_one_line(tmp_path):
    data = np.random.default_rng(5).integers(1, 256, 3000, dtype=np.uint8).tobytes()
    corpus = write_bytes(tmp_path, data, "noise.bin")
    message = assert_fails(run("train", corpus, "-o", tmp_path / "n.ckpt", *TINY,
                               "--encoding", "utf-32", "--errors", "ignore"))
    assert "noise.bin" in message and "utf-32" in message
    assert not (tmp_path / "n.ckpt").exists()


@pytest.mark.parametrize("codec", ["base64", "hex", "zlib", "rot13"])
def test_codecs_that_are_not_text_encodings_are_refused(tmp_path, tiny_text, codec):
    corpus = write_bytes(tmp_path, tiny_text.encode())
    message = assert_fails(run("train", corpus, "-o", tmp_path / "m.ckpt", *TINY,
                               "--encoding", codec))
    assert f"'{codec}' is not a text encoding" in message
    with pytest.raises(CorpusError, match="not a text encoding"):
        read_text(corpus, encoding=codec)


# -- lone surrogates -----------------------------------------------------------------------

def test_lone_surrogates_are_refused_before_training(tmp_path):
    corpus = write_bytes(tmp_path, LONE_SURROGATES, "s7.txt")
    out = tmp_path / "s7.ckpt"
    message = assert_fails(run("train", corpus, "-o", out, *TINY, "--encoding", "utf-7"))
    assert "s7.txt" in message and "U+D800" in message and "--errors replace" in message
    assert not out.exists()
    with pytest.raises(CorpusError, match=r"U\+D800"):
        read_text(corpus, encoding="utf-7")


@pytest.mark.parametrize("errors, becomes", [("replace", "ab\ufffdcd"), ("ignore", "abcd")])
def test_lone_surrogates_follow_errors(tmp_path, cache, errors, becomes):
    path = write_bytes(tmp_path, LONE_SURROGATES)
    assert read_text(path, "utf-7", errors) == becomes * 400
    for _ in range(2):  # counted, then from the cache
        with Corpus(path, "utf-7", errors, cache=cache, chunk_bytes=10) as corpus:
            vocab = Vocab.from_counter(corpus.counts)
            assert vocab.chars == tuple(sorted(set(becomes)))
            assert vocab.decode(np.asarray(corpus.ids(vocab))) == becomes * 400
            assert corpus.n_chars == len(becomes) * 400


def test_lone_surrogates_replaced_train_and_save(tmp_path):
    corpus = write_bytes(tmp_path, LONE_SURROGATES, "s7.txt")
    out = tmp_path / "s7.ckpt"
    result = run("train", corpus, "-o", out, *TINY, "--encoding", "utf-7",
                 "--errors", "replace")
    assert result.exit_code == 0, result.stderr
    assert "\ufffd" in load_trained(out)[1].chars


# -- endless and binary streams ------------------------------------------------------------

class Endless:
    """A stream that never ends: `text` first, then NUL bytes, with a cap on what it
    gives so that a reader that does not stop fails the test instead of filling the disk."""

    def __init__(self, text=b"", cap=8 * SNIFF_BYTES):
        self.data, self.given, self.cap = text, 0, cap

    def read(self, size):
        assert self.given < self.cap, "kept reading an endless binary stream"
        chunk = (self.data[self.given:] + b"\x00" * size)[:size]
        self.given += len(chunk)
        return chunk


@pytest.mark.parametrize("text", [b"", b"text first " * 300])
def test_an_endless_binary_stream_is_refused_while_spooling(cache, text):
    stream = Endless(text)
    with pytest.raises(CorpusError, match="stdin looks like a binary file"):
        Corpus("-", stdin=stream, cache=cache, chunk_bytes=1000)
    assert stream.given <= SNIFF_BYTES + 1000
    assert not [name for name in os.listdir(cache) if name.startswith("spool-")]


def test_utf16_stdin_with_its_nul_bytes_is_spooled(monkeypatch, cache):
    # The early test keeps the exception of the late one: NUL bytes are UTF-16 text.
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO("wide text".encode("utf-16"))))
    with Corpus("-", encoding="utf-16", cache=cache, chunk_bytes=4) as corpus:
        assert corpus.n_chars == len("wide text")


# -- advice that fits the command ------------------------------------------------------------

@pytest.mark.parametrize("options, advice", [
    (("--encoding", "--errors"), "use --encoding NAME or --errors replace"),
    (("--encoding",), "use --encoding NAME"),
    ((), "convert it to UTF-8"),
])
def test_decoding_advice_names_only_the_options_given(tmp_path, options, advice):
    bad = write_bytes(tmp_path, "café".encode("latin-1"), "latin1.txt")
    with pytest.raises(CorpusError) as error:
        read_text(bad, options=options)
    assert str(error.value).endswith(f"bad byte at offset 3; {advice}")
    with pytest.raises(CorpusError) as error:
        read_text(write_bytes(tmp_path, LONE_SURROGATES), "utf-7", options=options)
    assert str(error.value).endswith(advice)
