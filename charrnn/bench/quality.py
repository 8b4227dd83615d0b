"""Quality benchmark: validation bits/char of `charrnn train` with its defaults at fixed
wall-clock budgets, side by side with a PyTorch LSTM trained for the same time.

    python -m charrnn.bench.quality                  # or: make bench-quality
    python -m charrnn.bench.quality --budgets 20 --torch-budgets 20 --json

The recipe: tiny shakespeare (../shared/data/tinyshakespeare.txt beside the
repository, else data/tinyshakespeare.txt from `make shakespeare`, else --corpus), the
first 90% of its characters to train on and the last 10% to score, with the state
carried through the whole validation text. For each budget, `charrnn train train.txt
-o m.ckpt --time-limit BUDGET --quiet` runs with no other flags (the defaults are what is
measured), then `charrnn score` (static, and with --adapt), `charrnn info` and `charrnn
sample` read the checkpoint. Every step is the console script in a child process, as a
user would run it.

The PyTorch peer (when torch is importable; never a dependency) is a standard recipe: a
2 x 256 LSTM, embedding 64, batch 32 x 64 with the state carried across batches
(truncated BPTT, reset when the streams wrap), Adam 2e-3, gradient norm clipped to 5,
PyTorch's default initialisation, seed 0; it is scored statically and then adapting as
`score --adapt` does (the same segments, optimizer, clip and decay), at its best of
three rates (PEER_ADAPT_LRS). It runs in its own process, as charrnn.bench.speed's peer
does, so its OpenMP pool never spins against charrnn's threads; it gets the same thread
count. Both clocks start when the training loop does, so neither counts start-up;
charrnn's includes its periodic validation passes, the peer has none.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ..defaults import ADAPT_CLIP, ADAPT_DECAY, ADAPT_LR, ADAPT_SEGMENT
from ..runtime import BLAS_THREAD_VARIABLES, one_blas_thread

REPO_ROOT = Path(__file__).resolve().parent.parent
TRAIN_FRACTION = 0.9
DEFAULT_BUDGETS = "75,600"
TORCH_MAX_BUDGET = 120.0  # the peer's default: budgets up to this many seconds
SAMPLE_ARGS = ["-n", "300", "--seed", "7", "--temperature", "0.8"]
# The PyTorch peer: (layers, hidden, embedding, batch N, seq T, Adam lr, clip)
PEER = {"layers": 2, "hidden": 256, "embed": 64, "batch": 32, "seq": 64, "lr": 2e-3,
        "clip": 5.0}
VAL_CHUNK = 8192  # validation chars per forward call of the peer (one stream)
# The peer adapts at each of these rates and reports its best: its best rate is not
# charrnn's (docs/quality.md, "Scoring with --adapt").
PEER_ADAPT_LRS = (ADAPT_LR, ADAPT_LR / 2, ADAPT_LR / 4)


class BenchError(RuntimeError):
    """A child run failed; the message names the command and its last stderr line."""


def default_corpora() -> list[Path]:
    return [REPO_ROOT.parent / "shared" / "data" / "tinyshakespeare.txt",
            REPO_ROOT / "data" / "tinyshakespeare.txt"]


def find_corpus(given: str | None) -> Path | None:
    """The corpus to use: the one given, else the first default that exists, else None."""
    if given is not None:
        return Path(given)
    return next((path for path in default_corpora() if path.is_file()), None)


def read_utf8(path: Path) -> str:
    """The text as it is stored: newline="" keeps \r\n from being folded to \n."""
    try:
        with open(path, encoding="utf-8", newline="") as handle:
            return handle.read()
    except UnicodeDecodeError as error:
        raise BenchError(f"{path} is not UTF-8 text ({error.reason} at byte "
                         f"{error.start:,}); give a UTF-8 --corpus") from None


def split_corpus(corpus: Path, directory: Path) -> tuple[Path, Path, int, int]:
    """Write the first TRAIN_FRACTION of the characters to train.txt and the rest to
    val.txt in directory; returns (train path, val path, train chars, val chars)."""
    text = read_utf8(corpus)
    n_train = int(len(text) * TRAIN_FRACTION)
    train, val = directory / "train.txt", directory / "val.txt"
    for path, part in ((train, text[:n_train]), (val, text[n_train:])):
        with open(path, "w", encoding="utf-8", newline="") as handle:
            handle.write(part)
    return train, val, n_train, len(text) - n_train


def parse_budgets(text: str) -> list[float]:
    """'75,600' -> [75.0, 600.0]: seconds, each positive and finite."""
    try:
        budgets = [float(part) for part in text.split(",")]
    except ValueError:
        budgets = []
    if not budgets or not all(math.isfinite(b) and b > 0 for b in budgets):
        raise argparse.ArgumentTypeError(f"{text!r} is not a list of seconds like 75,600")
    return budgets


def last_line(stderr: str) -> str:
    return (stderr.strip().splitlines() or ["no message"])[-1]


def charrnn(args: list[str], env: dict) -> str:
    """Run the console script (this Python's `-m charrnn`); return its stdout."""
    command = [sys.executable, "-m", "charrnn", *args]
    child = subprocess.run(command, capture_output=True, text=True, encoding="utf-8",
                           env=env, stdin=subprocess.DEVNULL)
    if child.returncode != 0:
        raise BenchError(f"charrnn {' '.join(args)} exited with {child.returncode}: "
                         f"{last_line(child.stderr)}")
    return child.stdout


def run_charrnn(budget: float, train: Path, val: Path, directory: Path) -> dict:
    """Train with the defaults for budget seconds, then score, describe and sample."""
    # Corpus ids are cached beside the run, not in the user's ~/.cache.
    env = {**os.environ, "CHARRNN_CACHE_DIR": str(directory / "ids-cache")}
    checkpoint = str(directory / f"charrnn-{budget:g}s.ckpt")
    start = time.perf_counter()
    charrnn(["train", str(train), "-o", checkpoint, "--time-limit", f"{budget:g}", "--quiet"],
            env)
    wall = time.perf_counter() - start
    score = json.loads(charrnn(["score", checkpoint, str(val), "--json"], env))
    adapted = json.loads(charrnn(["score", checkpoint, str(val), "--json", "--adapt"], env))
    info = json.loads(charrnn(["info", checkpoint, "--json"], env))
    sample = charrnn(["sample", checkpoint, *SAMPLE_ARGS], env)
    return {"budget_s": budget, "bits_per_char": score["bits_per_char"],
            "nats_per_char": score["nats_per_char"], "val_chars": score["chars"],
            "adapt_nats_per_char": adapted["nats_per_char"],
            "unknown_chars": score["unknown_chars"], "steps": info["step"],
            "chars_seen": info["chars_seen"], "train_seconds": info["train_seconds"],
            "wall_s": wall, "model": {k: info[k] for k in
                                      ("cell", "layers", "hidden", "embed", "dropout", "params")},
            "sample": sample}


def torch_peer(budget: float, train: Path, val: Path, threads: int) -> dict:
    """Train and score the PyTorch peer in a child process (see the module docstring)."""
    env = {k: v for k, v in os.environ.items() if k not in BLAS_THREAD_VARIABLES}
    child = subprocess.run([sys.executable, "-m", "charrnn.bench.quality", "--torch-worker",
                            str(train), str(val), "--budgets", f"{budget:g}", "--threads",
                            str(threads)], capture_output=True, text=True, env=env,
                           stdin=subprocess.DEVNULL)
    if child.returncode != 0:
        return {"torch": f"not measured: {last_line(child.stderr)}"}
    return json.loads(child.stdout)


def torch_worker(train: Path, val: Path, budget: float, threads: int) -> dict:
    """The peer itself: train for budget seconds, then score val as one stream."""
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    train_text, val_text = read_utf8(train), read_utf8(val)
    chars = sorted(set(train_text))
    index = {ch: k for k, ch in enumerate(chars)}
    V, N, T = len(chars), PEER["batch"], PEER["seq"]
    train_ids = torch.tensor([index[ch] for ch in train_text], dtype=torch.long)  # (n,)
    # Characters the training text lacks are skipped, as `charrnn score` skips them.
    val_ids = torch.tensor([index[ch] for ch in val_text if ch in index], dtype=torch.long)

    embed = torch.nn.Embedding(V, PEER["embed"])
    lstm = torch.nn.LSTM(PEER["embed"], PEER["hidden"], PEER["layers"], batch_first=True)
    head = torch.nn.Linear(PEER["hidden"], V)
    params = [*embed.parameters(), *lstm.parameters(), *head.parameters()]
    optimizer = torch.optim.Adam(params, lr=PEER["lr"])

    # N contiguous streams, as charrnn's BatchStream lays them out: stream s is
    # ids[s*S : s*S + S + 1]; batch b takes T chars of each from b*T.
    S = (len(train_ids) - 1) // N
    starts = (torch.arange(N) * S)[:, None] + torch.arange(T)[None, :]  # (N, T)
    batches = S // T
    state, b, steps = None, 0, 0
    start = time.perf_counter()
    while time.perf_counter() - start < budget:
        if b == batches:  # a new pass: the carried state belongs to other text
            b, state = 0, None
        x = train_ids[starts + b * T]  # (N, T)
        y = train_ids[starts + b * T + 1]  # (N, T)
        out, state = lstm(embed(x), state)  # (N, T, H)
        state = tuple(s.detach() for s in state)  # carried, truncated BPTT
        loss = F.cross_entropy(head(out).reshape(-1, V), y.reshape(-1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, PEER["clip"])
        optimizer.step()
        b, steps = b + 1, steps + 1
    seconds = time.perf_counter() - start

    model = (embed, lstm, head, params)
    nats = peer_val_nats(model, val_ids, VAL_CHUNK)
    trained = [p.detach().clone() for p in params]
    adapted = {}  # the peer's best rate, not charrnn's: it can prefer a lower one
    for lr in PEER_ADAPT_LRS:
        with torch.no_grad():
            for p, value in zip(params, trained):
                p.copy_(value)
        adapted[lr] = peer_val_nats(model, val_ids, ADAPT_SEGMENT, lr)
    best_lr = min(adapted, key=adapted.get)
    return {"torch": torch.__version__, "torch_nats_per_char": nats,
            "torch_bits_per_char": nats / math.log(2),
            "torch_adapt_nats_per_char": adapted[best_lr], "torch_adapt_lr": best_lr,
            "torch_steps": steps, "torch_chars_seen": steps * N * T,
            "torch_train_seconds": seconds, "torch_params": sum(p.numel() for p in params)}


def peer_val_nats(model, val_ids, segment: int, adapt_lr: float = 0.0,
                  decay: float = ADAPT_DECAY) -> float:
    """Nats/char of the peer (embed, lstm, head, params) over val_ids as one stream, the
    first char unscored, `segment` chars per forward. With adapt_lr, one step after each
    segment as `charrnn score --adapt` takes it (Adam without momentum, the same clipping
    and decay) on every parameter in params, both of the LSTM's biases included (so the
    peer adapts as it trained); the weights are trained on from then on."""
    import torch
    import torch.nn.functional as F

    embed, lstm, head, params = model
    adapt = adapt_lr > 0
    adam = torch.optim.Adam(params, lr=adapt_lr, betas=(0.0, 0.999)) if adapt else None
    anchor = [p.detach().clone() for p in params]  # what the weights decay towards
    total, state = 0.0, None
    for k in range(0, len(val_ids) - 1, segment):
        x = val_ids[k:k + segment][None, :]  # (1, C)
        y = val_ids[k + 1:k + segment + 1]  # (C',) C' = C except at the end
        with torch.set_grad_enabled(adapt):
            out, state = lstm(embed(x[:, :len(y)]), state)  # (1, C', H)
            loss = F.cross_entropy(head(out[0]), y, reduction="sum")
        total += float(loss.detach())
        if adapt:
            state = tuple(s.detach() for s in state)
            adam.zero_grad(set_to_none=True)
            (loss / len(y)).backward()
            torch.nn.utils.clip_grad_norm_(params, ADAPT_CLIP)
            adam.step()
            with torch.no_grad():
                for p, trained in zip(params, anchor):
                    p += decay * (trained - p)
    return total / max(len(val_ids) - 1, 1)


def format_header() -> str:
    return (f"{'budget':>7}  {'bits/char':>9}  {'nats/char':>9}  {'adapt nats':>10}  "
            f"{'steps':>6}  {'chars seen':>11}  {'model':>10}  {'wall s':>6}  "
            f"{'torch nats':>10}  {'torch bits':>10}  {'torch adapt':>11}  {'torch steps':>11}")


def format_row(row: dict) -> str:
    model = f"{row['model']['layers']}x{row['model']['hidden']}"
    line = (f"{row['budget_s']:>6g}s  {row['bits_per_char']:>9.4f}  "
            f"{row['nats_per_char']:>9.4f}  {row['adapt_nats_per_char']:>10.4f}  "
            f"{row['steps']:>6,}  {row['chars_seen']:>11,}  {model:>10}  {row['wall_s']:>6.1f}")
    if "torch_nats_per_char" in row:
        line += (f"  {row['torch_nats_per_char']:>10.4f}  {row['torch_bits_per_char']:>10.4f}"
                 f"  {row['torch_adapt_nats_per_char']:>11.4f}  {row['torch_steps']:>11,}")
    elif "torch" in row:
        line += f"  torch {row['torch']}"
    return line


def working_directory(keep: str | None):
    """keep (created, and required to be empty), else a temporary directory that is
    removed afterwards."""
    import contextlib
    if keep is None:
        return tempfile.TemporaryDirectory(prefix="charrnn-quality-")
    path = Path(keep)
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise BenchError(f"--keep {keep}: not an empty directory; give a new one")
    path.mkdir(parents=True, exist_ok=True)
    return contextlib.nullcontext(str(path))


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", default=None,
                        help="text to split and train on [default: tiny shakespeare, "
                             "../shared/data/ beside the repository or data/]")
    parser.add_argument("--budgets", type=parse_budgets, default=parse_budgets(DEFAULT_BUDGETS),
                        help=f"training budgets in seconds, comma-separated [{DEFAULT_BUDGETS}]")
    parser.add_argument("--torch-budgets", type=parse_budgets, default=None,
                        help="budgets (among --budgets) at which to run the PyTorch peer "
                             f"[those up to {TORCH_MAX_BUDGET:g} s]")
    parser.add_argument("--no-torch", action="store_true",
                        help="skip the PyTorch peer even when torch is importable")
    parser.add_argument("--json", action="store_true", help="one JSON object per budget")
    parser.add_argument("--keep", metavar="DIR", default=None,
                        help="keep the split, checkpoints and id cache in DIR (new or empty)")
    parser.add_argument("--torch-worker", nargs=2, metavar=("TRAIN", "VAL"),
                        help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.torch_budgets is None:
        args.torch_budgets = [b for b in args.budgets if b <= TORCH_MAX_BUDGET]
    extra = [f"{b:g}" for b in args.torch_budgets if b not in args.budgets]
    if extra:
        parser.error(f"--torch-budgets {','.join(extra)} not among --budgets: add them there")
    if args.corpus is not None and not Path(args.corpus).is_file():
        parser.error(f"--corpus {args.corpus}: no such file")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.torch_worker:
        train, val = map(Path, args.torch_worker)
        print(json.dumps(torch_worker(train, val, args.budgets[0], args.threads)))
        return 0
    corpus = find_corpus(args.corpus)
    if corpus is None:
        print("bench-quality: skipped, no tiny shakespeare at ../shared/data/ or data/: "
              "run `make shakespeare` or give --corpus PATH", file=sys.stderr)
        return 0
    # As `charrnn` sets them in its children, so the BLAS reported is the one they run.
    one_blas_thread()
    from ..parallel import thread_count
    from .speed import blas_description
    threads, blas = thread_count(), blas_description()
    with_torch = not args.no_torch and importlib.util.find_spec("torch") is not None
    try:
        with working_directory(args.keep) as directory:
            directory = Path(directory)
            train, val, n_train, n_val = split_corpus(corpus, directory)
            if not args.json:
                print(f"corpus {corpus}: {n_train:,} chars to train on, {n_val:,} to score; "
                      f"{threads} threads; BLAS {blas}; peer: "
                      + ("PyTorch LSTM 2x256" if with_torch else
                         "none" if args.no_torch else "none (torch not installed)"))
                print(format_header(), flush=True)
            rows = []
            for budget in args.budgets:
                print(f"bench-quality: charrnn, {budget:g} s ...", file=sys.stderr, flush=True)
                row = {"corpus": str(corpus), "threads": threads, "blas": blas,
                       **run_charrnn(budget, train, val, directory)}
                if with_torch and budget in args.torch_budgets:
                    print(f"bench-quality: PyTorch peer, {budget:g} s ...", file=sys.stderr,
                          flush=True)
                    row.update(torch_peer(budget, train, val, threads))
                rows.append(row)
                print(json.dumps(row) if args.json else format_row(row), flush=True)
    except BenchError as error:
        print(f"bench-quality: {error}", file=sys.stderr)
        return 1
    if not args.json:
        for row in rows:
            print(f"\n--- charrnn sample after {row['budget_s']:g} s "
                  f"(-n 300 --seed 7 --temperature 0.8) ---\n{row['sample']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
