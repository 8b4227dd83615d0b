"""`charrnn bench --extras`: the measurements beside the configs, each printed with its
target and never asserted: start-up of `charrnn sample CKPT -n 20 --prime ROMEO:` on a
warm cache, peak
RSS training config M (charrnn and PyTorch, each in a fresh process), training L on 1
and 2 threads, and whole `charrnn train` processes (train_process.py).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import tempfile
import time

from .speed import (
    CONFIGS,
    bench_model,
    charrnn_train,
    console_command,
    in_child,
    shape_text,
    torch_env,
)

# The extras: which config each one measures, and its target (printed, not asserted).
STARTUP_CONFIG, RSS_CONFIG, SCALING_CONFIG = "M", "M", "L"
STARTUP_RUNS = 5  # launches timed after one warm-up; the median is reported
STARTUP_TARGET_S = 0.5  # warm cache: the first generated character within 0.5 s
STARTUP_PRIME = "ROMEO:"  # so the network runs over a prime before the first character
RSS_TARGET_RATIO = 1.0  # charrnn's peak RSS / PyTorch's, training M
RSS_SECONDS = 2.0  # the peak is reached in the first steps; timing longer adds nothing
SCALING_TARGET_RATIO = 1.6  # training L: chars/s on 2 threads / on 1


def startup_row() -> dict:
    """Launch to the first generated character of `charrnn sample CKPT -n 20 --prime
    ROMEO:` (CKPT: a model of config STARTUP_CONFIG) in a child process, as a user runs
    it; medians of STARTUP_RUNS launches after one that warms the caches (Numba's, the
    OS's)."""
    from ..checkpoint import save_trained
    layers, hidden, _, _ = CONFIGS[STARTUP_CONFIG]
    model, vocab = bench_model(layers, hidden)
    first, done = [], []
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "startup.ckpt")
        save_trained(path, model, vocab, {}, {})
        command = [*console_command(), "sample", path, "-n", "20", "--prime", STARTUP_PRIME,
                   "--seed", "1"]
        for run in range(STARTUP_RUNS + 1):
            start = time.perf_counter()
            child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            child.stdout.read(len(STARTUP_PRIME) + 1)  # the prime, then a character
            printed = time.perf_counter() - start
            _, stderr = child.communicate()
            if child.returncode != 0:
                raise RuntimeError(f"{' '.join(command)} failed: {stderr.decode()[-500:]}")
            if run:
                first.append(printed)
                done.append(time.perf_counter() - start)
    return {"measure": "startup", "config": STARTUP_CONFIG,
            "command": f"charrnn sample CKPT -n 20 --prime {STARTUP_PRIME}",
            "runs": STARTUP_RUNS,
            "first_char_s": statistics.median(first), "exit_s": statistics.median(done),
            "target_max_s": STARTUP_TARGET_S}


def peak_rss_row(seconds: float, threads: int, with_torch: bool = True) -> dict:
    """Peak RSS training config RSS_CONFIG, charrnn and PyTorch each in a fresh process
    (this one has held every other config)."""
    shape = CONFIGS[RSS_CONFIG]
    seconds = min(seconds, RSS_SECONDS)
    arguments = [",".join(map(str, shape)), seconds, threads]
    row = {"measure": "peak_rss", "config": RSS_CONFIG, "threads": threads,
           "target_max_ratio": RSS_TARGET_RATIO}
    mine = in_child(["train-rss", "charrnn", *arguments])
    if "error" in mine:
        raise RuntimeError(f"charrnn training in a child process failed: {mine['error']}")
    row["peak_rss_mb"] = mine["peak_rss_mb"]
    if with_torch:
        peer = in_child(["train-rss", "torch", *arguments], torch_env())
        if "error" in peer:
            row["torch"] = f"not measured: {peer['error']}"
        else:
            row["torch_peak_rss_mb"] = peer["peak_rss_mb"]
            row["ratio"] = row["peak_rss_mb"] / peer["peak_rss_mb"]
    return row


def thread_scaling_row(seconds: float) -> dict:
    """Training chars/s of config SCALING_CONFIG on 1 thread and on 2, in this process."""
    from ..parallel import set_thread_count, thread_count
    previous, rates = thread_count(), {}
    try:
        for threads in (1, 2):
            set_thread_count(threads)
            rates[threads] = charrnn_train(*CONFIGS[SCALING_CONFIG], seconds)
    finally:
        set_thread_count(previous)
    return {"measure": "thread_scaling", "config": SCALING_CONFIG,
            "train_chars_per_s_1_thread": rates[1], "train_chars_per_s_2_threads": rates[2],
            "ratio": rates[2] / rates[1], "target_min_ratio": SCALING_TARGET_RATIO}


def format_startup(row: dict) -> str:
    return (f"start-up {row['config']}: `{row['command']}`, warm cache: first character after "
            f"{row['first_char_s']:.2f} s, exit after {row['exit_s']:.2f} s (median of "
            f"{row['runs']}) | target <= {row['target_max_s']:.1f} s")


def format_peak_rss(row: dict) -> str:
    torch = (f"torch {row['torch_peak_rss_mb']:,.0f} MiB, ratio {row['ratio']:.2f}x"
             if "ratio" in row else f"torch {row.get('torch', 'not measured')}")
    return (f"peak RSS {shape_text(row['config'])} threads {row['threads']}, training: "
            f"charrnn {row['peak_rss_mb']:,.0f} MiB ({torch}) | target <= "
            f"{row['target_max_ratio']:.2f}x torch")


def format_thread_scaling(row: dict) -> str:
    return (f"thread scaling {shape_text(row['config'])}, training: 1 thread "
            f"{row['train_chars_per_s_1_thread']:,.0f} chars/s, 2 threads "
            f"{row['train_chars_per_s_2_threads']:,.0f} chars/s, ratio {row['ratio']:.2f}x "
            f"| target >= {row['target_min_ratio']:.1f}x")
