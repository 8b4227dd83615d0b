"""Throughput benchmark: training and one-stream sampling chars/s for fixed configs,
side by side with PyTorch's CPU LSTM when torch is importable (never a dependency).

Each measurement burns in (compiles, warms caches) before it times, then runs whole
steps for a fixed wall-clock budget. Ratios between charrnn and PyTorch measured in the
same run are the figures to quote: a shared machine is noisy. So training is timed in
rounds that alternate with the peer's (TRAIN_ROUNDS), and its ratio is the median of
the rounds' ratios.

The extras (`charrnn bench --extras`: start-up, peak memory, thread scaling, whole
training processes) are extras.py's; the PyTorch peer's process is peer.py's; this
module holds the configs, the timed loops of both and the child processes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from ..runtime import BLAS_THREAD_VARIABLES

# name: (layers, hidden, batch N, seq T); all LSTM, embedding 64, vocabulary 65, Adam, clip 5
CONFIGS = {
    "S": (1, 128, 32, 64),
    "M": (2, 128, 50, 50),
    "L": (2, 512, 50, 50),
    "B1": (2, 128, 1, 50),
}
VOCAB = 65
EMBED = 64
# Training is timed in this many rounds, charrnn's and the peer's in turns, each a
# share of --seconds; the ratio is the median of the rounds' (bench/peer.py says why).
TRAIN_ROUNDS = 3


def blas_description() -> str:
    """Which OpenBLAS kernels numpy and scipy run, and their threads."""
    from ..runtime import blas_kernels
    return blas_kernels()


def kernel_isa() -> str:
    """The vector width charrnn's kernels were compiled for (kernels/panels.py)."""
    from ..kernels.panels import VECTOR_BYTES
    return "AVX-512" if VECTOR_BYTES == 64 else "AVX2"


def timed(step, seconds: float, burn_in: int = 3) -> tuple[float, int]:
    """Run step() burn_in times, then repeatedly for `seconds`; return (seconds, calls)."""
    for _ in range(burn_in):
        step()
    calls, start = 0, time.perf_counter()
    while True:
        step()
        calls += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return elapsed, calls


def bench_model(layers, hidden):
    """(model, vocab): the benchmark's LSTM, freshly initialised, on VOCAB characters."""
    from ..model import Model, ModelConfig
    from ..vocab import Vocab

    vocab = Vocab(tuple(chr(33 + k) for k in range(VOCAB)), (1,) * VOCAB)
    model = Model(ModelConfig("lstm", VOCAB, hidden, layers, EMBED))
    model.initialise(np.random.default_rng(0))
    return model, vocab


def charrnn_train(layers, hidden, batch, seq, seconds) -> float:
    """Training chars/s of one timing (TrainTimer)."""
    with TrainTimer(layers, hidden, batch, seq) as timer:
        return timer.rate(seconds)


class TrainTimer:
    """Training chars/s: Trainer.train_step, the step `charrnn train` runs (batches read
    from an id file as the corpus cache keeps them, forward, backward, clipping, Adam),
    on a trainer kept between timings. Left out: the run's periodic validation and
    checkpoint writes."""

    def __init__(self, layers, hidden, batch, seq):
        from ..corpus import IdFile
        from ..trainer import Trainer, TrainOptions

        model, vocab = bench_model(layers, hidden)
        self._tmp = tempfile.TemporaryDirectory()
        path = os.path.join(self._tmp.name, "ids.uint8")
        np.random.default_rng(1).integers(0, VOCAB, 400_000).astype(np.uint8).tofile(path)
        ids = IdFile(path, np.uint8)
        options = TrainOptions(seq_len=seq, batch_size=batch, eval_every=0, save_every=0)
        self.trainer = Trainer(model, vocab, ids, ids[:1000], options,
                               os.path.join(self._tmp.name, "b.ckpt"))
        self.chars_per_step = batch * seq
        self.timings = 0

    def rate(self, seconds: float) -> float:
        burn_in = 3 if not self.timings else 1  # a round's first step warms the caches again
        elapsed, calls = timed(self.trainer.train_step, seconds, burn_in)
        self.timings += 1
        return calls * self.chars_per_step / elapsed

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._tmp.cleanup()


def charrnn_sample(layers, hidden, seconds, precision="auto") -> float:
    from ..sample import Decoding, Sampler

    rng = np.random.default_rng(0)
    model, vocab = bench_model(layers, hidden)
    sampler = Sampler(model, vocab, precision)
    chunk = 20_000 if hidden <= 256 else 2_000

    def run():
        for _ in sampler.stream(np.array([1, 2], np.int64), chunk, Decoding(), rng,
                                first_chunk=chunk, max_chunk=chunk):
            pass
    elapsed, calls = timed(run, seconds, burn_in=1)
    return calls * chunk / elapsed


def torch_train(layers, hidden, batch, seq, seconds) -> float:
    elapsed, calls = timed(torch_train_step(layers, hidden, batch, seq), seconds)
    return calls * batch * seq / elapsed


def torch_train_step(layers, hidden, batch, seq):
    """PyTorch's training step on the config's shapes, ready to call: the same sizes,
    Adam at 2e-3, clipping at 5, the state carried (truncated BPTT)."""
    import torch
    model, head, embed = torch_model(torch, layers, hidden)
    params = list(model.parameters()) + list(head.parameters()) + list(embed.parameters())
    optimizer = torch.optim.Adam(params, lr=2e-3)
    x = torch.randint(0, VOCAB, (batch, seq))
    y = torch.randint(0, VOCAB, (batch, seq))
    state = [None]

    def step():
        out, hc = model(embed(x), state[0])
        state[0] = tuple(s.detach() for s in hc)  # carried, truncated BPTT
        loss = torch.nn.functional.cross_entropy(head(out).reshape(-1, VOCAB), y.reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 5.0)
        optimizer.step()
    return step


def torch_sample(layers, hidden, seconds, onednn: bool) -> float:
    import torch
    model, head, embed = torch_model(torch, layers, hidden)
    previous = torch.backends.mkldnn.enabled
    torch.backends.mkldnn.enabled = onednn
    chunk = 2_000 if hidden <= 256 else 500

    def run():
        with torch.no_grad():
            token, state = torch.tensor([[1]]), None
            for _ in range(chunk):
                out, state = model(embed(token), state)
                probs = torch.softmax(head(out[:, -1]), dim=-1)
                token = torch.multinomial(probs, 1)
    try:
        elapsed, calls = timed(run, seconds, burn_in=1)
    finally:
        torch.backends.mkldnn.enabled = previous
    return calls * chunk / elapsed


def torch_model(torch, layers, hidden):
    torch.manual_seed(0)
    embed = torch.nn.Embedding(VOCAB, EMBED)
    model = torch.nn.LSTM(EMBED, hidden, layers, batch_first=True)
    head = torch.nn.Linear(hidden, VOCAB)
    return model, head, embed


def run_config(name: str, seconds: float, with_torch: bool = True) -> dict:
    from contextlib import nullcontext

    from ..parallel import thread_count
    from .peer import TorchPeer
    layers, hidden, batch, seq = CONFIGS[name]
    row = {"config": name, "layers": layers, "hidden": hidden, "batch": batch, "seq": seq,
           "dtype": "float32", "threads": thread_count(), "isa": kernel_isa()}
    with TrainTimer(layers, hidden, batch, seq) as timer, \
            (TorchPeer(name, row["threads"]) if with_torch else nullcontext()) as peer:
        rounds = []  # (charrnn's chars/s, the peer's or None), in the order measured
        for _ in range(TRAIN_ROUNDS):
            rounds.append((timer.rate(seconds / TRAIN_ROUNDS),
                           peer.train(seconds / TRAIN_ROUNDS) if peer else None))
        row["train_chars_per_s"] = float(np.median([ours for ours, _ in rounds]))
        if batch > 1:
            # the default precision's figure, and both precisions' for comparison
            from ..sample import generates_in_bfloat16
            model, _ = bench_model(layers, hidden)
            row["sample_precision"] = "bfloat16" if generates_in_bfloat16(model) else "float32"
            for precision in ("float32", "bfloat16"):
                row[f"sample_{precision}_chars_per_s"] = charrnn_sample(layers, hidden,
                                                                        seconds, precision)
            row["sample_chars_per_s"] = row[f"sample_{row['sample_precision']}_chars_per_s"]
        if peer:
            row.update(peer_figures(peer, rounds, seconds, batch > 1))
    if "torch_sample_chars_per_s" in row:
        row["sample_ratio"] = row["sample_chars_per_s"] / max(
            row["torch_sample_chars_per_s"], row["torch_sample_no_onednn_chars_per_s"])
    row["blas"] = blas_description()  # after the runs: scipy's loads with the kernels
    return row


def peer_figures(peer, rounds: list[tuple], seconds: float, sampling: bool) -> dict:
    """The PyTorch peer's fields of a config's row: its training rate and the ratio,
    the median of the rounds' ratios (each round's rates measured one after the other),
    its sampling rates; or why it was not measured."""
    if not peer.measures:
        return {"torch": peer.hello.get("torch") or f"not measured: {peer.error}"}
    theirs = [rate for _, rate in rounds]
    figures = {"torch": peer.hello["torch"]}
    if None not in theirs:
        ratios = [ours / rate for ours, rate in rounds]
        figures.update({"torch_train_chars_per_s": float(np.median(theirs)),
                        "train_ratio": float(np.median(ratios)), "train_round_ratios": ratios})
    if sampling:
        onednn, plain = peer.sample(seconds, True), peer.sample(seconds, False)
        if onednn is not None and plain is not None:
            figures.update({"torch_sample_chars_per_s": onednn,
                            "torch_sample_no_onednn_chars_per_s": plain})
    if peer.error is not None:  # failed part way: what it measured before stands
        figures["torch_error"] = peer.error
    return figures


def torch_env() -> dict:
    return {k: v for k, v in os.environ.items() if k not in BLAS_THREAD_VARIABLES}


def in_child(args: list, env: dict | None = None) -> dict:
    """Run `python -m charrnn.bench.speed --child ARGS` (see child_main); its JSON, or {"error": the
    last line it wrote to stderr}."""
    child = subprocess.run([sys.executable, "-m", "charrnn.bench.speed", "--child",
                            *map(str, args)],
                           capture_output=True, text=True, env=env)
    if child.returncode != 0:
        return {"error": (child.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(child.stdout)


def peak_rss_mb() -> float:
    """This process's peak resident memory in MiB: VmHWM, read by the process itself
    (in a parent, getrusage's RUSAGE_CHILDREN keeps the largest child ever, and Linux
    carries a parent's peak into a vfork-ed child's ru_maxrss)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB; bytes on macOS
    return peak / (1 << 20 if sys.platform == "darwin" else 1 << 10)


def train_peak_rss(peer: str, shape: tuple, seconds: float, threads: int) -> dict:
    """Train shape (layers, hidden, batch, seq) with peer ("charrnn" or "torch") in this
    process, which should be fresh (see child_main); chars/s and the peak RSS after."""
    layers, hidden, batch, seq = shape
    if peer == "torch":
        import torch
        torch.set_num_threads(threads)
        rate = torch_train(layers, hidden, batch, seq, seconds)
    else:
        from ..parallel import set_thread_count
        set_thread_count(threads)
        rate = charrnn_train(layers, hidden, batch, seq, seconds)
    return {"train_chars_per_s": rate, "peak_rss_mb": peak_rss_mb()}


def console_command() -> list[str]:
    """How a user starts charrnn: the console script beside this Python, else -m."""
    script = Path(sys.executable).with_name("charrnn")
    return [str(script)] if script.exists() else [sys.executable, "-m", "charrnn"]


def bench_rows(names: list[str], seconds: float, with_torch: bool = True,
               extras: bool = False):
    """The rows `charrnn bench` prints, each yielded as soon as it is measured."""
    from ..parallel import thread_count
    for name in names:
        yield run_config(name, seconds, with_torch)
    if extras:
        from .extras import peak_rss_row, startup_row, thread_scaling_row
        from .train_process import train_process_row
        yield startup_row()
        yield peak_rss_row(seconds, thread_count(), with_torch)
        yield thread_scaling_row(seconds)
        yield train_process_row(seconds, thread_count())


def shape_text(name: str, width: int = 0) -> str:
    layers, hidden, batch, seq = CONFIGS[name]
    return f"{name:>{width}} {layers}x{hidden} batch {batch}x{seq}"


def format_row(row: dict) -> str:
    if "measure" in row:
        from .extras import format_peak_rss, format_startup, format_thread_scaling
        from .train_process import format_train_process
        return {"startup": format_startup, "peak_rss": format_peak_rss,
                "thread_scaling": format_thread_scaling,
                "train_process": format_train_process}[row["measure"]](row)
    head = (f"{shape_text(row['config'], 2)} {row['dtype']} {row['isa']} threads "
            f"{row['threads']} | train "
            f"{row['train_chars_per_s']:,.0f} chars/s")
    if "torch_train_chars_per_s" in row:
        ratios = row["train_round_ratios"]
        head += (f" (torch {row['torch_train_chars_per_s']:,.0f}, ratio "
                 f"{row['train_ratio']:.2f}x, rounds {min(ratios):.2f}-{max(ratios):.2f}x)")
    if "sample_chars_per_s" in row:
        head += f" | sample {row['sample_chars_per_s']:,.0f} chars/s {row['sample_precision']}"
        if "torch_sample_chars_per_s" in row:
            best = max(row["torch_sample_chars_per_s"], row["torch_sample_no_onednn_chars_per_s"])
            head += f" (torch best {best:,.0f}, ratio {row['sample_ratio']:.2f}x)"
        other = "float32" if row["sample_precision"] == "bfloat16" else "bfloat16"
        head += f", --precision {other} {row[f'sample_{other}_chars_per_s']:,.0f}"
    return head + f" | BLAS {row['blas']}"


def child_main(argv: list[str]) -> dict:
    """What bench runs in a process of its own:
    `torch-peer NAME THREADS`: the PyTorch peer of config NAME (bench/peer.py), which
    answers requests on stdin until it closes;
    `train-rss PEER LAYERS,HIDDEN,BATCH,SEQ SECONDS THREADS`: see train_peak_rss."""
    kind, *rest = argv
    if kind == "torch-peer":
        from .peer import serve

        def reply(answer: dict) -> None:
            print(json.dumps(answer), flush=True)
        serve(rest[0], int(rest[1]), sys.stdin, reply)
        raise SystemExit(0)
    if kind == "train-rss":
        shape = tuple(int(size) for size in rest[1].split(","))
        return train_peak_rss(rest[0], shape, float(rest[2]), int(rest[3]))
    raise SystemExit(f"unknown child measurement {kind!r}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        print(json.dumps(child_main(sys.argv[2:])))
    else:  # the benchmark itself, with the options and set-up of `charrnn bench`
        from charrnn.cli import main
        main(["bench", *sys.argv[1:]])
