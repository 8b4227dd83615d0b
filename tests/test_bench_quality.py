"""The quality benchmark's plumbing, without training: budgets, the split, the skip when
no corpus is found, and what reaches stdout (runs are stubbed; `make bench-quality`
trains for real)."""

import argparse
import json

import pytest

from charrnn.bench import quality as bench_quality
from charrnn.runtime import BLAS_THREAD_VARIABLES


@pytest.fixture(autouse=True)
def blas_environment(monkeypatch):
    """main() sets the BLAS thread variables as charrnn does; undo it after each test."""
    for name in BLAS_THREAD_VARIABLES:
        monkeypatch.setenv(name, "1")


def fake_run(budget, train, val, directory):
    """What run_charrnn returns, from the split it was given instead of a model."""
    return {"budget_s": budget, "bits_per_char": 2.0, "nats_per_char": 1.386,
            "adapt_nats_per_char": 1.2345,
            "val_chars": len(val.read_text(encoding="utf-8")) - 1, "unknown_chars": 0,
            "steps": 10, "chars_seen": 20480, "train_seconds": budget, "wall_s": budget + 1,
            "model": {"cell": "lstm", "layers": 2, "hidden": 128, "embed": 64,
                      "dropout": 0.0, "params": 1000},
            "sample": "ROMEO:\nsample text"}


def test_parse_budgets():
    assert bench_quality.parse_budgets("75,600") == [75.0, 600.0]
    assert bench_quality.parse_budgets("2.5") == [2.5]
    for bad in ("", "75,", "0", "-1", "nan", "10m"):
        with pytest.raises(argparse.ArgumentTypeError):
            bench_quality.parse_budgets(bad)


def test_split_keeps_the_characters_in_order(tmp_path):
    text = "ab\r\nçé 春眠\n" * 50  # 500 characters, more bytes than that
    corpus = tmp_path / "corpus.txt"
    corpus.write_bytes(text.encode("utf-8"))
    train, val, n_train, n_val = bench_quality.split_corpus(corpus, tmp_path)
    assert (n_train, n_val) == (450, 50)
    assert train.read_bytes() + val.read_bytes() == text.encode("utf-8")
    assert train.read_bytes() == text[:450].encode("utf-8")


def test_no_corpus_is_skipped_not_failed(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(bench_quality, "default_corpora", lambda: [tmp_path / "none.txt"])
    monkeypatch.setattr(bench_quality, "run_charrnn", pytest.fail)
    assert bench_quality.main([]) == 0
    out, err = capsys.readouterr()
    assert out == ""
    assert "make shakespeare" in err and "--corpus" in err and len(err.splitlines()) == 1


def test_bad_usage_exits_2(tmp_path, capsys):
    for argv in (["--budgets", "20", "--torch-budgets", "30"],
                 ["--corpus", str(tmp_path / "missing.txt")]):
        with pytest.raises(SystemExit) as stop:
            bench_quality.main(argv)
        assert stop.value.code == 2
    assert "add them there" in capsys.readouterr().err


def test_json_is_one_object_per_budget_on_stdout(tmp_path, monkeypatch, capsys):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("First Citizen:\nSpeak.\n" * 20, encoding="utf-8")
    monkeypatch.setattr(bench_quality, "run_charrnn", fake_run)
    keep = tmp_path / "kept"
    assert bench_quality.main(["--corpus", str(corpus), "--budgets", "3,5", "--no-torch",
                               "--json", "--keep", str(keep)]) == 0
    out, err = capsys.readouterr()
    rows = [json.loads(line) for line in out.splitlines()]
    assert [row["budget_s"] for row in rows] == [3.0, 5.0]
    assert all("torch" not in row and row["threads"] >= 1 and row["blas"] for row in rows)
    assert rows[0]["val_chars"] == 43  # the last 10% of 440 chars, the first unscored
    assert (keep / "train.txt").stat().st_size == 396  # kept, as asked
    assert "3 s" in err


def test_table_shows_the_peer_and_the_samples(tmp_path, monkeypatch, capsys):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("First Citizen:\nSpeak.\n" * 20, encoding="utf-8")
    monkeypatch.setattr(bench_quality, "run_charrnn", fake_run)
    monkeypatch.setattr(bench_quality.importlib.util, "find_spec", lambda name: object())
    monkeypatch.setattr(bench_quality, "torch_peer", lambda budget, train, val, threads: {
        "torch": "x", "torch_nats_per_char": 1.5, "torch_bits_per_char": 2.164,
        "torch_adapt_nats_per_char": 1.3579, "torch_steps": 7})
    assert bench_quality.main(["--corpus", str(corpus), "--budgets", "3,500"]) == 0
    out = capsys.readouterr().out
    row_3 = next(line for line in out.splitlines() if line.strip().startswith("3s"))
    row_500 = next(line for line in out.splitlines() if line.strip().startswith("500s"))
    assert "1.5000" in row_3 and "2.1640" in row_3  # the peer ran at 3 s ...
    assert "1.2345" in row_3 and "1.2345" in row_500 and "1.3579" in row_3  # and adapted
    assert "1.5000" not in row_500  # ... and not above TORCH_MAX_BUDGET by default
    assert out.count("ROMEO:\nsample text") == 2


def test_keep_refuses_a_directory_in_use(tmp_path, monkeypatch, capsys):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("First Citizen:\nSpeak.\n" * 20, encoding="utf-8")
    monkeypatch.setattr(bench_quality, "run_charrnn", pytest.fail)
    assert bench_quality.main(["--corpus", str(corpus), "--keep", str(tmp_path),
                               "--no-torch"]) == 1
    assert "not an empty directory" in capsys.readouterr().err
