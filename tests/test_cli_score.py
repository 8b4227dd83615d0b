"""`charrnn score` as users meet it: the model's own loss, chunks, --per-line, pipes."""

import json
import math
import subprocess

import pytest
from clitools import (
    TINY,
    english_text,
    forward_nats,
    run,
    script_env,
)

from charrnn.checkpoint import load_trained
from charrnn.sample import Sampler
from charrnn.score import score_line, score_text


def test_score_equals_the_models_own_loss(trained):
    model, vocab, _, _ = load_trained(trained.ckpt)
    text = trained.text[:500]
    ids, _ = vocab.encode(text)
    expected = forward_nats(model, ids)
    result = score_text(Sampler(model, vocab), text)
    assert result["nats_per_char"] == pytest.approx(expected, rel=1e-4)
    assert result["bits_per_char"] == pytest.approx(expected / math.log(2), rel=1e-4)
    assert result["chars"] == len(text) - 1 and result["unknown_chars"] == 0
    cli_result = run("score", trained.ckpt, "--json", input=text)
    assert cli_result.exit_code == 0 and cli_result.stderr == ""
    data = json.loads(cli_result.stdout)
    assert set(data) == {"bits_per_char", "nats_per_char", "chars", "unknown_chars"}
    assert data["nats_per_char"] == pytest.approx(expected, rel=1e-4)
    assert data["bits_per_char"] == pytest.approx(expected / math.log(2), rel=1e-4)
    assert (data["chars"], data["unknown_chars"]) == (len(text) - 1, 0)



def test_score_carries_the_state_across_chunks(trained):
    model, vocab, _, _ = load_trained(trained.ckpt)
    sampler = Sampler(model, vocab)
    whole = score_text(sampler, trained.text)
    chunked = score_text(sampler, trained.text, chunk_chars=37)
    assert chunked["chars"] == whole["chars"] == len(trained.text) - 1
    assert chunked["nats_per_char"] == pytest.approx(whole["nats_per_char"], rel=1e-6)



def test_score_human_output_file_argument_and_unknown_characters(trained, tmp_path):
    text = trained.text[:300]
    path = tmp_path / "t.txt"
    path.write_text(text[:100] + "€€" + text[100:] + "¿", encoding="utf-8")
    with_unknown = json.loads(run("score", trained.ckpt, path, "--json").stdout)
    clean = json.loads(run("score", trained.ckpt, "--json", input=text).stdout)
    assert with_unknown["unknown_chars"] == 3
    assert with_unknown["chars"] == clean["chars"]
    assert with_unknown["bits_per_char"] == pytest.approx(clean["bits_per_char"], rel=1e-6)
    human = run("score", trained.ckpt, path)
    assert human.exit_code == 0 and human.stderr == ""
    assert len(human.stdout.splitlines()) == 1
    assert f"{clean['bits_per_char']:.4f}" in human.stdout and "bits/char" in human.stdout



def test_score_per_line_scores_each_line_from_a_fresh_state(trained):
    model, vocab, _, _ = load_trained(trained.ckpt)
    lines = ["The quick dog.", "Seven birds sing at dawn.", "A lazy fox jumps over a dog."]
    result = run("score", trained.ckpt, "--per-line", input="\n".join(lines) + "\n")
    assert result.exit_code == 0 and result.stderr == ""
    out = result.stdout.splitlines()
    assert len(out) == len(lines)
    for line, row in zip(lines, out):
        value, text = row.split("\t")
        assert text == line
        # As in a corpus: predicted from a newline, with its closing newline predicted too.
        ids, _ = vocab.encode("\n" + line + "\n")
        assert float(value) == pytest.approx(forward_nats(model, ids) / math.log(2), abs=2e-4)
    reverse = run("score", trained.ckpt, "--per-line", input="\n".join(lines[::-1]) + "\n")
    assert reverse.stdout.splitlines() == out[::-1]
    first_value = float(out[0].split("\t")[0])
    assert score_line(Sampler(model, vocab), lines[0]) == pytest.approx(first_value, abs=1e-4)



@pytest.mark.parametrize("text, lines", [
    ("The dog\x0csat.\nA cat.\n", ["The dog\x0csat.", "A cat."]),  # \f ends no line
    ("The dog\u2028sat.\nA cat.\n", ["The dog\u2028sat.", "A cat."]),
    ("The dog.\r\nA cat.\r\n", ["The dog.", "A cat."]),  # CRLF input
    ("The dog.\nA cat.", ["The dog.", "A cat."]),  # no final newline
    ("The dog.\n\nA cat.\n", ["The dog.", "", "A cat."]),  # an empty line is a line
])
def test_score_per_line_writes_one_line_per_input_line(trained, text, lines):
    result = run("score", trained.ckpt, "--per-line", input=text)
    assert result.exit_code == 0 and result.stderr == ""
    rows = result.stdout.split("\n")
    assert rows.pop() == ""
    assert [row.split("\t", 1)[1] for row in rows] == lines
    assert all(math.isfinite(float(row.split("\t", 1)[0])) for row in rows)



@pytest.mark.slow  # a subprocess or a compile: `make test-fast` leaves it out
def test_chinese_score_through_a_pipe(chinese, console_script):
    line = chinese.text.splitlines()[0]
    done = subprocess.run([console_script, "score", str(chinese.ckpt), "--per-line"],
                          input=(line + "\n").encode("utf-8"), capture_output=True,
                          timeout=120, env=script_env(LC_ALL="C"))
    assert done.returncode == 0 and done.stderr == b""
    value, text = done.stdout.decode("utf-8").rstrip("\n").split("\t")
    assert text == line and math.isfinite(float(value))


def test_a_default_model_charges_characters_it_never_saw(tmp_path):
    # "$" occurs once in the corpus: by default it becomes the unknown symbol, whose
    # probability the model learns, and score charges any character it never saw so.
    corpus = tmp_path / "c.txt"
    corpus.write_text(english_text() + "$\n", encoding="utf-8")
    assert run("train", corpus, "-o", tmp_path / "m.ckpt", *TINY).exit_code == 0
    vocab = load_trained(tmp_path / "m.ckpt")[1]
    assert vocab.has_unknown and "$" not in vocab.chars
    text = "The dog \u4e2d sings.\n"
    result = json.loads(run("score", tmp_path / "m.ckpt", "--json", input=text).stdout)
    assert result["unknown_chars"] == 1 and result["chars"] == len(text) - 1
    plain = run("score", tmp_path / "m.ckpt", input=text).stdout
    assert plain.endswith("1 unknown chars charged as the unknown symbol\n")
    kept = run("train", corpus, "-o", tmp_path / "all.ckpt", *TINY, "--min-count", "1")
    assert kept.exit_code == 0 and "$" in load_trained(tmp_path / "all.ckpt")[1].chars
