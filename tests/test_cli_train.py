"""`charrnn train` as users meet it: checkpoints, refusals, the --log, signals."""

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from clitools import (
    TINY,
    assert_fails,
    english_text,
    run,
    script_env,
    shell,
    train_tiny,
)

from charrnn.checkpoint import load_trained
from charrnn.signals import handle_stop_signals


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



@pytest.mark.slow  # a subprocess or a compile: `make test-fast` leaves it out
def test_a_diverging_run_says_so_without_numpy_warnings(trained, console_script, tmp_path):
    done = shell(f"'{console_script}' train '{trained.corpus}' -o '{tmp_path}/m.ckpt' "
                 + " ".join(TINY) + " --lr 1e30 --quiet", env=script_env())
    assert done.returncode == 1
    stderr = done.stderr.decode()
    assert "Warning" not in stderr and "Traceback" not in stderr, stderr
    assert stderr.splitlines()[-1].startswith("Error: loss is not finite")



@pytest.mark.slow  # a subprocess or a compile: `make test-fast` leaves it out
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
