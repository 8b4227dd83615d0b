"""Throughput benchmark: training and one-stream sampling chars/s for fixed configs,
side by side with PyTorch's CPU LSTM when torch is importable (never a dependency).

Each measurement burns in (compiles, warms caches) before it times, then runs whole
steps for a fixed wall-clock budget. Ratios between charrnn and PyTorch measured in the
same run are the figures to quote: this machine is shared and noisy.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

from . import BLAS_THREAD_VARIABLES

# name: (layers, hidden, batch N, seq T); all LSTM, embedding 64, vocabulary 65, Adam, clip 5
CONFIGS = {
    "S": (1, 128, 32, 64),
    "M": (2, 128, 50, 50),
    "L": (2, 512, 50, 50),
    "B1": (2, 128, 1, 50),
}
VOCAB = 65
EMBED = 64


def blas_description() -> str:
    """Which BLAS kernels numpy/scipy run, as threadpoolctl reports them (if installed)."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return "unknown (pip install threadpoolctl to report it)"
    seen = {f"{p.get('internal_api')} {p.get('version')} {p.get('architecture')} "
            f"x{p.get('num_threads')}" for p in threadpool_info() if p.get("user_api") == "blas"}
    return "; ".join(sorted(seen)) or "none found"


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


def charrnn_train(layers, hidden, batch, seq, seconds) -> float:
    from .model import Model, ModelConfig
    from .train import Trainer, TrainOptions
    from .vocab import Vocab

    rng = np.random.default_rng(0)
    ids = rng.integers(0, VOCAB, 400_000).astype(np.uint8)
    vocab = Vocab(tuple(chr(33 + k) for k in range(VOCAB)), (1,) * VOCAB)
    model = Model(ModelConfig("lstm", VOCAB, hidden, layers, EMBED))
    model.initialise(rng)
    with tempfile.TemporaryDirectory() as tmp:
        options = TrainOptions(seq_len=seq, batch_size=batch, eval_every=0, save_every=0)
        trainer = Trainer(model, vocab, ids, ids[:1000], options, os.path.join(tmp, "b.ckpt"))
        elapsed, calls = timed(trainer.train_step, seconds)
    return calls * batch * seq / elapsed


def charrnn_sample(layers, hidden, seconds) -> float:
    from .model import Model, ModelConfig
    from .sample import Decoding, Sampler
    from .vocab import Vocab

    rng = np.random.default_rng(0)
    vocab = Vocab(tuple(chr(33 + k) for k in range(VOCAB)), (1,) * VOCAB)
    model = Model(ModelConfig("lstm", VOCAB, hidden, layers, EMBED))
    model.initialise(rng)
    sampler = Sampler(model, vocab)
    chunk = 20_000 if hidden <= 256 else 2_000

    def run():
        for _ in sampler.stream(np.array([1, 2], np.int64), chunk, Decoding(), rng,
                                first_chunk=chunk, max_chunk=chunk):
            pass
    elapsed, calls = timed(run, seconds, burn_in=1)
    return calls * chunk / elapsed


def torch_train(layers, hidden, batch, seq, seconds) -> float:
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
    elapsed, calls = timed(step, seconds)
    return calls * batch * seq / elapsed


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
    from .parallel import thread_count
    layers, hidden, batch, seq = CONFIGS[name]
    row = {"config": name, "layers": layers, "hidden": hidden, "batch": batch, "seq": seq,
           "dtype": "float32", "threads": thread_count(), "blas": blas_description(),
           "train_chars_per_s": charrnn_train(layers, hidden, batch, seq, seconds)}
    if batch > 1:
        row["sample_chars_per_s"] = charrnn_sample(layers, hidden, seconds)
    if with_torch:
        row.update(torch_peer(name, seconds, row["threads"]))
    if "torch_train_chars_per_s" in row:
        row["train_ratio"] = row["train_chars_per_s"] / row["torch_train_chars_per_s"]
    if "torch_sample_chars_per_s" in row:
        row["sample_ratio"] = row["sample_chars_per_s"] / max(
            row["torch_sample_chars_per_s"], row["torch_sample_no_onednn_chars_per_s"])
    return row


def torch_peer(name: str, seconds: float, threads: int) -> dict:
    """Measure PyTorch in a child process: its OpenMP pool and Numba's would otherwise
    spin against each other, and it gets the thread settings a plain user run has."""
    env = {k: v for k, v in os.environ.items() if k not in BLAS_THREAD_VARIABLES}
    child = subprocess.run([sys.executable, "-m", "charrnn.bench", name, str(seconds),
                            str(threads)], capture_output=True, text=True, env=env)
    if child.returncode != 0:
        last = (child.stderr.strip().splitlines() or ["failed"])[-1]
        return {"torch": f"not measured: {last}"}
    return json.loads(child.stdout)


def torch_row(name: str, seconds: float, threads: int) -> dict:
    try:
        import torch
    except ImportError:
        return {"torch": "not installed"}
    torch.set_num_threads(threads)
    layers, hidden, batch, seq = CONFIGS[name]
    row = {"torch": torch.__version__,
           "torch_train_chars_per_s": torch_train(layers, hidden, batch, seq, seconds)}
    if batch > 1:
        row["torch_sample_chars_per_s"] = torch_sample(layers, hidden, seconds, True)
        row["torch_sample_no_onednn_chars_per_s"] = torch_sample(layers, hidden, seconds, False)
    return row


def format_row(row: dict) -> str:
    head = (f"{row['config']:>2} {row['layers']}x{row['hidden']} batch {row['batch']}x"
            f"{row['seq']} {row['dtype']} threads {row['threads']} | train "
            f"{row['train_chars_per_s']:,.0f} chars/s")
    if "torch_train_chars_per_s" in row:
        head += (f" (torch {row['torch_train_chars_per_s']:,.0f}, ratio "
                 f"{row['train_ratio']:.2f}x)")
    if "sample_chars_per_s" in row:
        head += f" | sample {row['sample_chars_per_s']:,.0f} chars/s"
        if "torch_sample_chars_per_s" in row:
            best = max(row["torch_sample_chars_per_s"], row["torch_sample_no_onednn_chars_per_s"])
            head += f" (torch best {best:,.0f}, ratio {row['sample_ratio']:.2f}x)"
    return head + f" | BLAS {row['blas']}"


if __name__ == "__main__":  # the PyTorch peer, run by torch_peer in its own process
    print(json.dumps(torch_row(sys.argv[1], float(sys.argv[2]), int(sys.argv[3]))))
