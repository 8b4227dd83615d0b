"""Preparing corpora: counting characters and caching ids, ready for batches.py.

Text comes from a path or '-' (stdin), decoded as UTF-8 unless told otherwise, chunk by
chunk (textfile.py), so a corpus is never held whole for training: one
streaming pass counts its code points (numpy bincount per chunk), a second writes its
ids in the smallest integer type that fits to a cache file named after the content hash
and the vocabulary, and training reads each batch from that file (IdFile). A second run
on the same bytes only re-hashes them (hashlib; docs/corpora.md, "The id cache") and
finds everything cached, once it has checked that no cached id lies past the vocabulary
(a damaged file).

The ids are then split and cut into truncated-BPTT batches by batches.py.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
import tempfile

import numpy as np

from .runtime import prune_unused, user_cache_dir
from .textfile import (
    CHUNK_BYTES,
    DECODING_OPTIONS,
    REPLACEMENT,
    SURROGATES,
    CorpusError,
    empty_corpus,
    is_stream,
    iter_text,
    lone_surrogate,
    lookup_codec,
    open_binary,
    refuse_binary,
)
from .vocab import code_points

CACHE_ENV = "CHARRNN_CACHE_DIR"
CACHE_LAYOUT = 1  # part of every cache key: bump it when the file layout changes
# A corpus's cached counts and ids (as big as the corpus) are removed once no run has
# used them for this long; any later run on the same text rebuilds them.
CACHE_KEEP_DAYS = 30
CACHE_ENTRY = re.compile(r"[0-9a-f]{32}(\.counts\.json|-[0-9a-f]{16}\.[a-z0-9]+)")
# What a run killed mid-write leaves behind: a spool of standard input, or an entry's
# temporary (_atomic_write). Never in use by a later run; removed after as long.
CACHE_TEMPORARY = re.compile(r"spool-[a-z0-9_]+\.tmp|(" + CACHE_ENTRY.pattern
                             + r")\.tmp[0-9]+-[0-9a-f]{8}")


def cache_dir() -> str:
    """Where corpus ids are cached: $CHARRNN_CACHE_DIR, else $XDG_CACHE_HOME/charrnn,
    else ~/.cache/charrnn."""
    if os.environ.get(CACHE_ENV):
        return os.environ[CACHE_ENV]
    return user_cache_dir()


class Corpus:
    """A corpus prepared for training without holding it in memory: its character
    counts, and its ids under a vocabulary, read from the cache in pieces (IdFile).

    Use as a context manager: '-' (stdin) or a pipe is spooled to a temporary file in
    the cache directory, removed when the block ends; the ids stay readable after it.
    `stdin` replaces sys.stdin's bytes for '-' (any object with read(size)).
    """

    def __init__(self, path: str, encoding: str = "utf-8", errors: str = "strict",
                 cache: str | None = None, chunk_bytes: int | None = None, stdin=None):
        self.encoding, self.errors = encoding, errors
        self.chunk_bytes = chunk_bytes or CHUNK_BYTES
        self.cache = cache or cache_dir()
        self.name = "stdin" if path == "-" else path
        self.source, self._spool = path, None
        self.codec = lookup_codec(encoding)
        self.lone_surrogates = False  # the decoded text has some: code_point_chunks fixes them
        try:
            os.makedirs(self.cache, exist_ok=True)
        except OSError as error:
            raise self.cache_error(error) from None
        try:
            if path == "-" and stdin is not None:  # e.g. rank 0's stdin, broadcast
                self.source = self._spool_copy(stdin)
            elif path == "-" or is_stream(path):  # can be read only once: keep a copy
                with open_binary(path) as (handle, _):
                    self.source = self._spool_copy(handle)
            digest, size = self._hash()
            if not size:
                raise empty_corpus(self.name)
            self.key = hashlib.sha256(f"{CACHE_LAYOUT}\0{digest}\0{self.codec.name}\0"
                                      f"{errors}".encode()).hexdigest()[:32]
            self.counts_cached = True
            decoded_counts = self._cached_counts()
            if decoded_counts is None:
                self.counts_cached = False
                decoded_counts = self._count()
                self._write_counts(decoded_counts)
            prune_cache(self.cache, keep=self.key)
            self.counts = self._without_surrogates(decoded_counts)
        except BaseException:
            self.close()
            raise
        self.n_chars = sum(self.counts.values())
        if not self.n_chars:
            self.close()
            raise empty_corpus(self.name)

    # -- lifetime ----------------------------------------------------------------------
    def close(self) -> None:
        if self._spool:
            with contextlib.suppress(OSError):
                os.unlink(self._spool)
            self._spool = None

    def __enter__(self) -> Corpus:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def cache_error(self, error: OSError) -> CorpusError:
        return CorpusError(f"cannot use the corpus cache {self.cache}: "
                           f"{error.strerror or error}; free some space or set "
                           f"{CACHE_ENV} to a writable directory")

    # -- reading -----------------------------------------------------------------------
    def _spool_copy(self, source) -> str:
        handle = tempfile.NamedTemporaryFile(dir=self.cache, prefix="spool-", suffix=".tmp",
                                             delete=False)
        self._spool = handle.name  # so close() removes it whatever happens next
        spooled = 0  # bytes so far

        def read():
            try:
                data = source.read(self.chunk_bytes)
            except OSError as error:  # the source's fault, not the cache's
                raise CorpusError(f"{self.name}: cannot read: {error.strerror or error}") \
                    from None
            # Now, not when decoding: an endless stream (/dev/zero) would fill the disk.
            refuse_binary(self.name, self.codec, data, spooled)
            return data
        try:
            with handle:
                while data := read():
                    handle.write(data)
                    spooled += len(data)
        except OSError as error:
            raise self.cache_error(error) from None
        return handle.name

    def _hash(self) -> tuple[str, int]:
        digest, size = hashlib.sha256(), 0
        with open_binary(self.source) as (handle, _):
            while data := handle.read(self.chunk_bytes):
                digest.update(data)
                size += len(data)
        return digest.hexdigest(), size

    def code_point_chunks(self):
        """The corpus as one uint32 array of code points per chunk read, lone surrogates
        replaced or dropped (--errors) once counting has found some."""
        with open_binary(self.source) as (handle, _):
            for text in iter_text(handle, self.name, self.encoding, self.errors,
                                  self.chunk_bytes):
                codes = code_points(text)
                if self.lone_surrogates:
                    lone = (codes >= 0xD800) & (codes <= 0xDFFF)
                    codes = np.where(lone, ord(REPLACEMENT), codes).astype(np.uint32) \
                        if self.errors == "replace" else codes[~lone]
                yield codes

    def _count(self) -> dict[str, int]:
        totals = np.zeros(128, np.int64)  # (max code point + 1,) occurrences
        for codes in self.code_point_chunks():
            found = np.bincount(codes)
            if found.size > totals.size:
                totals = np.concatenate([totals, np.zeros(found.size - totals.size, np.int64)])
            totals[:found.size] += found
        return {chr(code): int(totals[code]) for code in np.flatnonzero(totals)}

    def _without_surrogates(self, counts: dict[str, int]) -> dict[str, int]:
        """counts as training sees them: lone surrogates refused (--errors strict),
        else counted as U+FFFD or dropped. A test of the distinct characters, not of the
        text: free for any corpus without them."""
        lone = [ch for ch in counts if SURROGATES.match(ch)]
        if not lone:
            return counts
        if self.errors == "strict":
            raise lone_surrogate(self.name, self.codec.name, lone[0], DECODING_OPTIONS)
        self.lone_surrogates = True
        kept = {ch: n for ch, n in counts.items() if ch not in lone}
        if self.errors == "replace":
            kept[REPLACEMENT] = kept.get(REPLACEMENT, 0) + sum(counts[ch] for ch in lone)
        return dict(sorted(kept.items()))  # code-point order, like _count's

    # -- the cache ---------------------------------------------------------------------
    def _counts_path(self) -> str:
        return os.path.join(self.cache, f"{self.key}.counts.json")

    def _cached_counts(self) -> dict[str, int] | None:
        try:
            with open(self._counts_path(), encoding="utf-8") as handle:
                data = json.load(handle)
            counts = {chr(code): int(n) for code, n in zip(data["code_points"],
                                                           data["counts"], strict=True)}
        except (OSError, ValueError, KeyError, TypeError):
            return None  # absent or damaged: count again
        if list(counts) != sorted(set(counts)) or min(counts.values(), default=0) < 1:
            return None  # not what _count writes
        return counts

    def _write_counts(self, counts: dict[str, int]) -> None:
        data = {"code_points": [ord(ch) for ch in counts], "counts": list(counts.values())}
        self._atomic_write(self._counts_path(),
                           lambda handle: handle.write(json.dumps(data).encode()))

    def _atomic_write(self, path: str, write) -> None:
        """Write through a temporary file renamed into place, so concurrent runs and
        crashes never leave a half-written cache file under its final name. The
        temporary name is unique (not just the pid): ranks of one MPI job on machines
        sharing the cache, or threads, may write the same file at once."""
        temporary = f"{path}.tmp{os.getpid()}-{secrets.token_hex(4)}"
        try:
            with open(temporary, "xb") as handle:
                write(handle)
            os.replace(temporary, path)
        except BaseException as error:  # a full disk, a bad cache entry, Ctrl-C
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            if isinstance(error, OSError):
                raise self.cache_error(error) from None
            raise

    def ids_path(self, vocab) -> str:
        vocab_key = hashlib.sha256(json.dumps([vocab.chars, vocab.has_unknown]).encode())
        return os.path.join(self.cache, f"{self.key}-{vocab_key.hexdigest()[:16]}."
                                        f"{np.dtype(vocab.dtype()).name}")

    def ids(self, vocab) -> IdFile:
        """The corpus as ids of vocab, read on demand from the cache (written on first
        use). Characters outside vocab need its unknown symbol."""
        if self.missing(vocab) and not vocab.has_unknown:
            raise ValueError("the vocabulary lacks characters of the corpus and has no "
                             "unknown symbol")
        dtype = np.dtype(vocab.dtype())
        path = self.ids_path(vocab)
        # An id past the vocabulary (a damaged file) would make the kernels read out of
        # bounds: such an entry is stale, and rebuilt like a missing one.
        cached = IdFile(path, dtype) if os.path.exists(path) and \
            os.path.getsize(path) == self.n_chars * dtype.itemsize else None
        self.ids_cached = cached is not None and largest_id(cached) < vocab.size
        if self.ids_cached:
            return cached
        size = ord(max(self.counts)) + 1
        table = vocab.id_table(size)
        table = np.maximum(table, 0).astype(dtype)  # -1 only where no character is
        counted = np.zeros(size, bool)  # (max code point + 1,)
        counted[[ord(ch) for ch in self.counts]] = True

        def write(handle):
            for codes in self.code_point_chunks():
                # A code point the counts lack means they are damaged (a cached file):
                # its id would be another character's.
                if codes.size and (codes.max() >= size or not counted[codes].all()):
                    with contextlib.suppress(OSError):
                        os.unlink(self._counts_path())
                    raise CorpusError(f"the cached counts of {self.name} were damaged "
                                      "and are now removed: run again")
                handle.write(table[codes].tobytes())
        self._atomic_write(path, write)
        return IdFile(path, dtype)

    # -- against a vocabulary ------------------------------------------------------------
    def missing(self, vocab) -> list[str]:
        """Characters of the corpus that vocab lacks, in code-point order."""
        known = set(vocab.chars)
        return [ch for ch in self.counts if ch not in known]

    def id_counts(self, vocab) -> np.ndarray:
        """(V,) occurrences of each id of vocab in the corpus (the unknown symbol's are
        those of every character folded into it)."""
        table = vocab.id_table(ord(max(self.counts)) + 1)
        counts = np.zeros(vocab.size, np.int64)
        for ch, n in self.counts.items():
            if table[ord(ch)] >= 0:
                counts[table[ord(ch)]] += n
        return counts


def prune_cache(cache: str, keep: str, days: float = CACHE_KEEP_DAYS) -> None:
    """Mark the cache entries of corpus key `keep` as used now, and remove other
    corpora's counts and ids that no run has used for `days`, and temporaries that
    crashed runs left and nothing has written for as long. Only names this module
    writes are touched (kernel caches and anything else in the directory stay). A run
    still reading a removed ids file keeps its open handle (POSIX)."""
    prune_unused(cache, f"{CACHE_ENTRY.pattern}|{CACHE_TEMPORARY.pattern}",
                 lambda name: name.startswith(keep) and not CACHE_TEMPORARY.fullmatch(name),
                 days)


class IdFile:
    """A read-only 1-D id array kept in a file and read on demand: slicing gives
    another IdFile, numpy conversion reads the bytes. Nothing is mapped into memory, so
    the process's RSS does not grow with the corpus (a memory map's touched pages count
    in RSS, a whole page-cache folio each: docs/corpora.md, "Big corpora"). Reads go
    through the page cache, so a warm corpus costs no disk I/O."""

    def __init__(self, path: str, dtype, start: int = 0, stop: int | None = None,
                 handle=None):
        self.path, self.dtype = path, np.dtype(dtype)
        self._handle = handle or open(path, "rb", buffering=0)  # shared by slices
        if stop is None:
            stop = os.fstat(self._handle.fileno()).st_size // self.dtype.itemsize
        self.start, self.stop = start, stop

    def __len__(self) -> int:
        return self.stop - self.start

    @property
    def shape(self) -> tuple[int]:
        return (len(self),)

    def __getitem__(self, key: slice) -> IdFile:
        if not isinstance(key, slice):
            raise TypeError("an IdFile takes slices; np.asarray(ids[a:b]) reads them")
        start, stop, step = key.indices(len(self))
        if step != 1:
            raise ValueError("an IdFile slice has step 1")
        return IdFile(self.path, self.dtype, self.start + start,
                      self.start + max(start, stop), self._handle)

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        out = np.empty(len(self), self.dtype)  # (stop - start,)
        self._handle.seek(self.start * self.dtype.itemsize)
        if self._handle.readinto(memoryview(out).cast("B")) != out.nbytes:
            raise CorpusError(f"{self.path} is shorter than expected: remove it (it is "
                              "a cache file) and train again")
        return out if dtype is None else out.astype(dtype)


def largest_id(ids: IdFile) -> int:
    """The largest id in ids (0 if none), read a chunk at a time: a fraction of the cost
    of re-hashing the corpus (docs/corpora.md, "The id cache")."""
    step = CHUNK_BYTES * 16 // ids.dtype.itemsize  # ids per read: 16 MB
    return max((int(np.asarray(ids[start:start + step]).max())
                for start in range(0, len(ids), step)), default=0)


def corpus_ids(text: str, vocab) -> tuple[np.ndarray, list[str]]:
    """Encode a corpus with a given vocabulary. Returns (ids, characters the vocabulary
    lacks); those are mapped to its unknown symbol, or dropped if it has none."""
    ids, unknown = vocab.encode(text)
    missing = sorted(set(np.asarray(list(text))[unknown])) if unknown.any() else []
    return ids, missing
