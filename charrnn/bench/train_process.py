"""Whole `charrnn train` processes against the benchmark's training figure: the check
that `charrnn bench` times the loop a user runs.

The benchmark times Trainer.train_step alone (bench/speed.py, charrnn_train). A real
run adds what it leaves out: reading the corpus, periodic validation and checkpoint
writes, progress reporting. Two runs of the console script on the same generated
corpus, K1 and K2 steps, each timed whole: (K2 - K1) steps over the difference of their
times is the loop's speed with start-up (imports, kernel loading, the corpus pass)
cancelled out. Printed beside the benchmark's own figure for the same shape, with the
target that the two agree within 5% (never asserted).
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time

import numpy as np

REAL_LOOP_CONFIG = "M"
REAL_LOOP_TARGET_RATIO = 0.95  # the real loop's chars/s / the benchmark's, at least
FIRST_STEPS = 20  # K1: enough to cover start-up and the first evaluation's set-up
CORPUS_CHARS = 1_000_000


def train_process_row(seconds: float, threads: int) -> dict:
    """The real loop's chars/s for REAL_LOOP_CONFIG and the benchmark's, in this run."""
    from .speed import CONFIGS, EMBED, VOCAB, charrnn_train, console_command
    layers, hidden, batch, seq = CONFIGS[REAL_LOOP_CONFIG]
    bench_rate = charrnn_train(layers, hidden, batch, seq, seconds)
    # K2 - K1 steps take about 2 x seconds at the benchmark's speed, at least 20.
    extra_steps = max(20, int(2 * seconds * bench_rate / (batch * seq)))
    with tempfile.TemporaryDirectory() as tmp:
        corpus = os.path.join(tmp, "corpus.txt")
        rng = np.random.default_rng(2)
        letters = np.array([chr(33 + k) for k in range(VOCAB)])
        with open(corpus, "w", encoding="utf-8") as out:
            out.write("".join(letters[rng.integers(0, VOCAB, CORPUS_CHARS)]))
        env = {**os.environ, "CHARRNN_CACHE_DIR": os.path.join(tmp, "cache")}

        def run(steps: int) -> float:
            command = [*console_command(), "train", corpus, "-o",
                       os.path.join(tmp, f"m{steps}.ckpt"), "--steps", str(steps),
                       "--layers", str(layers), "--hidden", str(hidden), "--embed",
                       str(EMBED), "--batch-size", str(batch), "--seq-len", str(seq),
                       "--threads", str(threads), "--quiet", "--force"]
            start = time.perf_counter()
            done = subprocess.run(command, env=env, capture_output=True, text=True)
            if done.returncode != 0:
                raise RuntimeError(f"{' '.join(command)} failed: {done.stderr[-500:]}")
            return time.perf_counter() - start
        run(FIRST_STEPS)  # warms the caches: the corpus's ids, the kernels, the OS's
        first, second = run(FIRST_STEPS), run(FIRST_STEPS + extra_steps)
    real_rate = extra_steps * batch * seq / max(second - first, 1e-9)
    return {"measure": "train_process", "config": REAL_LOOP_CONFIG, "threads": threads,
            "steps": [FIRST_STEPS, FIRST_STEPS + extra_steps],
            "train_chars_per_s": real_rate, "bench_train_chars_per_s": bench_rate,
            "ratio": real_rate / bench_rate, "target_min_ratio": REAL_LOOP_TARGET_RATIO}


def format_train_process(row: dict) -> str:
    from .speed import shape_text
    k1, k2 = row["steps"]
    return (f"charrnn train process {shape_text(row['config'])} threads {row['threads']}: "
            f"{row['train_chars_per_s']:,.0f} chars/s over steps {k1}-{k2} (bench "
            f"{row['bench_train_chars_per_s']:,.0f}), ratio {row['ratio']:.2f}x | target >= "
            f"{row['target_min_ratio']:.2f}x")
