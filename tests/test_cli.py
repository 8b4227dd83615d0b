"""The command line as users meet it: `charrnn train | sample | score | info`.

In-process through click's CliRunner (stdout and stderr asserted separately: only the
product goes to stdout), plus a few real pipelines through the installed console script
(`| head -c 100`, Chinese text through a pipe under LC_ALL=C). One tiny model is trained
once per module on a few KB of text generated here, so no corpus file is needed.
"""

import json
import math
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from click.testing import CliRunner

from charrnn.checkpoint import load_trained
from charrnn.cli import cli
from charrnn.sample import with_stops
from charrnn.signals import handle_stop_signals
from charrnn.sample import Sampler
from charrnn.score import score_line, score_text

TINY = ["--hidden", "16", "--layers", "1", "--embed", "8", "--seq-len", "16",
        "--batch-size", "4", "--steps", "30", "--threads", "1", "--seed", "1"]
WORDS = "the quick brown fox jumps over a lazy dog while seven birds sing at dawn".split()
HANZI = "春眠不觉晓处处闻啼鸟夜来风雨声花落知多少床前明月光疑是地上霜举头望山低思故乡"
CONSOLE_SCRIPT = Path(sys.executable).with_name("charrnn")


def english_text(size=4000, seed=1):
    rng = random.Random(seed)
    lines = []
    while sum(map(len, lines)) < size:
        words = [rng.choice(WORDS) for _ in range(rng.randint(3, 9))]
        lines.append(" ".join(words).capitalize() + ".\n")
    return "".join(lines)


def chinese_text(size=3000, seed=2):
    rng = random.Random(seed)
    lines = []
    while sum(map(len, lines)) < size:
        lines.append("".join(rng.choice(HANZI) for _ in range(5)) + "，"
                     + "".join(rng.choice(HANZI) for _ in range(5)) + "。\n")
    return "".join(lines)


def run(*args, input=None):
    """Invoke the CLI in-process; an exception other than SystemExit is a crash."""
    result = CliRunner().invoke(cli, [str(a) for a in args], input=input)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"crashed: {result.exception!r}\n{result.stderr}") \
            from result.exception
    return result


def assert_fails(result, code=1):
    """A clean failure: the exit code, nothing on stdout, no traceback, and for runtime
    errors exactly one line on stderr (usage errors add click's usage lines above it)."""
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr)
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("Error: ") and len(lines[-1]) > len("Error: ") + 10
    if code == 1:
        assert len(lines) == 1, result.stderr
    return lines[-1]


def train_tiny(corpus, out, *extra):
    return run("train", corpus, "-o", out, *TINY, *extra)


def tiny_model(folder, text, name):
    """Train the tiny model on text (written to folder/name.txt) into folder/name.ckpt."""
    corpus = folder / f"{name}.txt"
    corpus.write_text(text, encoding="utf-8")
    ckpt = folder / f"{name}.ckpt"
    result = train_tiny(corpus, ckpt)
    assert result.exit_code == 0, result.stderr
    return SimpleNamespace(folder=folder, text=text, corpus=corpus, ckpt=ckpt, result=result)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return tiny_model(tmp_path_factory.mktemp("cli"), english_text(), "m")


def sample(trained, *args, input=None):
    result = run("sample", trained.ckpt, "--threads", "1", *args, input=input)
    assert result.exit_code == 0, result.stderr
    return result


# --------------------------------------------------------------------------- train
def test_train_writes_a_checkpoint_and_reports_only_on_stderr(trained):
    result = trained.result
    assert result.stdout == ""
    assert "step 30" in result.stderr and "bits/char" in result.stderr
    model, vocab, record, _ = load_trained(trained.ckpt)
    assert record["state"]["step"] == 30
    assert set(vocab.chars) == set(trained.text)
    assert (trained.folder / "m.best.ckpt").is_file()


def test_train_reads_the_corpus_from_stdin(trained, tmp_path):
    result = run("train", "-", "-o", tmp_path / "s.ckpt", *TINY, input=trained.text)
    assert result.exit_code == 0, result.stderr
    from_stdin, from_file = load_trained(tmp_path / "s.ckpt"), load_trained(trained.ckpt)
    assert np.array_equal(from_stdin[0].flat, from_file[0].flat)
    assert from_stdin[1] == from_file[1]


def test_train_quiet_prints_nothing(trained, tmp_path):
    result = train_tiny(trained.corpus, tmp_path / "q.ckpt", "--quiet", "--steps", "3")
    assert result.exit_code == 0
    assert (result.stdout, result.stderr) == ("", "")
    assert (tmp_path / "q.ckpt").is_file()


def test_train_force_replaces_an_existing_checkpoint(trained, tmp_path):
    out = tmp_path / "f.ckpt"
    assert train_tiny(trained.corpus, out, "--steps", "3").exit_code == 0
    result = train_tiny(trained.corpus, out, "--steps", "5", "--force")
    assert result.exit_code == 0, result.stderr
    assert load_trained(out)[2]["state"]["step"] == 5


@pytest.mark.parametrize("name, content", [
    ("missing.txt", None),
    ("folder", "directory"),
    ("empty.txt", b""),
    ("binary.bin", bytes(range(256)) * 8),
    ("latin1.txt", "caf\xe9 cr\xe8me br\xfbl\xe9e\n".encode("latin-1") * 100),
])
def test_train_rejects_an_unusable_corpus_in_one_line(tmp_path, name, content):
    corpus = tmp_path / name
    if content == "directory":
        corpus.mkdir()
        (corpus / "a.txt").write_text(english_text())
    elif content is not None:
        corpus.write_bytes(content)
    message = assert_fails(run("train", corpus, "-o", tmp_path / "m.ckpt", *TINY))
    assert name in message
    assert not (tmp_path / "m.ckpt").exists()


def test_train_rejects_a_corpus_too_small_for_one_batch(tmp_path):
    corpus = tmp_path / "small.txt"
    corpus.write_text("tiny corpus\n")
    message = assert_fails(run("train", corpus, "-o", tmp_path / "m.ckpt", *TINY))
    assert "--seq-len" in message or "--batch-size" in message


@pytest.mark.parametrize("flags", [[], ["--force"], ["--resume"]])
def test_train_never_overwrites_a_file_that_is_not_a_checkpoint(trained, tmp_path, flags):
    precious = tmp_path / "notes.txt"
    precious.write_text("my notes\n")
    message = assert_fails(train_tiny(trained.corpus, precious, *flags))
    assert "notes.txt" in message
    assert precious.read_text() == "my notes\n"


def test_train_refuses_an_existing_checkpoint_without_resume_or_force(trained, tmp_path):
    out = tmp_path / "m.ckpt"
    out.write_bytes(trained.ckpt.read_bytes())
    message = assert_fails(train_tiny(trained.corpus, out))
    assert "--resume" in message and "--force" in message
    assert out.read_bytes() == trained.ckpt.read_bytes()


def test_resume_with_a_conflicting_architecture_is_a_usage_error(trained, tmp_path):
    out = tmp_path / "m.ckpt"
    out.write_bytes(trained.ckpt.read_bytes())
    message = assert_fails(run("train", trained.corpus, "-o", out, "--resume",
                               "--hidden", "32", "--steps", "35"), code=2)
    assert "--hidden" in message
    assert out.read_bytes() == trained.ckpt.read_bytes()
    # Repeating the stored value is no conflict.
    result = run("train", trained.corpus, "-o", out, "--resume", "--hidden", "16",
                 "--steps", "32", "--threads", "1")
    assert result.exit_code == 0, result.stderr
    assert load_trained(out)[2]["state"]["step"] == 32


def test_resume_of_a_missing_checkpoint_fails(trained, tmp_path):
    assert_fails(train_tiny(trained.corpus, tmp_path / "none.ckpt", "--resume"))


@pytest.mark.parametrize("value", ["abc", "0", "-5m"])
def test_bad_time_limit_is_a_usage_error(trained, tmp_path, value):
    assert_fails(train_tiny(trained.corpus, tmp_path / "m.ckpt", "--time-limit", value), code=2)


# -------------------------------------------------------------------------- sample
def test_sample_prints_exactly_n_characters_and_repeats_with_a_seed(trained):
    first = sample(trained, "-n", "300", "--seed", "7")
    second = sample(trained, "-n", "300", "--seed", "7")
    assert first.stdout_bytes == second.stdout_bytes
    assert first.stderr == ""
    # Exactly the 300 characters: the separator goes only between samples.
    assert len(first.stdout) == 300
    bare = sample(trained, "-n", "300", "--seed", "7", "--separator", "")
    assert bare.stdout == first.stdout
    assert set(bare.stdout) <= set(trained.text)
    other = sample(trained, "-n", "300", "--seed", "8")
    assert other.stdout != first.stdout


def test_precision_reaches_the_sampler(trained, monkeypatch):
    from charrnn import sample as sample_module
    chosen = []

    class Recording(sample_module.Sampler):
        def __init__(self, model, vocab, precision="auto"):
            super().__init__(model, vocab, precision)
            chosen.append((precision, self.bfloat16))
    monkeypatch.setattr(sample_module, "Sampler", Recording)
    common = ["-n", "80", "--seed", "4"]
    texts = [sample(trained, *common, *extra).stdout
             for extra in ([], ["--precision", "float32"], ["--precision", "bfloat16"])]
    # the tiny model is far below the size limit: auto keeps float32, the same text
    assert chosen == [("auto", False), ("float32", False), ("bfloat16", True)]
    assert texts[0] == texts[1] and len(texts[2]) == 80
    result = run("sample", trained.ckpt, "--precision", "half")
    assert result.exit_code == 2 and "half" in result.stderr


def test_prime_is_written_first_and_not_counted(trained):
    prime = "The lazy dog"
    result = sample(trained, "-n", "50", "--seed", "3", "--prime", prime, "--separator", "")
    assert result.stdout.startswith(prime)
    assert len(result.stdout) == len(prime) + 50


def test_prime_changes_what_follows(trained):
    a = sample(trained, "-n", "80", "--seed", "3", "--prime", "The", "--separator", "")
    b = sample(trained, "-n", "80", "--seed", "3", "--prime", "Seven birds", "--separator", "")
    assert a.stdout[len("The"):] != b.stdout[len("Seven birds"):]


def test_without_seed_a_seed_is_printed_to_stderr_and_repeats_the_run(trained):
    result = sample(trained, "-n", "100")
    match = re.fullmatch(r"seed: (\d+)\n", result.stderr)
    assert match, result.stderr
    again = sample(trained, "-n", "100", "--seed", match.group(1))
    assert again.stdout == result.stdout


@pytest.mark.parametrize("decoding", [["--top-k", "1"], ["--top-p", "1e-6"],
                                      ["--beam", "1"], ["--greedy", "-t", "0.3"]])
def test_narrow_decodings_equal_greedy(trained, decoding):
    args = ["-n", "120", "--prime", "The "]
    greedy = sample(trained, *args, "--greedy", "--seed", "1").stdout
    assert sample(trained, *args, *decoding, "--seed", "2").stdout == greedy


def test_filtered_sampling_repeats_with_a_seed(trained):
    args = ["-n", "200", "--seed", "4", "--top-k", "5", "--top-p", "0.9", "-t", "0.8"]
    assert sample(trained, *args).stdout == sample(trained, *args).stdout


@pytest.mark.parametrize("args", [["-t", "0"], ["-t", "-1"], ["--top-p", "0"],
                                  ["--top-p", "1.5"], ["--top-k", "0"], ["-n", "-1"],
                                  ["--num-samples", "0"], ["--beam", "0"],
                                  ["--beam", "2", "-n", "0"], ["--format", "xml"]])
def test_bad_decoding_values_are_usage_errors(trained, args):
    result = run("sample", trained.ckpt, *args, "--seed", "1")
    assert_fails(result, code=2)
    assert args[0] in result.stderr


@pytest.mark.parametrize("value", ["nan", "inf"])
@pytest.mark.parametrize("option", ["-t", "--top-p"])
def test_non_finite_decoding_values_are_usage_errors(trained, option, value):
    # click.FloatRange alone lets nan through (every comparison with nan is false).
    result = run("sample", trained.ckpt, option, value, "--seed", "1", "-n", "20")
    assert_fails(result, code=2)
    assert option in result.stderr


@pytest.mark.parametrize("command", ["sample", "train"])
def test_negative_seed_is_a_usage_error(trained, tmp_path, command):
    # numpy's SeedSequence rejects negative seeds with a ValueError (a traceback).
    if command == "sample":
        result = run("sample", trained.ckpt, "-n", "5", "--seed", "-1")
    else:
        result = run("train", trained.corpus, "-o", tmp_path / "m.ckpt", *TINY[:-2],
                     "--seed", "-1")
    assert_fails(result, code=2)
    assert "--seed" in result.stderr


def test_missing_prime_file_fails_in_one_line(trained, tmp_path):
    message = assert_fails(run("sample", trained.ckpt, "--prime-file", tmp_path / "nope.txt"))
    assert "nope.txt" in message


def test_prime_and_prime_file_together_is_a_usage_error(trained, tmp_path):
    path = tmp_path / "p.txt"
    path.write_text("The")
    assert_fails(run("sample", trained.ckpt, "--prime", "The", "--prime-file", path), code=2)


def test_multiline_prime_from_stdin_equals_prime_option(trained, tmp_path):
    prime = "The quick fox.\nA lazy dog "
    args = ["-n", "100", "--seed", "5"]
    direct = sample(trained, *args, "--prime", prime)
    piped = sample(trained, *args, "--prime-file", "-", input=prime)
    path = tmp_path / "prime.txt"
    path.write_text(prime, encoding="utf-8")
    from_file = sample(trained, *args, "--prime-file", path)
    assert direct.stdout.startswith(prime)
    assert piped.stdout == direct.stdout == from_file.stdout


def test_unknown_prime_characters_warn_and_are_skipped(trained):
    args = ["-n", "60", "--seed", "5"]
    result = sample(trained, *args, "--prime", "The €lazy dog¿")
    assert "warning" in result.stderr and "€" in result.stderr and "¿" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    clean = sample(trained, *args, "--prime", "The lazy dog")
    assert result.stdout == clean.stdout


def test_strict_makes_unknown_prime_characters_an_error(trained):
    message = assert_fails(run("sample", trained.ckpt, "--prime", "The €uro", "--strict",
                               "--seed", "1"))
    assert "€" in message


def test_stop_ends_right_after_the_first_stop_string(trained):
    args = ["-n", "400", "--seed", "9", "--prime", "The", "--separator", ""]
    full = sample(trained, *args).stdout[len("The"):]
    end = full.find(" ") + 1
    assert end > 0
    stopped = sample(trained, *args, "--stop", " ").stdout
    assert stopped == "The" + full[:end]
    # Of several stop strings the earliest occurrence wins.
    both = sample(trained, *args, "--stop", full[max(0, end - 3):end], "--stop", " ").stdout
    assert both == stopped


def test_stop_string_spanning_two_streamed_chunks_is_found(trained):
    # Generated text is streamed in chunks (32, 64, ... characters); a stop string that
    # starts in one chunk and ends in the next must still cut at its end.
    args = ["-n", "400", "--seed", "12", "--prime", "A", "--separator", ""]
    full = sample(trained, *args).stdout[1:]
    for length in (4, 5, 6, 8):
        found = [k for k in range(20, 32) if full.find(full[k:k + length]) == k and k + length > 32]
        if found:
            stop = full[found[0]:found[0] + length]
            break
    else:
        pytest.fail("no unique stop string across position 32 in the sample")
    result = sample(trained, *args, "--stop", stop).stdout
    assert result == "A" + full[:found[0] + length]


@pytest.mark.parametrize("stops", [["bc"], ["cde"], ["f", "cd"], ["gh"], ["a"], ["zz"]])
def test_with_stops_cuts_right_after_the_first_stop_wherever_the_pieces_break(stops):
    text = "abcdefgh"
    ends = [text.find(s) + len(s) for s in stops if s in text]
    expected = text[:min(ends)] if ends else text
    for cut1 in range(len(text) + 1):
        for cut2 in range(cut1, len(text) + 1):
            pieces = [text[:cut1], text[cut1:cut2], text[cut2:]]
            assert "".join(with_stops(iter(pieces), stops)) == expected, pieces


def test_num_samples_jsonl(trained):
    result = sample(trained, "-n", "40", "--seed", "3", "--num-samples", "3", "--format", "jsonl")
    lines = result.stdout.splitlines()
    assert len(lines) == 3 and result.stdout.endswith("\n")
    records = [json.loads(line) for line in lines]
    assert all(record["seed"] == 3 and len(record["text"]) == 40 for record in records)
    assert len({record["text"] for record in records}) == 3  # independent samples
    as_text = sample(trained, "-n", "40", "--seed", "3", "--num-samples", "3",
                     "--separator", "|")
    assert as_text.stdout == "|".join(record["text"] for record in records)
    first = sample(trained, "-n", "40", "--seed", "3", "--separator", "")
    assert first.stdout == records[0]["text"]


def test_beam_search_is_deterministic_and_seed_free(trained):
    args = ["-n", "60", "--beam", "3", "--prime", "The "]
    one = sample(trained, *args, "--seed", "1")
    two = sample(trained, *args, "--seed", "2")
    assert one.stdout == two.stdout
    assert one.stdout.startswith("The ") and len(one.stdout) == len("The ") + 60


def test_beam_wider_than_the_vocabulary_finds_the_most_likely_two_characters(trained):
    # With width >= V every one-character extension survives the first step, so a beam
    # over two characters is exhaustive: it must return the best of all V * V pairs.
    model, vocab, _, _ = load_trained(trained.ckpt)
    sampler = Sampler(model, vocab)
    prime = "The lazy"
    prime_ids, _ = vocab.encode(prime)

    def next_log_probs(ids):
        out = np.empty(vocab.size)
        for c in range(vocab.size):
            h, cell = sampler.zero_state()
            out[c] = -sampler.token_losses(np.append(ids, c), h, cell)[-1]
        return out

    first = next_log_probs(prime_ids)
    pair = np.array([first[a] + next_log_probs(np.append(prime_ids, a)) for a in range(vocab.size)])
    a, b = np.unravel_index(np.argmax(pair), pair.shape)
    result = sample(trained, "-n", "2", "--beam", str(vocab.size + 3), "--prime", prime,
                    "--separator", "")
    assert result.stdout == prime + vocab.chars[a] + vocab.chars[b]


# --------------------------------------------------------------------------- score
def forward_nats(model, ids):
    """The model's own mean loss over ids[1:] given ids[:-1], from a zero state."""
    h, c = model.zero_state(1)
    ids = np.asarray(ids, np.int64)
    loss, _, _, _ = model.forward(ids[None, :-1], ids[None, 1:], h, c, need_grad=False)
    return loss


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


@pytest.mark.parametrize("command", ["sample", "score", "info"])
@pytest.mark.parametrize("kind", ["text", "missing", "truncated", "pickle"])
def test_commands_reject_a_non_checkpoint_in_one_line(trained, tmp_path, command, kind):
    path = tmp_path / "bad.ckpt"
    if kind == "text":
        path.write_text(trained.text)
    elif kind == "truncated":
        path.write_bytes(trained.ckpt.read_bytes()[:-100])
    elif kind == "pickle":
        path.write_bytes(b"\x80\x04\x95" + bytes(64))
    message = assert_fails(run(command, path, input="The dog."))
    assert "bad.ckpt" in message


# ---------------------------------------------------------------------------- info
def test_info(trained):
    result = run("info", trained.ckpt)
    assert result.exit_code == 0 and result.stderr == ""
    assert "lstm" in result.stdout and "16 hidden" in result.stdout and "bits/char" in result.stdout
    data = json.loads(run("info", trained.ckpt, "--json").stdout)
    model, vocab, record, _ = load_trained(trained.ckpt)
    assert {"cell", "layers", "hidden", "embed", "vocab_size", "params", "step",
            "val_bpc"} <= set(data)
    assert (data["cell"], data["layers"], data["hidden"], data["embed"]) == ("lstm", 1, 16, 8)
    assert data["vocab_size"] == vocab.size == len(set(trained.text))
    assert data["params"] == model.flat.size
    assert data["step"] == 30
    assert data["val_bpc"] == pytest.approx(record["state"]["best_val_bpc"])
    assert 0 < data["val_bpc"] < math.log2(vocab.size) + 1


# ----------------------------------------------------------------------- pipelines
def script_env(**changes):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("LC_", "PYTHONIOENCODING", "PYTHONUTF8", "LANG"))}
    env.update(changes)
    return env


@pytest.fixture(scope="module")
def console_script():
    if not CONSOLE_SCRIPT.exists():
        pytest.skip(f"{CONSOLE_SCRIPT} is not installed (run `make install`)")
    return str(CONSOLE_SCRIPT)


def shell(command, **kwargs):
    """Run a bash pipeline in its own process group, killed whole if it hangs."""
    process = subprocess.Popen(["bash", "-c", command], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, start_new_session=True, **kwargs)
    try:
        stdout, stderr = process.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        raise
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


@pytest.mark.parametrize("seed", [["--seed", "1"], []])
def test_endless_sample_into_head_ends_quietly(trained, console_script, tmp_path, seed):
    done = shell(f"'{console_script}' sample '{trained.ckpt}' -n 0 --threads 1 {' '.join(seed)}"
                 f" 2>'{tmp_path}/err' | head -c 100; echo \" ${{PIPESTATUS[0]}}\"",
                 env=script_env())
    out, status = done.stdout.rsplit(b" ", 1)
    assert len(out) == 100
    assert int(status) in (0, 141), status  # 141: killed by SIGPIPE, as the shell reports it
    stderr = (tmp_path / "err").read_text()
    assert "Traceback" not in stderr and "Error" not in stderr
    if seed:
        assert stderr == ""
    else:
        assert re.fullmatch(r"seed: \d+\n", stderr)


@pytest.fixture(scope="module")
def chinese(tmp_path_factory):
    return tiny_model(tmp_path_factory.mktemp("zh"), chinese_text(), "zh")


@pytest.mark.parametrize("env", [{"LC_ALL": "C"}, {"LC_ALL": "C", "PYTHONIOENCODING": "ascii"}])
def test_chinese_prime_and_output_survive_a_pipe(chinese, console_script, env):
    prime = "春眠不觉晓，"
    common = ["--threads", "1", "-n", "40", "--seed", "3"]
    done = shell(f"'{console_script}' sample '{chinese.ckpt}' {' '.join(common)} "
                 f"--prime '{prime}' | cat", env=script_env(**env))
    assert done.returncode == 0 and done.stderr == b"", done.stderr
    text = done.stdout.decode("utf-8")
    assert text.startswith(prime)
    generated = text[len(prime):]
    assert len(generated) == 40 and set(generated) <= set(chinese.text)
    assert sum(ch in HANZI for ch in generated) > 10
    piped = subprocess.run([console_script, "sample", str(chinese.ckpt), *common,
                            "--prime-file", "-"], input=prime.encode("utf-8"),
                           capture_output=True, timeout=120, env=script_env(**env))
    assert piped.returncode == 0 and piped.stdout == done.stdout
    in_process = run("sample", chinese.ckpt, *common, "--prime", prime)
    assert in_process.stdout_bytes == done.stdout


def test_chinese_score_through_a_pipe(chinese, console_script):
    line = chinese.text.splitlines()[0]
    done = subprocess.run([console_script, "score", str(chinese.ckpt), "--per-line"],
                          input=(line + "\n").encode("utf-8"), capture_output=True,
                          timeout=120, env=script_env(LC_ALL="C"))
    assert done.returncode == 0 and done.stderr == b""
    value, text = done.stdout.decode("utf-8").rstrip("\n").split("\t")
    assert text == line and math.isfinite(float(value))


@pytest.mark.parametrize("limits, lr, dropout", [
    (["--steps", "3"], "constant", 0.0),
    (["--steps", "3", "--time-limit", "10m"], "decaying", 0.25),  # stops at 3 steps
])
def test_train_fills_unchosen_lr_and_dropout_from_the_budget(tmp_path, limits, lr, dropout):
    from charrnn import defaults
    from charrnn.checkpoint import load_checkpoint
    corpus = tmp_path / "c.txt"
    corpus.write_text(english_text(), encoding="utf-8")  # small: dropout comes early
    result = run("train", corpus, "-o", tmp_path / "m.ckpt", "--hidden", "16", "--layers",
                 "1", "--embed", "8", "--seq-len", "16", "--batch-size", "4", "--quiet",
                 *limits)
    assert result.exit_code == 0, result.stderr
    header, _ = load_checkpoint(str(tmp_path / "m.ckpt"))
    expected_lr = defaults.LR_DECAYING if lr == "decaying" else defaults.LR_CONSTANT
    assert header["training"]["options"]["lr"] == expected_lr
    assert header["model"]["dropout"] == dropout
    given = run("train", corpus, "-o", tmp_path / "g.ckpt", "--hidden", "16", "--layers",
                "1", "--embed", "8", "--seq-len", "16", "--batch-size", "4", "--quiet",
                "--lr", "0.02", "--dropout", "0.1", *limits)
    assert given.exit_code == 0, given.stderr
    header, _ = load_checkpoint(str(tmp_path / "g.ckpt"))
    assert (header["training"]["options"]["lr"], header["model"]["dropout"]) == (0.02, 0.1)


# ------------------------------------------------- standard output that cannot be written
STDOUT_COMMANDS = [["sample", "-n", "20", "--seed", "1"], ["info"], ["info", "--json"],
                   ["score", "{corpus}"], ["score", "{corpus}", "--per-line"]]


def command_line(console_script, trained, words):
    words = [w.format(corpus=trained.corpus) for w in words]
    return f"'{console_script}' {words[0]} '{trained.ckpt}' " + \
        " ".join(f"'{w}'" for w in words[1:]) + " --threads 1" * (words[0] != "info")


@pytest.mark.parametrize("words", STDOUT_COMMANDS)
@pytest.mark.parametrize("redirect, message", [
    ("> /dev/full", "No space left on device"), (">&-", "it is closed")])
def test_unwritable_stdout_fails_in_one_line(trained, console_script, words, redirect, message):
    done = shell(f"{command_line(console_script, trained, words)} {redirect}",
                 env=script_env())
    assert done.returncode == 1, done.stderr
    assert done.stderr.decode() == f"Error: cannot write to standard output: {message}\n"


@pytest.mark.parametrize("words", STDOUT_COMMANDS)
def test_every_command_ends_quietly_when_the_reader_has_gone(trained, console_script, words):
    # The reader exits before the command writes: every command, not only sample,
    # ends with status 0 and says nothing.
    done = shell(f"(sleep 0.3; {command_line(console_script, trained, words)}) | true; "
                 "echo ${PIPESTATUS[0]}", env=script_env())
    assert done.stdout == b"0\n", done.stderr
    assert done.stderr == b""


def test_an_empty_stop_string_is_a_usage_error(trained):
    result = run("sample", trained.ckpt, "--stop", "")
    assert "--stop" in assert_fails(result, code=2)


# ---------------------------------------------------------------------------- --log
@pytest.mark.parametrize("log_name, extra, code", [
    ("out.ckpt", [], 2), ("out.best.ckpt", [], 2),
    ("base.ckpt", ["--init-from", "base.ckpt"], 2), ("corpus.txt", [], 2),
    ("other.ckpt", [], 1)])
def test_log_never_appends_to_a_checkpoint_or_the_corpus(trained, tmp_path, log_name, extra,
                                                         code):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(trained.text)
    for name in ("out.ckpt", "out.best.ckpt", "base.ckpt", "other.ckpt"):
        (tmp_path / name).write_bytes(Path(trained.ckpt).read_bytes())
    before = {path.name: path.read_bytes() for path in tmp_path.iterdir()}
    extra = [str(tmp_path / word) if word.endswith(".ckpt") else word for word in extra]
    result = run("train", corpus, "-o", tmp_path / "out.ckpt", "--force", *TINY, *extra,
                 "--log", tmp_path / log_name)
    assert "--log" in assert_fails(result, code=code)
    assert {path.name: path.read_bytes() for path in tmp_path.iterdir()} == before


def test_log_in_a_missing_directory_fails_before_training(trained, tmp_path):
    result = train_tiny(trained.corpus, tmp_path / "m.ckpt", "--log", tmp_path / "no" / "x")
    assert "no such directory" in assert_fails(result)
    assert not (tmp_path / "m.ckpt").exists()


def test_a_log_that_cannot_be_written_warns_and_training_goes_on(trained, tmp_path):
    result = train_tiny(trained.corpus, tmp_path / "m.ckpt", "--eval-every", "10",
                        "--log", "/dev/full")
    assert result.exit_code == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning")]
    assert warnings == ["warning: cannot write the log /dev/full: No space left on device; "
                        "training goes on without it"]
    assert load_trained(str(tmp_path / "m.ckpt"))[3]  # the run's checkpoint is whole


def test_log_appends_one_json_object_per_evaluation(trained, tmp_path):
    log = tmp_path / "log.jsonl"
    log.write_text('{"earlier": 1}\n')
    result = train_tiny(trained.corpus, tmp_path / "m.ckpt", "--eval-every", "10",
                        "--log", log)
    assert result.exit_code == 0, result.stderr
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert records[0] == {"earlier": 1}
    assert [r["step"] for r in records[1:]] == [10, 20, 30]


def test_a_diverging_run_says_so_without_numpy_warnings(trained, console_script, tmp_path):
    done = shell(f"'{console_script}' train '{trained.corpus}' -o '{tmp_path}/m.ckpt' "
                 + " ".join(TINY) + " --lr 1e30 --quiet", env=script_env())
    assert done.returncode == 1
    stderr = done.stderr.decode()
    assert "Warning" not in stderr and "Traceback" not in stderr, stderr
    assert stderr.splitlines()[-1].startswith("Error: loss is not finite")


def test_decoding_errors_advise_only_the_commands_own_options(trained, tmp_path):
    latin = tmp_path / "latin.txt"
    latin.write_bytes("café olé\n".encode("latin-1"))
    score_error = assert_fails(run("score", trained.ckpt, latin))
    assert "use --encoding NAME" in score_error and "--errors" not in score_error
    prime_error = assert_fails(run("sample", trained.ckpt, "--prime-file", latin))
    assert "--encoding" not in prime_error and "--errors" not in prime_error
    assert "convert it to UTF-8" in prime_error


@pytest.mark.parametrize("words", [["info", "{dir}"], ["sample", "{dir}"],
                                   ["score", "{ckpt}", "{dir}"],
                                   ["sample", "{ckpt}", "--prime-file", "{dir}"]])
def test_a_directory_given_as_an_input_file_is_a_runtime_error(trained, tmp_path, words):
    # exit 1 as the README's exit codes say for unreadable inputs (click's own check
    # made it a usage error, exit 2)
    words = [w.format(dir=tmp_path, ckpt=trained.ckpt) for w in words]
    assert "is a directory" in assert_fails(run(*words))


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_while_stdin_is_spooled_exits_128_plus_it_and_removes_the_spool(
        console_script, tmp_path, signum):
    cache = tmp_path / "cache"
    process = subprocess.Popen(
        [console_script, "train", "-", "-o", str(tmp_path / "m.ckpt"), *TINY],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env=script_env(CHARRNN_CACHE_DIR=str(cache)), start_new_session=True)
    try:
        process.stdin.write(english_text().encode())
        process.stdin.flush()  # and left open: the spool waits for more
        for _ in range(600):
            if cache.exists() and any(p.name.startswith("spool-") for p in cache.iterdir()):
                break
            process.poll()
            assert process.returncode is None, process.stderr.read()
            time.sleep(0.1)
        else:
            raise AssertionError("no spool appeared in 60 s")
        process.send_signal(signum)
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
    assert process.returncode == 128 + signum, stderr
    assert b"Traceback" not in stderr
    assert not any(p.name.startswith("spool-") for p in cache.iterdir())


def test_a_signal_the_process_was_started_to_ignore_stays_ignored():
    # A script's background job starts with SIGINT ignored: Ctrl-C in the terminal is
    # for the foreground, and must not stop the training (nor reading its corpus).
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        replaced = handle_stop_signals(lambda signum, frame: None)
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
        assert set(replaced) == {signal.SIGTERM}
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)


def test_train_in_process_leaves_the_callers_signal_handlers(trained, tmp_path):
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    assert train_tiny(trained.corpus, tmp_path / "m.ckpt").exit_code == 0
    assert train_tiny(trained.corpus, tmp_path / "m.ckpt").exit_code == 1  # exists: refused
    assert {sig: signal.getsignal(sig) for sig in before} == before
