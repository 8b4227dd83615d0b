"""The note on stderr while kernels compile: once per command, on stderr only, never on a
warm cache, never a crash. One real cold-cache run (the cheapest command, `score`, in a
fresh NUMBA_CACHE_DIR); the rest drives the listener with Numba's own events in-process.
"""

import contextlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from numba.core import event

from charrnn import compile_note
from charrnn.cli import cli
from charrnn.kernels.optim import sum_of_squares

CONSOLE_SCRIPT = Path(sys.executable).with_name("charrnn")
TINY = ["--steps", "2", "--hidden", "8", "--layers", "1", "--embed", "4", "--seq-len", "8",
        "--batch-size", "2", "--threads", "1"]


@pytest.fixture
def note_on(monkeypatch):
    monkeypatch.delenv(compile_note.SILENCE_VARIABLE, raising=False)


def compiling(dispatcher):
    """Broadcast what Numba broadcasts when dispatcher starts and ends compiling."""
    data = {"dispatcher": dispatcher, "args": (), "return_type": None}
    for status in (event.EventStatus.START, event.EventStatus.END):
        event.broadcast(event.Event("numba:compile", status, data=data))


def test_note_once_for_charrnn_kernels_only_while_active(note_on):
    said = []
    with compile_note.note_when_compiling(said.append, "sample"):
        assert said == []
        compiling(event)  # not a dispatcher: ignored, no crash
        compiling(sum_of_squares)
        compiling(sum_of_squares)
        assert said == [compile_note.NOTE.format(seconds=compile_note.COMPILE_SECONDS["sample"])]
    compiling(sum_of_squares)
    assert len(said) == 1


def test_other_code_compiling_is_no_note(note_on):
    numba = pytest.importorskip("numba")
    said = []
    with compile_note.note_when_compiling(said.append, "train"):
        compiling(numba.njit(lambda x: x))
    assert said == []


def test_a_failing_note_does_not_fail_the_compile(note_on):
    def say(line):
        raise OSError("stderr is closed")
    with compile_note.note_when_compiling(say, "score"):
        compiling(sum_of_squares)


def test_the_variable_silences_the_note(monkeypatch):
    monkeypatch.setenv(compile_note.SILENCE_VARIABLE, "1")
    said = []
    with compile_note.note_when_compiling(said.append, "train"):
        compiling(sum_of_squares)
    assert said == []


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory, tiny_text):
    folder = tmp_path_factory.mktemp("note")
    (folder / "tiny.txt").write_text(tiny_text, encoding="utf-8")
    result = CliRunner().invoke(cli, ["train", str(folder / "tiny.txt"), "-o",
                                      str(folder / "m.ckpt"), "--quiet", *TINY])
    assert result.exit_code == 0, result.output
    return folder / "m.ckpt", folder / "tiny.txt"


def test_commands_note_on_stderr_and_train_quiet_does_not(tiny_ckpt, tmp_path, monkeypatch):
    """Each command listens while it runs; the note goes to stderr, never stdout."""
    commands = []

    @contextlib.contextmanager
    def listening(say, command):
        commands.append(command)
        say("NOTE")  # as if a kernel started compiling
        yield
    monkeypatch.setattr(compile_note, "note_when_compiling", listening)
    ckpt, text = tiny_ckpt
    runs = {
        "train": ["train", text, "-o", tmp_path / "t.ckpt", *TINY],
        "quiet": ["train", text, "-o", tmp_path / "q.ckpt", *TINY, "--quiet"],
        "sample": ["sample", ckpt, "-n", "5", "--seed", "1"],
        "score": ["score", ckpt, text],
    }
    for name, args in runs.items():
        result = CliRunner().invoke(cli, [str(a) for a in args])
        assert result.exit_code == 0, result.output
        assert "NOTE" not in result.stdout
        assert ("NOTE" in result.stderr) == (name != "quiet"), name
    assert commands == ["train", "sample", "score"]


@pytest.mark.slow  # a subprocess or a compile: `make test-fast` leaves it out
def test_cold_cache_says_compiling_once_then_never(tiny_ckpt, tmp_path):
    if not CONSOLE_SCRIPT.exists():
        pytest.skip(f"{CONSOLE_SCRIPT} is not installed (run `make install`)")
    ckpt, text = tiny_ckpt
    env = {k: v for k, v in os.environ.items() if k != compile_note.SILENCE_VARIABLE}
    env["NUMBA_CACHE_DIR"] = str(tmp_path / "empty-numba-cache")
    command = [str(CONSOLE_SCRIPT), "score", str(ckpt), str(text)]
    cold = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    warm = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert cold.returncode == 0 and warm.returncode == 0, cold.stderr + warm.stderr
    assert cold.stderr.splitlines() == [
        compile_note.NOTE.format(seconds=compile_note.COMPILE_SECONDS["score"])]
    assert warm.stderr == ""
    assert cold.stdout == warm.stdout and "bits/char" in cold.stdout
