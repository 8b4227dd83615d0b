"""What the command-line tests share: running the CLI in-process (run, assert_fails), the
tiny model's flags (TINY), texts generated here (english_text, chinese_text), and real
pipelines through the installed console script (shell, script_env)."""

import os
import random
import signal
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
from click.testing import CliRunner

from charrnn.cli import cli

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


def sample(trained, *args, input=None):
    result = run("sample", trained.ckpt, "--threads", "1", *args, input=input)
    assert result.exit_code == 0, result.stderr
    return result


def forward_nats(model, ids):
    """The model's own mean loss over ids[1:] given ids[:-1], from a zero state."""
    h, c = model.zero_state(1)
    ids = np.asarray(ids, np.int64)
    loss, _, _, _ = model.forward(ids[None, :-1], ids[None, 1:], h, c, need_grad=False)
    return loss


def script_env(**changes):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("LC_", "PYTHONIOENCODING", "PYTHONUTF8", "LANG"))}
    env.update(changes)
    return env


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
