"""The tokenizer: characters (Unicode code points) <-> integer ids.

Ids follow code-point order, so a vocabulary is deterministic for a given set of
characters and encoding is one vectorised searchsorted. An optional unknown symbol takes
the last id; rare characters can be folded into it (never emitted when sampling).
The vocabulary travels inside every checkpoint as plain JSON data.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

UNKNOWN_DISPLAY = "\ufffd"  # how the unknown symbol is shown when decoded


def code_points(text: str) -> np.ndarray:
    """The code points of text, one uint32 per character (astral ones included)."""
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)


@dataclass(frozen=True)
class Vocab:
    chars: tuple[str, ...]  # known characters, in code-point order
    counts: tuple[int, ...]  # occurrences of each in the corpus it was built from
    has_unknown: bool = False  # if true, id len(chars) stands for every other character

    def __post_init__(self):
        object.__setattr__(self, "_code_points",
                           np.array([ord(ch) for ch in self.chars], dtype=np.int64))

    @classmethod
    def from_counter(cls, counter: Counter, max_size: int = 0, min_count: int = 1) -> Vocab:
        """Keep characters seen at least min_count times, at most max_size of the most
        frequent (0 = no limit); anything dropped becomes the unknown symbol."""
        kept = [(ch, n) for ch, n in counter.items() if n >= min_count]
        if max_size and len(kept) > max_size:
            kept = sorted(kept, key=lambda item: (-item[1], item[0]))[:max_size]
        kept.sort(key=lambda item: item[0])
        has_unknown = len(kept) < len(counter)
        return cls(tuple(ch for ch, _ in kept), tuple(n for _, n in kept), has_unknown)

    @classmethod
    def from_text(cls, text: str, max_size: int = 0, min_count: int = 1) -> Vocab:
        return cls.from_counter(Counter(text), max_size, min_count)

    @property
    def size(self) -> int:
        return len(self.chars) + int(self.has_unknown)

    @property
    def unknown_id(self) -> int | None:
        return len(self.chars) if self.has_unknown else None

    def dtype(self):
        """The smallest unsigned integer type that holds every id."""
        return np.uint8 if self.size <= 256 else np.uint16 if self.size <= 65536 else np.uint32

    def encode(self, text: str, skip_unknown: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Return (ids, unknown_mask over text's characters). Characters outside the
        vocabulary map to the unknown id if there is one; otherwise, or with
        skip_unknown, they are dropped from ids."""
        codes = code_points(text).astype(np.int64)
        positions = np.searchsorted(self._code_points, codes)
        positions = np.minimum(positions, max(len(self.chars) - 1, 0))
        known = self._code_points[positions] == codes if len(self.chars) else codes < 0
        ids = positions.astype(self.dtype())
        unknown = ~known
        if self.has_unknown and not skip_unknown:
            ids[unknown] = self.unknown_id
            return ids, unknown
        return ids[known], unknown

    def id_table(self, size: int) -> np.ndarray:
        """ids indexed by code point, for code points below size: table[ord(ch)] is ch's
        id; every other code point gets the unknown id, or -1 without one. Encoding a
        big corpus is then one gather per chunk instead of a search."""
        table = np.full(size, -1 if self.unknown_id is None else self.unknown_id, np.int64)
        known = self._code_points[self._code_points < size]  # a prefix: they are sorted
        table[known] = np.arange(known.size)
        return table

    def decode(self, ids) -> str:
        table = self.chars + ((UNKNOWN_DISPLAY,) if self.has_unknown else ())
        return "".join(table[i] for i in ids)

    def to_dict(self) -> dict:
        return {"chars": "".join(self.chars), "counts": list(self.counts),
                "has_unknown": self.has_unknown}

    @classmethod
    def from_dict(cls, data: dict) -> Vocab:
        chars = tuple(data["chars"])
        counts = tuple(int(n) for n in data["counts"])
        if len(chars) != len(counts) or list(chars) != sorted(set(chars)):
            raise ValueError("vocabulary is not a sorted list of distinct characters")
        return cls(chars, counts, bool(data.get("has_unknown", False)))

    def preview(self, limit: int = 60) -> str:
        """A printable glimpse of the vocabulary for humans."""
        shown = "".join(ch if ch.isprintable() and ch != " " else repr(ch)[1:-1] or "?"
                        for ch in self.chars[:limit])
        return shown + ("..." if len(self.chars) > limit else "")
