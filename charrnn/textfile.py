"""Reading text from a path or '-' (stdin): opened, decoded chunk by chunk with an
incremental decoder, and refused in one line (CorpusError) when it is not usable text:
a directory, a binary file, bytes the encoding does not allow, a codec that does not
make text, lone surrogates. Corpora (corpus.py), primes and texts to score all come
through here, and each command's errors advise only the options it offers.
"""

from __future__ import annotations

import codecs
import contextlib
import os
import re
import stat
import sys

CHUNK_BYTES = 1 << 20  # bytes per read: bounded memory, few Python round trips (docs/corpora.md)
SNIFF_BYTES = 65536  # a NUL byte this near the start means a binary file


class CorpusError(ValueError):
    """A corpus that cannot be used; the message says how to fix it."""


@contextlib.contextmanager
def open_binary(path: str):
    """Yield (binary handle, name for messages) for a path or '-' (stdin)."""
    if path == "-":
        yield sys.stdin.buffer, "stdin"
        return
    if os.path.isdir(path):
        raise CorpusError(f"{path} is a directory: give a text file (or '-' and "
                          f"`cat {path}/* |` in front)")
    try:
        handle = open(path, "rb")
    except FileNotFoundError:
        raise CorpusError(f"{path}: no such file") from None
    except OSError as error:
        raise CorpusError(f"{path}: cannot read: {error.strerror}") from None
    with handle:
        yield handle, path


def is_stream(path: str) -> bool:
    """True for a pipe or device (`<(cat a b)`, /dev/stdin), which can be read once."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False  # open_binary says what is wrong
    return not (stat.S_ISREG(mode) or stat.S_ISDIR(mode))


def lookup_codec(encoding: str) -> codecs.CodecInfo:
    """The codec of a text encoding; bytes-to-bytes codecs (base64, zlib) and rot13 are
    refused the way io.TextIOWrapper refuses them."""
    try:
        codec = codecs.lookup(encoding)
    except LookupError:
        raise CorpusError(f"unknown encoding {encoding!r}: try utf-8, latin-1, cp1252") from None
    if not getattr(codec, "_is_text_encoding", True):
        raise CorpusError(f"{encoding!r} is not a text encoding: try utf-8, latin-1, cp1252")
    return codec


# The options a command offers to get past undecodable text (read_text, iter_text): its
# errors suggest only those. `train` has both; `score` only --encoding.
DECODING_OPTIONS = ("--encoding", "--errors")


def decoding_advice(options, bad_bytes: bool = True, encodings: str = "NAME") -> str:
    """How to read a text that did not decode, with the options the command offers;
    --errors only where it helps (bad bytes, not a missing byte-order mark)."""
    fixes = [fix for option, fix in (("--encoding", f"--encoding {encodings}"),
                                     ("--errors", "--errors replace"))
             if option in options and (bad_bytes or option != "--errors")]
    return "use " + " or ".join(fixes) if fixes else "convert it to UTF-8"


def refuse_binary(name: str, codec: codecs.CodecInfo, data: bytes, offset: int) -> None:
    """The binary-file test, given the bytes read from `offset` on: a NUL byte in the
    first SNIFF_BYTES, except in UTF-16/32 where NUL bytes are normal."""
    wide = codec.name.startswith(("utf-16", "utf-32"))
    if not wide and offset < SNIFF_BYTES and b"\x00" in data[:SNIFF_BYTES - offset]:
        raise CorpusError(f"{name} looks like a binary file (it contains NUL bytes): "
                          "give a text file")


# UTF-16 halves: not characters, and not writable as UTF-8 (the vocabulary in a
# checkpoint). Strict UTF-8/16/32 decoders never yield one alone; utf-7 and
# unicode_escape do.
SURROGATES = re.compile("[\ud800-\udfff]")
REPLACEMENT = "\ufffd"


def lone_surrogate(name: str, encoding: str, surrogate: str, options) -> CorpusError:
    return CorpusError(f"{name} decodes as {encoding} to U+{ord(surrogate):04X}, a lone "
                       f"surrogate that is not a character; {decoding_advice(options)}")


def iter_text(handle, name: str, encoding: str = "utf-8", errors: str = "strict",
              chunk_bytes: int | None = None, options=DECODING_OPTIONS):
    """Decode a binary stream chunk by chunk, yielding str pieces. A binary file and an
    undecodable byte are CorpusErrors, whose advice names only `options` (those the
    command offers); the offset reported is from the start of the stream, whichever
    chunk the bad sequence starts in (or straddles). Lone surrogates are left to the
    caller (Corpus, read_text): finding them here would double the cost of decoding."""
    codec = lookup_codec(encoding)
    chunk_bytes = chunk_bytes or CHUNK_BYTES
    decoder = codec.incrementaldecoder(errors)
    offset = 0  # bytes read so far
    while True:
        try:
            data = handle.read(chunk_bytes)
        except OSError as error:
            raise CorpusError(f"{name}: cannot read: {error.strerror or error}") from None
        refuse_binary(name, codec, data, offset)
        # Bytes of a character cut by the previous chunk: the decoder holds them, and the
        # error position it reports counts from the first of them.
        pending = len(decoder.getstate()[0])
        try:
            text = decoder.decode(data, not data)
        except UnicodeDecodeError as error:
            raise CorpusError(f"{name} is not valid {error.encoding}: bad byte at offset "
                              f"{offset - pending + error.start}; "
                              f"{decoding_advice(options)}") from None
        except UnicodeError as error:  # no such byte: e.g. "does not start with BOM"
            byte_order = f"{codec.name}-le or {codec.name}-be" \
                if codec.name in ("utf-16", "utf-32") else "NAME"
            raise CorpusError(f"{name} is not valid {codec.name}: {error}; "
                              f"{decoding_advice(options, False, byte_order)}") from None
        offset += len(data)
        if text:
            yield text
        if not data:
            return


def empty_corpus(name: str) -> CorpusError:
    return CorpusError(f"{name} is empty: give a text file with some characters in it")


def read_text(path: str, encoding: str = "utf-8", errors: str = "strict",
              options=DECODING_OPTIONS) -> str:
    """Read a whole text (a prime, a text to score) from a path or '-' (stdin). Errors
    advise only `options`, the decoding options the command offers."""
    with open_binary(path) as (handle, name):
        text = "".join(iter_text(handle, name, encoding, errors, options=options))
    if surrogate := SURROGATES.search(text):
        if errors == "strict":
            raise lone_surrogate(name, lookup_codec(encoding).name, surrogate.group(),
                                 options)
        text = SURROGATES.sub(REPLACEMENT if errors == "replace" else "", text)
    if not text:
        raise empty_corpus(name)
    return text
