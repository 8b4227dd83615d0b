"""Tests of charrnn.vocab: ordering, encode/decode, the unknown symbol, folding rare
characters, and the plain-data form stored in checkpoints."""

import json
import random
from collections import Counter

import numpy as np
import pytest

from charrnn.vocab import UNKNOWN_DISPLAY, Vocab, code_points

WORLD = "Hello, wörld! 你好，世界。🎉 emoji 👍🏽 and tabs\tand\nnewlines\r\n"


def test_chars_are_in_code_point_order_whatever_the_text_order(tiny_text):
    characters = list(tiny_text + WORLD)
    vocabs = []
    for seed in range(3):
        random.Random(seed).shuffle(characters)
        vocabs.append(Vocab.from_text("".join(characters)))
    assert vocabs[0] == vocabs[1] == vocabs[2]
    vocab = vocabs[0]
    assert list(vocab.chars) == sorted(set(tiny_text + WORLD), key=ord)
    counts = Counter(tiny_text + WORLD)
    assert vocab.counts == tuple(counts[ch] for ch in vocab.chars)
    assert not vocab.has_unknown and vocab.unknown_id is None
    assert vocab.size == len(vocab.chars)


def test_ids_follow_code_points():
    vocab = Vocab.from_text("cab")
    ids, unknown = vocab.encode("abcab")
    assert ids.tolist() == [0, 1, 2, 0, 1]
    assert not unknown.any()


@pytest.mark.parametrize("text", [WORLD, "世界" * 3, "🎉👍🏽🎉", "a", "\n"])
def test_encode_decode_round_trip(text):
    vocab = Vocab.from_text(WORLD)
    ids, unknown = vocab.encode(text)
    assert ids.shape == unknown.shape == (len(text),)  # one id per code point
    assert not unknown.any()
    assert vocab.decode(ids) == text
    assert ids.dtype == np.uint8
    assert ids.max() < vocab.size


def test_non_bmp_characters_are_one_id_each():
    vocab = Vocab.from_text("a🎉b")
    assert vocab.chars == ("a", "b", "🎉")
    assert vocab.encode("🎉a🎉")[0].tolist() == [2, 0, 2]


def test_large_vocabulary_uses_uint16_and_round_trips():
    text = "".join(chr(0x4E00 + k) for k in range(300)) + "abc🎉"
    vocab = Vocab.from_text(text)
    assert vocab.size == 304
    ids, _ = vocab.encode(text[::-1])
    assert ids.dtype == np.uint16
    assert vocab.decode(ids) == text[::-1]
    assert vocab.decode(vocab.encode(text)[0]) == text


def test_unknown_characters_without_an_unknown_symbol_are_dropped():
    vocab = Vocab.from_text("abc")
    ids, unknown = vocab.encode("a世bzc🎉")
    assert unknown.tolist() == [False, True, False, True, False, True]
    assert vocab.decode(ids) == "abc"
    ids, unknown = vocab.encode("世界")  # nothing known at all
    assert ids.size == 0 and unknown.all()


def test_empty_vocabulary_knows_nothing():
    vocab = Vocab.from_text("")
    ids, unknown = vocab.encode("ab")
    assert vocab.size == 0 and ids.size == 0 and unknown.all()


def test_min_count_folds_rare_characters_into_the_unknown_symbol():
    vocab = Vocab.from_text("aaaabbbccd世", min_count=2)
    assert vocab.chars == ("a", "b", "c")
    assert vocab.counts == (4, 3, 2)
    assert vocab.has_unknown and vocab.unknown_id == 3 and vocab.size == 4
    ids, unknown = vocab.encode("ad世b🎉")
    assert ids.tolist() == [0, 3, 3, 1, 3]  # unseen and folded characters alike
    assert unknown.tolist() == [False, True, True, False, True]
    assert vocab.decode(ids) == f"a{UNKNOWN_DISPLAY}{UNKNOWN_DISPLAY}b{UNKNOWN_DISPLAY}"
    skipped, unknown = vocab.encode("ad世b🎉", skip_unknown=True)
    assert skipped.tolist() == [0, 1] and unknown.sum() == 3


def test_max_size_keeps_the_most_frequent_characters():
    # counts: e 5, d 4, a 3, c 3, b 1; the tie between a and c goes to the lower code point
    vocab = Vocab.from_text("eeeee" "dddd" "aaa" "ccc" "b", max_size=3)
    assert vocab.chars == ("a", "d", "e")  # still in code-point order
    assert vocab.counts == (3, 4, 5)
    assert vocab.has_unknown and vocab.size == 4
    assert vocab.encode("abcde")[0].tolist() == [0, 3, 3, 1, 2]


def test_max_size_and_min_count_together():
    vocab = Vocab.from_text("aaaa" "bbb" "cc" "d", max_size=2, min_count=3)
    assert vocab.chars == ("a", "b") and vocab.has_unknown
    vocab = Vocab.from_text("aaaa" "bbb" "cc" "d", max_size=10, min_count=1)
    assert vocab.chars == ("a", "b", "c", "d") and not vocab.has_unknown


def test_dict_round_trip_through_json():
    for vocab in (Vocab.from_text(WORLD), Vocab.from_text(WORLD, min_count=2)):
        data = json.loads(json.dumps(vocab.to_dict(), ensure_ascii=False))
        again = Vocab.from_dict(data)
        assert again == vocab
        assert again.encode(WORLD)[0].tolist() == vocab.encode(WORLD)[0].tolist()
    assert Vocab.from_text(WORLD, min_count=2).to_dict()["has_unknown"] is True


@pytest.mark.parametrize("data", [
    {"chars": "ba", "counts": [1, 1]},  # not in code-point order
    {"chars": "aab", "counts": [1, 1, 1]},  # duplicate
    {"chars": "ab", "counts": [1]},  # counts do not match
])
def test_from_dict_rejects_inconsistent_data(data):
    with pytest.raises(ValueError, match="sorted list of distinct"):
        Vocab.from_dict(data)


def test_from_dict_defaults_to_no_unknown_symbol():
    vocab = Vocab.from_dict({"chars": "ab", "counts": [2, 1]})
    assert vocab == Vocab(("a", "b"), (2, 1), False)


def test_code_points_are_one_per_character():
    assert code_points("a🎉中\n").tolist() == [97, 0x1F389, 0x4E2D, 10]
    assert code_points("").size == 0


def test_id_table_agrees_with_encode():
    vocab = Vocab.from_text(WORLD)
    codes = code_points(WORLD)
    table = vocab.id_table(int(codes.max()) + 1)
    assert table[codes].tolist() == vocab.encode(WORLD)[0].tolist()
    assert table[ord("q")] == -1  # not in the vocabulary, and no unknown symbol


def test_id_table_shorter_than_the_vocabulary_and_with_an_unknown_symbol():
    vocab = Vocab.from_text("ab中")
    assert vocab.id_table(99).tolist()[97:] == [0, 1]  # 中 lies beyond: left out
    folded = Vocab.from_text("aaab中", min_count=2)
    table = folded.id_table(0x4E2E)
    assert table[ord("a")] == 0
    assert table[ord("b")] == table[ord("中")] == table[ord("z")] == folded.unknown_id
