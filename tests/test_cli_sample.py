"""`charrnn sample` as users meet it: seeds, primes, decoding, stops, beams, pipes."""

import json
import re
import subprocess

import numpy as np
import pytest
from clitools import (
    HANZI,
    assert_fails,
    run,
    sample,
    script_env,
    shell,
)

from charrnn.checkpoint import load_trained
from charrnn.sample import Sampler, with_stops


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



@pytest.mark.slow  # a subprocess or a compile: `make test-fast` leaves it out
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



@pytest.mark.slow  # a subprocess or a compile: `make test-fast` leaves it out
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



def test_an_empty_stop_string_is_a_usage_error(trained):
    result = run("sample", trained.ckpt, "--stop", "")
    assert "--stop" in assert_fails(result, code=2)
