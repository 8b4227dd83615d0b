"""Any corpus through `charrnn train`: trained from cached ids read on demand (never the
whole text), reused on a second run, piped in with `cat`, in any language and encoding,
with rare characters folded; and every unusable corpus or option refused in one line
with nothing overwritten. Big-corpus memory is measured by `make bench-corpus`, not
here: these corpora are a few KB.
"""

import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from clitools import assert_fails, run

import charrnn.corpus
import charrnn.textfile
import charrnn.trainer
import charrnn.training_run
from charrnn.checkpoint import load_trained

TINY = ["--hidden", "16", "--layers", "1", "--embed", "8", "--seq-len", "16",
        "--batch-size", "4", "--steps", "4", "--threads", "1", "--seed", "1"]
CONSOLE_SCRIPT = Path(sys.executable).with_name("charrnn")


@pytest.fixture
def corpus(tmp_path, tiny_text):
    path = tmp_path / "corpus.txt"
    path.write_text(tiny_text, encoding="utf-8")
    return path


def hanzi_text(distinct=400, size=6000, seed=3):
    """Lines of CJK characters, more distinct ones than a uint8 id can hold."""
    rng = random.Random(seed)
    chars = [chr(0x4E00 + k) for k in range(distinct)]
    body = [rng.choice(chars) for _ in range(size)]
    lines = ["".join(body[k:k + 12]) + "。\n" for k in range(0, size, 12)]
    return "".join(chars) + "\n" + "".join(lines)


# ---------------------------------------------------------------- memory-mapped, cached
def test_training_reads_ids_from_the_cache_never_the_whole_text(corpus, tmp_path,
                                                                    monkeypatch, tiny_text):
    seen = {}
    original = charrnn.trainer.Trainer.__init__

    def spy(self, model, vocab, train_ids, val_ids, *args, **kwargs):
        seen.update(train=train_ids, val=val_ids)
        original(self, model, vocab, train_ids, val_ids, *args, **kwargs)

    def no_whole_text(*args, **kwargs):
        raise AssertionError("the corpus was read whole")
    monkeypatch.setattr(charrnn.trainer.Trainer, "__init__", spy)
    monkeypatch.setattr(charrnn.textfile, "read_text", no_whole_text)
    monkeypatch.setattr(charrnn.corpus, "CHUNK_BYTES", 1000)  # several chunks
    result = run("train", corpus, "-o", tmp_path / "m.ckpt", *TINY)
    assert result.exit_code == 0, result.stderr
    for ids in seen.values():
        assert isinstance(ids, charrnn.corpus.IdFile) and ids.dtype == np.uint8
    assert len(seen["train"]) + len(seen["val"]) == len(tiny_text)
    _, vocab, _, _ = load_trained(tmp_path / "m.ckpt")
    assert vocab.decode(np.asarray(seen["train"][:200])) == tiny_text[:200]


def test_a_second_run_reuses_the_cached_ids_and_trains_the_same(corpus, tmp_path,
                                                                monkeypatch):
    monkeypatch.setenv("CHARRNN_CACHE_DIR", str(tmp_path / "fresh-cache"))
    first = run("train", corpus, "-o", tmp_path / "a.ckpt", *TINY)
    second = run("train", corpus, "-o", tmp_path / "b.ckpt", *TINY)
    assert first.exit_code == second.exit_code == 0
    assert "ids cached in" in first.stderr and "ids reused from" in second.stderr
    assert np.array_equal(load_trained(tmp_path / "a.ckpt")[0].flat,
                          load_trained(tmp_path / "b.ckpt")[0].flat)


@pytest.mark.slow  # a subprocess or a compile: `make test-fast` leaves it out
def test_cat_of_two_files_trains_like_the_joined_file(tmp_path, tiny_text, corpus_cache):
    if not CONSOLE_SCRIPT.exists():
        pytest.skip(f"{CONSOLE_SCRIPT} is not installed (run `make install`)")
    half = len(tiny_text) // 2
    (tmp_path / "a.txt").write_text(tiny_text[:half], encoding="utf-8")
    rare = "Äpfel 中文\n" * 2  # twice: characters seen once become the unknown symbol
    (tmp_path / "b.txt").write_text(tiny_text[half:] + rare, encoding="utf-8")
    (tmp_path / "ab.txt").write_text(tiny_text + rare, encoding="utf-8")
    done = subprocess.run(f"cat a.txt b.txt | '{CONSOLE_SCRIPT}' train - -o piped.ckpt "
                          + " ".join(TINY), shell=True, cwd=tmp_path, capture_output=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert run("train", tmp_path / "ab.txt", "-o", tmp_path / "file.ckpt", *TINY).exit_code == 0
    piped, from_file = load_trained(tmp_path / "piped.ckpt"), load_trained(tmp_path / "file.ckpt")
    assert piped[1] == from_file[1] and "中" in piped[1].chars
    assert np.array_equal(piped[0].flat, from_file[0].flat)
    assert not [name for name in os.listdir(corpus_cache) if name.startswith("spool-")]


# -------------------------------------------------------------------------- any language
def test_a_corpus_of_hundreds_of_hanzi_round_trips(tmp_path):
    text = hanzi_text()
    path = tmp_path / "zh.txt"
    path.write_text(text, encoding="utf-8")
    out = tmp_path / "zh.ckpt"
    result = run("train", path, "-o", out, *TINY)
    assert result.exit_code == 0, result.stderr
    _, vocab, _, _ = load_trained(out)
    assert vocab.size == len(set(text)) > 256 and np.dtype(vocab.dtype()) == np.uint16
    assert ".uint16" in result.stderr  # the cached ids use two bytes each
    sample = run("sample", out, "-n", "60", "--prime", "一丁", "--seed", "1", "--threads", "1")
    assert sample.exit_code == 0 and sample.stdout.startswith("一丁")
    assert len(sample.stdout) == 62 and set(sample.stdout) <= set(text)
    score = run("score", out, "--json", input=text[:500])
    assert score.exit_code == 0 and '"unknown_chars": 0' in score.stdout


def test_max_vocab_folds_rare_characters_and_resume_checks_it(tmp_path):
    text = hanzi_text(distinct=300)
    path = tmp_path / "zh.txt"
    path.write_text(text, encoding="utf-8")
    out = tmp_path / "m.ckpt"
    result = run("train", path, "-o", out, *TINY, "--max-vocab", "50")
    assert result.exit_code == 0, result.stderr
    assert "vocabulary: 50 of" in result.stderr and "unknown symbol" in result.stderr
    _, vocab, _, _ = load_trained(out)
    assert len(vocab.chars) == 50 and vocab.size == 51 and vocab.has_unknown
    assert run("train", path, "-o", out, "--resume", "--steps", "6", "--max-vocab", "50",
               "--threads", "1").exit_code == 0  # the same option again is no conflict
    message = assert_fails(run("train", path, "-o", out, "--resume", "--steps", "8",
                               "--max-vocab", "60", "--threads", "1"), code=2)
    assert "--max-vocab" in message
    assert load_trained(out)[2]["state"]["step"] == 6


def test_min_count_that_keeps_nothing_says_what_to_lower(corpus, tmp_path):
    message = assert_fails(run("train", corpus, "-o", tmp_path / "m.ckpt", *TINY,
                               "--min-count", "1000000"))
    assert "--min-count" in message and "lower" in message
    assert not (tmp_path / "m.ckpt").exists()


def test_min_count_folds_characters_seen_less_often(tmp_path, tiny_text):
    path = tmp_path / "c.txt"
    path.write_text(tiny_text + "§¶", encoding="utf-8")
    result = run("train", path, "-o", tmp_path / "m.ckpt", *TINY, "--min-count", "2")
    assert result.exit_code == 0, result.stderr
    _, vocab, _, _ = load_trained(tmp_path / "m.ckpt")
    assert "§" not in vocab.chars and "¶" not in vocab.chars and vocab.has_unknown


# ----------------------------------------------------------------------------- encodings
def test_a_bad_byte_is_reported_at_its_file_offset_across_chunks(tmp_path, monkeypatch,
                                                                 tiny_text):
    monkeypatch.setattr(charrnn.corpus, "CHUNK_BYTES", 7)
    data = tiny_text.encode("utf-8")[:1000] + "café".encode("latin-1") + b" and more\n" * 30
    path = tmp_path / "latin.txt"
    path.write_bytes(data)
    message = assert_fails(run("train", path, "-o", tmp_path / "m.ckpt", *TINY))
    assert "latin.txt" in message and "offset 1003;" in message
    assert "--encoding" in message and "--errors replace" in message
    for fix in (["--errors", "replace"], ["--encoding", "latin-1"]):
        result = run("train", path, "-o", tmp_path / f"{fix[1]}.ckpt", *TINY, *fix,
                     "--min-count", "1")  # keep the one é
        assert result.exit_code == 0, result.stderr
    assert "é" in load_trained(tmp_path / "latin-1.ckpt")[1].chars
    assert "\ufffd" in load_trained(tmp_path / "replace.ckpt")[1].chars


# ------------------------------------------------------------------------- big validation
def test_a_big_validation_split_is_capped_unless_asked(corpus, tmp_path, monkeypatch):
    monkeypatch.setattr(charrnn.defaults, "SCORED_VAL_CHARS_CAP", 50)
    result = run("train", corpus, "-o", tmp_path / "a.ckpt", *TINY)
    assert result.exit_code == 0 and "validating on the first 50 of" in result.stderr
    assert load_trained(tmp_path / "a.ckpt")[2]["options"]["val_chars"] == 50
    result = run("train", corpus, "-o", tmp_path / "b.ckpt", *TINY, "--val-chars", "0")
    assert result.exit_code == 0 and "validating on" not in result.stderr
    assert load_trained(tmp_path / "b.ckpt")[2]["options"]["val_chars"] == 0


# ------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize("name, content, says", [
    ("missing.txt", None, "no such file"),
    ("folder", "directory", "is a directory"),
    ("empty.txt", b"", "is empty"),
    ("binary.bin", bytes(range(256)) * 8, "binary"),
    ("latin1.txt", "caf\xe9 cr\xe8me\n".encode("latin-1") * 100, "--errors replace"),
    ("small.txt", b"tiny corpus\n", "lower --batch-size or --seq-len"),
])
def test_an_unusable_corpus_keeps_the_existing_checkpoint(tmp_path, tiny_text, name,
                                                          content, says):
    good = tmp_path / "good.txt"
    good.write_text(tiny_text, encoding="utf-8")
    out = tmp_path / "m.ckpt"
    assert run("train", good, "-o", out, *TINY).exit_code == 0
    before = {path.name: path.read_bytes() for path in tmp_path.glob("m*.ckpt")}
    corpus = tmp_path / name
    if content == "directory":
        corpus.mkdir()
    elif content is not None:
        corpus.write_bytes(content)
    message = assert_fails(run("train", corpus, "-o", out, "--force", *TINY))
    assert says in message and (name in message or name == "small.txt")
    assert {path.name: path.read_bytes() for path in tmp_path.glob("m*.ckpt")} == before


@pytest.mark.parametrize("args", [
    ["--max-vocab", "0"], ["--min-count", "0"], ["--seq-len", "0"], ["--batch-size", "0"],
    ["--val-fraction", "0.95"], ["--val-fraction", "nan"], ["--dropout", "1"],
    ["--lr", "0"], ["--lr", "inf"], ["--hidden", "0"], ["--layers", "17"],
    ["--embed", "-1"], ["--clip", "-1"], ["--val-chars", "-1"], ["--cell", "transformer"],
    ["--errors", "bogus"], ["--steps", "0"], ["--threads", "0"],
])
def test_out_of_range_options_are_usage_errors_and_write_nothing(corpus, tmp_path, args):
    out = tmp_path / "m.ckpt"
    result = run("train", corpus, "-o", out, *args)
    assert_fails(result, code=2)
    assert args[0] in result.stderr
    assert not out.exists()


def test_an_unusable_cache_directory_is_one_line_naming_the_fix(corpus, tmp_path,
                                                                monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    monkeypatch.setenv("CHARRNN_CACHE_DIR", str(blocker / "cache"))
    message = assert_fails(run("train", corpus, "-o", tmp_path / "m.ckpt", *TINY))
    assert "CHARRNN_CACHE_DIR" in message
    assert not (tmp_path / "m.ckpt").exists()
