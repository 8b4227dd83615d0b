"""Big-corpus benchmark: peak memory of `charrnn train` on a 10 MB and a 1 GB generated
corpus, and training speed on a corpus of ~6,000 distinct (CJK) characters.

    python -m charrnn.bench.corpus                   # or: make bench-corpus
    python -m charrnn.bench.corpus --sizes 10M --seconds 3 --dir /var/tmp

Memory: each corpus is trained on twice in a child process (`charrnn train`, a small
model, a few steps): first with an empty id cache, then with it filled. The peak RSS is
the child's VmHWM, read by the child itself as it exits: the high-water mark of its own
address space, including the buffers it read the cached ids into. (getrusage's ru_maxrss
would not do: Linux carries the parent's peak into a child that was vfork-ed, as
subprocess does, so it reports the generator's memory.) Speed: the default model (LSTM
2x256, embedding 64, batch 32x64) trains in this process after a burn-in, on the CJK
corpus with the full and with the adaptive softmax, and, as the peer measured in the
same run, on the English one: the difference is what the 6,000-wide output layer costs.
The generated CJK text is flatter than real Chinese, so when data/chinese.txt is there
(`make chinese`) the adaptive softmax is also timed on it, widened to as many
characters (write_widened). PyTorch (when installed; never a dependency) trains the
same model on the generated corpora in a child process, with nn.Linear or
nn.AdaptiveLogSoftmaxWithLoss in charrnn's layout. All other text is generated here
from a fixed seed, nothing is downloaded, and the temporary directory is removed at
the end.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

from ..runtime import one_blas_thread

WORDS = ("the of and to in a is that it was for on with as his he be at by had not are but "
         "from or have an they which one you were her all she there would their we him "
         "been has when who will more no if out so said what up its about into than them "
         "can only other new some could time these two may then do first any my now such "
         "like our over man me even most made after also did many before must through "
         "back years where much your way well down should because each just those people "
         "River Garden Window Morning Letter, quiet; winter: summer! 1984 (2024) ?").split()
POOL_BYTES = 16 << 20  # distinct generated text; bigger corpora are slices of it
BLOCK_BYTES = 4 << 20  # each slice written
CJK_FIRST, CJK_DISTINCT = 0x4E00, 6000  # the CJK corpus: U+4E00 onwards
MEMORY_RUN = ["--hidden", "128", "--layers", "2", "--embed", "32", "--batch-size", "32",
              "--seq-len", "64", "--steps", "20", "--eval-every", "0", "--save-every", "0",
              "--val-chars", "20000", "--seed", "1"]
SPEED_MODEL = {"cell": "lstm", "hidden": 256, "layers": 2, "embed": 64}  # train's defaults
SPEED_BATCH = (32, 64)  # (N streams, T chars): train's defaults
REAL_TEXT = "data/chinese.txt"  # `make chinese` builds it


def parse_size(text: str) -> int:
    match = re.fullmatch(r"(\d+)([KMG]?)", text.strip().upper())
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size like 10M or 1G")
    return int(match.group(1)) << {"": 0, "K": 10, "M": 20, "G": 30}[match.group(2)]


def english_pool(size: int, seed: int, piece: int = 1 << 20) -> bytes:
    """size bytes of ASCII words, spaces and ~8% newlines, the same for a given seed;
    made a piece at a time to keep this process small."""
    import numpy as np
    rng = np.random.default_rng(seed)
    pieces, made = [], 0
    while made < size:
        words = [WORDS[k] for k in rng.integers(len(WORDS), size=piece // 4)]
        text = bytearray(" ".join(words).encode("ascii")[:min(piece, size - made)])
        view = np.frombuffer(text, np.uint8)  # writable: a bytearray's buffer
        spaces = np.flatnonzero(view == 32)
        view[spaces[rng.random(spaces.size) < 0.08]] = 10
        pieces.append(bytes(text))
        made += len(text)
    return b"".join(pieces)


def write_english(path: str, size: int, seed: int = 1) -> None:
    """A corpus of exactly size bytes: seeded slices of one generated pool."""
    import numpy as np
    pool = english_pool(min(size, POOL_BYTES), seed)
    rng = np.random.default_rng(seed + 1)
    with open(path, "wb") as handle:
        written = 0
        while written < size:
            count = min(BLOCK_BYTES, size - written, len(pool))
            start = int(rng.integers(0, len(pool) - count + 1))
            handle.write(pool[start:start + count])
            written += count


def write_widened(source: str, path: str, chars: int, seed: int = 3) -> None:
    """The first `chars` characters of a real text (data/chinese.txt), then lines of
    CJK characters it lacks, each three times, up to CJK_DISTINCT in all: a real
    text's frequencies with write_cjk's alphabet size."""
    import numpy as np
    with open(source, encoding="utf-8") as handle:
        text = handle.read(chars)
    seen = set(text)
    extra = [chr(code) for code in range(CJK_FIRST, CJK_FIRST + 2 * CJK_DISTINCT)
             if chr(code) not in seen][:max(0, CJK_DISTINCT - len(seen))]
    rng = np.random.default_rng(seed)
    lines = []
    for _ in range(3):
        shuffled = [extra[k] for k in rng.permutation(len(extra))]
        lines += ["".join(shuffled[k:k + 20]) for k in range(0, len(shuffled), 20)]
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text + "\n" + "\n".join(lines) + "\n")


def write_cjk(path: str, chars: int, seed: int = 2) -> None:
    """Lines of CJK characters with Zipf-like frequencies (as in real Chinese text), each
    of the CJK_DISTINCT characters at least once, with '，', '。' and newlines."""
    import numpy as np
    rng = np.random.default_rng(seed)
    weights = 1.0 / (np.arange(CJK_DISTINCT) + 10.0)
    lines = chars // 17
    ids = rng.choice(CJK_DISTINCT, size=(lines, 14), p=weights / weights.sum())
    codes = np.empty((lines, 17), np.uint32)  # 7 chars, '，', 7 chars, '。', '\n'
    codes[:, :7], codes[:, 8:15] = ids[:, :7] + CJK_FIRST, ids[:, 7:] + CJK_FIRST
    codes[:, 7], codes[:, 15], codes[:, 16] = ord("，"), ord("。"), ord("\n")
    every = np.arange(CJK_FIRST, CJK_FIRST + CJK_DISTINCT, dtype=np.uint32)
    text = np.concatenate([every, codes.reshape(-1)]).tobytes().decode("utf-32-le")
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text)


# ------------------------------------------------------------------------------ memory
# The child: the console script's main(), then its own peak RSS as the last stderr line.
CHILD = """
import sys
from charrnn.cli import main
try:
    main()
finally:
    from charrnn.bench.speed import peak_rss_mb
    sys.stderr.write(f"peak-rss-mb {peak_rss_mb()!r}\\n")
"""


def train_child(corpus: str, work: str, cache: str) -> dict:
    """Run `charrnn train` on corpus in a child process; its peak RSS and timings."""
    env = dict(os.environ, CHARRNN_CACHE_DIR=cache)
    start = time.perf_counter()
    child = subprocess.run([sys.executable, "-c", CHILD, "train", corpus, "-o",
                            os.path.join(work, "bench.ckpt"), "--force", *MEMORY_RUN],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    seconds = time.perf_counter() - start
    stderr = child.stderr.decode("utf-8", "replace")
    if child.returncode != 0:
        raise RuntimeError(f"training on {corpus} failed: {stderr.strip()[-500:]}")
    prepared = re.search(r"ids (cached in|reused from) \S+ \(([\d.]+) s\)", stderr)
    peak = re.search(r"^peak-rss-mb ([\d.]+)$", stderr, re.M)
    return {"peak_rss_mb": float(peak.group(1)), "seconds": seconds,
            "cache_hit": prepared.group(1) == "reused from",
            "corpus_seconds": float(prepared.group(2))}


def memory_rows(sizes: list[int], work: str) -> list[dict]:
    rows = []
    for size in sizes:
        corpus, cache = os.path.join(work, f"corpus-{size}.txt"), os.path.join(work, "cache")
        start = time.perf_counter()
        write_english(corpus, size)
        written = time.perf_counter() - start
        first, second = train_child(corpus, work, cache), train_child(corpus, work, cache)
        cached = sum(os.path.getsize(os.path.join(cache, name)) for name in os.listdir(cache))
        rows.append({"corpus_bytes": size, "generate_seconds": written, "first": first,
                     "second": second, "cache_bytes": cached})
        os.unlink(corpus)
        shutil.rmtree(cache)
    return rows


# ------------------------------------------------------------------------------- speed
def corpus_ids(corpus: str, cache: str):
    """(vocab, ids, counts per id) of corpus, every character kept."""
    from ..corpus import Corpus
    from ..vocab import Vocab
    with Corpus(corpus, cache=cache) as text:
        vocab = Vocab.from_counter(text.counts)
        return vocab, text.ids(vocab), text.id_counts(vocab)


def speed_row(corpus: str, cache: str, seconds: float, softmax: str = "full") -> dict:
    """Training and sampling chars/s of the default model on corpus, in this process,
    with the full or the adaptive softmax."""
    import numpy as np

    from ..adaptive import choose_layout
    from ..batches import split_ids
    from ..model import Model, ModelConfig
    from ..sample import Decoding, Sampler
    from ..trainer import Trainer, TrainOptions
    from .speed import timed

    vocab, ids, counts = corpus_ids(corpus, cache)
    layout = choose_layout(counts, vocab.unknown_id, SPEED_MODEL["hidden"]) \
        if softmax == "adaptive" else {}
    model = Model(ModelConfig(vocab_size=vocab.size, **SPEED_MODEL, **layout))
    model.initialise(np.random.default_rng(0), counts)
    train_ids, val_ids = split_ids(ids, 0.1)
    batch, seq = SPEED_BATCH
    options = TrainOptions(seq_len=seq, batch_size=batch, eval_every=0, save_every=0)
    trainer = Trainer(model, vocab, train_ids, val_ids, options,
                      os.path.join(cache, "unused.ckpt"))
    elapsed, calls = timed(trainer.train_step, seconds)
    sampler, rng, chunk = Sampler(model, vocab), np.random.default_rng(0), 2000

    def sample():
        for _ in sampler.stream(np.array(ids[:2], np.int64), chunk, Decoding(), rng,
                                first_chunk=chunk, max_chunk=chunk):
            pass
    sample_elapsed, sample_calls = timed(sample, seconds, burn_in=1)
    return {"vocab": vocab.size, "chars": len(ids), "softmax": softmax,
            "head": layout.get("head"), "tails": layout.get("tails"),
            "train_chars_per_s": calls * batch * seq / elapsed,
            "step_ms": 1000 * elapsed / calls,
            "sample_chars_per_s": sample_calls * chunk / sample_elapsed}


def output_layer_row(vocab_size: int, seconds: float) -> dict:
    """The output layer's two kinds of work alone, on one thread, at the speed run's
    shapes: one (M, H) x (H, V) product (a step makes three: logits, dWy and dx) and the
    softmax cross-entropy with its gradient (kernels.output.softmax_xent)."""
    import numpy as np

    from ..kernels.output import softmax_xent
    from .speed import timed
    M, H = SPEED_BATCH[0] * SPEED_BATCH[1], SPEED_MODEL["hidden"]
    rng = np.random.default_rng(0)
    x = rng.standard_normal((M, H), dtype=np.float32)  # (M, H) top-layer outputs
    Wy = (rng.standard_normal((H, vocab_size)) / np.sqrt(H)).astype(np.float32)  # (H, V)
    logits = np.empty((M, vocab_size), np.float32)  # (M, V)
    targets, losses = rng.integers(0, vocab_size, M), np.empty(M)
    product, calls = timed(lambda: np.matmul(x, Wy, out=logits), seconds)
    # In place again and again: each call turns its input into a gradient, whose
    # values are as finite as logits and cost the same exp per element.
    softmax, softmax_calls = timed(lambda: softmax_xent(logits, targets, 1.0 / M, losses),
                                   seconds)
    return {"M": M, "H": H, "V": vocab_size, "product_ms": 1000 * product / calls,
            "softmax_ms": 1000 * softmax / softmax_calls}


def torch_speed(corpus: str, cache: str, seconds: float, threads: int, softmax: str) -> dict:
    """PyTorch's training chars/s with the same model, batches from the same corpus, and
    the same output layer: nn.Linear with cross-entropy, or nn.AdaptiveLogSoftmaxWithLoss
    with charrnn's layout (its cutoffs, and div_value 4 for the H/4, H/16 clusters)."""
    import numpy as np
    import torch

    from ..adaptive import choose_layout
    from .speed import timed
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    vocab, ids, counts = corpus_ids(corpus, cache)
    V, H, E = vocab.size, SPEED_MODEL["hidden"], SPEED_MODEL["embed"]
    embed = torch.nn.Embedding(V, E)
    lstm = torch.nn.LSTM(E, H, SPEED_MODEL["layers"], batch_first=True)
    if softmax == "adaptive":
        layout = choose_layout(counts, None, H)
        rank = np.empty(V, np.int64)  # torch's classes are ids ranked by frequency
        rank[list(layout["output_order"])] = np.arange(V)
        ids = rank[ids]
        cutoffs = list(layout["head"] + np.cumsum([size for size, _ in layout["tails"]])[:-1])
        head = torch.nn.AdaptiveLogSoftmaxWithLoss(H, V, cutoffs, div_value=4.0)
    else:
        head = torch.nn.Linear(H, V)
    params = [*embed.parameters(), *lstm.parameters(), *head.parameters()]
    optimizer = torch.optim.Adam(params, lr=2e-3)
    batch, seq = SPEED_BATCH
    ids = torch.from_numpy(np.asarray(ids, np.int64))
    rng = np.random.default_rng(0)

    def step():
        starts = torch.from_numpy(rng.integers(0, len(ids) - seq - 1, batch))
        window = ids[starts[:, None] + torch.arange(seq + 1)]
        out, _ = lstm(embed(window[:, :-1]))
        out, target = out.reshape(-1, H), window[:, 1:].reshape(-1)
        loss = head(out, target).loss if softmax == "adaptive" else \
            torch.nn.functional.cross_entropy(head(out), target)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 5.0)
        optimizer.step()
    elapsed, calls = timed(step, seconds)
    return {"torch": torch.__version__, "train_chars_per_s": calls * batch * seq / elapsed}


def torch_row(corpus: str, cache: str, seconds: float, softmax: str) -> dict:
    """torch_speed in a child process (as bench.peer runs the speed peer), or why not."""
    from ..parallel import thread_count
    from .speed import torch_env
    child = subprocess.run([sys.executable, "-m", "charrnn.bench.corpus", "--torch-child",
                            corpus, cache, str(seconds), str(thread_count()), softmax],
                           capture_output=True, text=True, env=torch_env())
    if child.returncode != 0:
        return {"torch": "not measured: " +
                (child.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(child.stdout)


def speed_rows(work: str, seconds: float, with_torch: bool = True,
               real_text: str | None = None) -> dict:
    cache = os.path.join(work, "cache")
    english, cjk = os.path.join(work, "english.txt"), os.path.join(work, "cjk.txt")
    write_english(english, 4 << 20)
    write_cjk(cjk, 2_000_000)
    rows = {"english": speed_row(english, cache, seconds),
            "cjk": speed_row(cjk, cache, seconds),
            "cjk_adaptive": speed_row(cjk, cache, seconds, "adaptive")}
    if real_text:  # the adaptive softmax on a real text's frequencies
        widened = os.path.join(work, "widened.txt")
        write_widened(real_text, widened, 2_000_000)
        rows["real_adaptive"] = speed_row(widened, cache, seconds, "adaptive")
    if with_torch:
        for name, corpus, softmax in (("english", english, "full"), ("cjk", cjk, "full"),
                                      ("cjk_adaptive", cjk, "adaptive")):
            rows[name]["peer"] = torch_row(corpus, cache, seconds, softmax)
    rows["output_layer"] = output_layer_row(rows["cjk"]["vocab"], seconds / 2)
    shutil.rmtree(cache)
    return rows


# -------------------------------------------------------------------------------- report
def report(result: dict) -> str:
    lines = [f"threads {result['threads']}, float32, BLAS {result['blas']}",
             "memory: `charrnn train` " + " ".join(MEMORY_RUN)]
    for row in result["memory"]:
        first, second = row["first"], row["second"]
        lines.append(
            f"  {row['corpus_bytes'] / 2**20:>6,.0f} MiB corpus: peak RSS "
            f"{first['peak_rss_mb']:,.0f} MiB first run (ids built in "
            f"{first['corpus_seconds']:.1f} s, {first['seconds']:.1f} s in all), "
            f"{second['peak_rss_mb']:,.0f} MiB second run (cache hit in "
            f"{second['corpus_seconds']:.1f} s, {second['seconds']:.1f} s in all); "
            f"cache {row['cache_bytes'] / 2**20:,.0f} MiB on disk")
    model = SPEED_MODEL
    lines.append(f"speed: LSTM {model['layers']}x{model['hidden']}, embedding {model['embed']}"
                 f", batch {SPEED_BATCH[0]}x{SPEED_BATCH[1]}")
    speed = result["speed"]
    english = speed["english"]
    for name in ("english", "cjk", "cjk_adaptive", "real_adaptive"):
        if name not in speed:
            continue
        row = speed[name]
        peer = row.get("peer", {})
        versus = f"; PyTorch {peer['train_chars_per_s']:,.0f} chars/s, " \
            f"{row['train_chars_per_s'] / peer['train_chars_per_s']:.2f}x" \
            if "train_chars_per_s" in peer else f"; PyTorch {peer['torch']}" if peer else ""
        text = ", real text" if name == "real_adaptive" else ""
        lines.append(f"  V={row['vocab']:>5,} {row['softmax']:>8} softmax{text}: train "
                     f"{row['train_chars_per_s']:>8,.0f} chars/s ({row['step_ms']:.0f} ms/step,"
                     f" {row['train_chars_per_s'] / english['train_chars_per_s']:.2f}x of "
                     f"V={english['vocab']}), sample {row['sample_chars_per_s']:>8,.0f} chars/s "
                     f"({row['sample_chars_per_s'] / english['sample_chars_per_s']:.2f}x)"
                     + versus)
    for name, text in (("cjk_adaptive", "generated"), ("real_adaptive", "real text")):
        if name in speed:
            adaptive = speed[name]
            lines.append(f"  adaptive layout, {text}: a head of {adaptive['head']:,} "
                         "characters, clusters " + ", ".join(
                             f"{size:,} through {dim}" for size, dim in adaptive["tails"]))
    out = speed["output_layer"]
    lines.append(f"  output layer alone, one thread, M={out['M']} H={out['H']} V={out['V']:,}: "
                 f"one product with Wy {out['product_ms']:.0f} ms (three per step), "
                 f"softmax cross-entropy + gradient {out['softmax_ms']:.0f} ms")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m charrnn.bench.corpus",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10M,1G",
                        help="generated corpus sizes for the memory runs [10M,1G]")
    parser.add_argument("--seconds", type=float, default=10.0,
                        help="timed seconds per speed measurement, after a burn-in [10]")
    parser.add_argument("--dir", default=None,
                        help="where to write the corpora (needs about 2x the largest size "
                             "free; not a RAM-backed tmpfs) [the system temp dir]")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--no-torch", action="store_true",
                        help="skip the PyTorch peer even when torch is installed")
    parser.add_argument("--real-text", default=REAL_TEXT,
                        help="a real Chinese text whose frequencies the adaptive softmax "
                             "is also timed on, widened to ~6,000 characters; skipped "
                             f"when absent ('' to skip) [{REAL_TEXT}, from `make chinese`]")
    args = parser.parse_args(argv)
    real_text = args.real_text if args.real_text and os.path.exists(args.real_text) else None
    sizes = [parse_size(size) for size in args.sizes.split(",") if size]
    # As the CLI does: one BLAS thread (see cli.main); the child runs inherit it.
    one_blas_thread()
    from ..parallel import thread_count
    from .speed import blas_description
    work = tempfile.mkdtemp(prefix="charrnn-bench-corpus-", dir=args.dir)
    try:
        result = {"threads": thread_count(), "blas": blas_description(),
                  "memory": memory_rows(sizes, work),
                  "speed": speed_rows(work, args.seconds, not args.no_torch, real_text)}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(result) if args.json else report(result), flush=True)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--torch-child"]:  # CORPUS CACHE SECONDS THREADS SOFTMAX
        corpus, cache, seconds, threads, softmax = sys.argv[2:7]
        print(json.dumps(torch_speed(corpus, cache, float(seconds), int(threads), softmax)))
    else:
        main()
