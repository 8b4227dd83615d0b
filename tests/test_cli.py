"""The command line as a whole: what every command shares (one-line failures for bad
checkpoints and inputs, standard output that cannot be written, a reader that left).
The subcommands have their own files: test_cli_train.py, test_cli_sample.py,
test_cli_score.py, test_cli_info.py. Helpers: clitools.py; the tiny model trained once
per module: conftest.py's `trained`.
"""


import pytest
from clitools import TINY, assert_fails, run, script_env, shell


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






STDOUT_COMMANDS = [["sample", "-n", "20", "--seed", "1"], ["info"], ["info", "--json"],
                   ["score", "{corpus}"], ["score", "{corpus}", "--per-line"]]



def command_line(console_script, trained, words):
    words = [w.format(corpus=trained.corpus) for w in words]
    return f"'{console_script}' {words[0]} '{trained.ckpt}' " + \
        " ".join(f"'{w}'" for w in words[1:]) + " --threads 1" * (words[0] != "info")



@pytest.mark.slow  # a subprocess or a compile: `make test-fast` leaves it out
@pytest.mark.parametrize("words", STDOUT_COMMANDS)
@pytest.mark.parametrize("redirect, message", [
    ("> /dev/full", "No space left on device"), (">&-", "it is closed")])
def test_unwritable_stdout_fails_in_one_line(trained, console_script, words, redirect, message):
    done = shell(f"{command_line(console_script, trained, words)} {redirect}",
                 env=script_env())
    assert done.returncode == 1, done.stderr
    assert done.stderr.decode() == f"Error: cannot write to standard output: {message}\n"



@pytest.mark.slow  # a subprocess or a compile: `make test-fast` leaves it out
@pytest.mark.parametrize("words", STDOUT_COMMANDS)
def test_every_command_ends_quietly_when_the_reader_has_gone(trained, console_script, words):
    # The reader exits before the command writes: every command, not only sample,
    # ends with status 0 and says nothing.
    done = shell(f"(sleep 0.3; {command_line(console_script, trained, words)}) | true; "
                 "echo ${PIPESTATUS[0]}", env=script_env())
    assert done.stdout == b"0\n", done.stderr
    assert done.stderr == b""



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
