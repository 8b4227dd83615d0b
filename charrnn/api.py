"""The Python API: the engine the command line runs, for scripts and notebooks.

    model = charrnn.load("corpus.ckpt")
    text = model.generate(300, prime="ROMEO:", temperature=0.8, seed=7)
    model.score(open("val.txt").read())["bits_per_char"]
    model = charrnn.train("corpus.txt", time_limit="10m", progress=print)

generate and stream give exactly the text `charrnn sample` prints with the same options
and --seed (on the same machine and thread count); score gives what `charrnn score
--json` prints; train runs what `charrnn train` runs, with its defaults. Every call
runs with one thread per BLAS call (runtime.one_blas_thread_now).
"""

from __future__ import annotations

import math
import warnings

from .defaults import ADAPT_LR
from .runtime import one_blas_thread_now


class TrainedModel:
    """A model loaded from a checkpoint, with its vocabulary and training record."""

    def __init__(self, model, vocab, record: dict, path: str | None = None):
        self.model, self.vocab, self.record, self.path = model, vocab, record, path
        self.config = model.config
        self.last_seed = None  # the seed the last generate/stream drew when given none
        self._samplers = {}

    def __repr__(self) -> str:
        cfg = self.config
        return (f"<TrainedModel {cfg.cell} {cfg.layers} x {cfg.hidden}, "
                f"{self.vocab.size} chars, from {self.path}>")

    # -- generation ---------------------------------------------------------------------
    def generate(self, n: int = 500, prime: str = "", temperature: float = 1.0,
                 top_k: int | None = None, top_p: float | None = None, greedy: bool = False,
                 stop=(), seed: int | None = None, beam: int | None = None,
                 precision: str = "auto", adapt: bool = False,
                 adapt_lr: float = ADAPT_LR) -> str:
        """The prime followed by n generated characters, ended early after the first of
        the stop strings. Prime characters the model never saw are skipped with a
        warning. seed None draws one (kept in last_seed). beam W: the most likely
        continuation by a beam of width W. adapt: first learn from the prime as
        `score --adapt` does. The options are `charrnn sample`'s."""
        pieces = self._pieces(n, prime, temperature, top_k, top_p, greedy, stop, seed, beam,
                              precision, adapt, adapt_lr)
        return "".join(one_blas_thread_each(pieces))

    def stream(self, n: int = 500, prime: str = "", temperature: float = 1.0,
               top_k: int | None = None, top_p: float | None = None, greedy: bool = False,
               stop=(), seed: int | None = None, beam: int | None = None,
               precision: str = "auto", adapt: bool = False, adapt_lr: float = ADAPT_LR):
        """As generate, yielding the text in pieces as it is made; n=0 is endless. The
        arguments are checked at the call, before the first piece is asked for."""
        pieces = self._pieces(n, prime, temperature, top_k, top_p, greedy, stop, seed, beam,
                              precision, adapt, adapt_lr)
        return one_blas_thread_each(pieces)

    def _pieces(self, n, prime, temperature, top_k, top_p, greedy, stop, seed, beam,
                precision, adapt, adapt_lr):
        """sample.sample_pieces for generate's arguments, once they are checked."""
        import numpy as np

        from .sample import Decoding, encode_prime, sample_pieces
        stops = (stop,) if isinstance(stop, str) else tuple(stop)
        check_decoding(n, temperature, top_k, top_p, stops, beam, adapt_lr)
        prime_ids, prime, missing = encode_prime(self.vocab, prime or "")
        if missing:  # stacklevel: the caller of generate or stream
            warnings.warn(f"skipping prime characters the model never saw: {missing!r}",
                          stacklevel=3)
        if adapt and len(prime_ids) < 2:
            raise ValueError("adapt learns from the prime, and it has fewer than 2 "
                             "characters the model knows")
        if seed is None:
            seed = int(np.random.SeedSequence().entropy % (2 ** 31))
        self.last_seed = seed
        decoding = Decoding(temperature, top_k or 0, 1.0 if top_p is None else top_p, greedy)
        with one_blas_thread_now():
            sampler = self.sampler(precision, prime_ids if adapt else None, adapt_lr)
        rng = np.random.default_rng([seed, 0])  # as `charrnn sample --seed` draws sample 0
        return sample_pieces(sampler, prime_ids, prime, n, decoding, rng, stops, beam)

    def sampler(self, precision: str = "auto", adapt_ids=None, adapt_lr: float = ADAPT_LR):
        """The sample.Sampler generation runs: of the weights as trained (kept for the
        next call), or of a copy adapted to adapt_ids first."""
        from .sample import Sampler
        if adapt_ids is not None:
            from .score import adapted_to
            return Sampler(adapted_to(self.model, self.vocab, adapt_ids, adapt_lr),
                           self.vocab, precision)
        if precision not in self._samplers:
            self._samplers[precision] = Sampler(self.model, self.vocab, precision)
        return self._samplers[precision]

    # -- scoring ------------------------------------------------------------------------
    def score(self, text: str, adapt: bool = False, adapt_lr: float = ADAPT_LR) -> dict:
        """{"bits_per_char", "nats_per_char", "chars", "unknown_chars"} of text, the
        state carried through it (and "adapt_lr" when adapting): what `charrnn score
        --json` prints. Characters outside the vocabulary are counted and charged as
        the unknown symbol (skipped if the model has none); a text with nothing to
        score gives None per char."""
        from .score import AdaptiveScorer, score_text
        if not (adapt_lr > 0 and math.isfinite(adapt_lr)):
            raise ValueError(f"adapt_lr must be a positive number, not {adapt_lr}")
        with one_blas_thread_now():
            scorer = AdaptiveScorer(self.model, self.vocab, adapt_lr) if adapt else \
                self.sampler("float32")
            result = score_text(scorer, text)
        if adapt:
            result["adapt_lr"] = adapt_lr
        return {k: (None if isinstance(v, float) and math.isnan(v) else v)
                for k, v in result.items()}

    def score_lines(self, text: str):
        """(line, bits per char) for each line of text, each from a fresh state: what
        `charrnn score --per-line` prints. Only newlines end lines."""
        from .score import score_line
        lines = text.split("\n")  # only newlines end lines (not \f, \u2028, ...)
        if lines[-1] == "":
            lines.pop()
        scorer = self.sampler("float32")
        for line in lines:
            line = line[:-1] if line.endswith("\r") else line
            with one_blas_thread_now():
                bits = score_line(scorer, line)
            yield line, bits

    # -- description --------------------------------------------------------------------
    def info(self) -> dict:
        """What `charrnn info --json` prints: architecture, vocabulary, training record."""
        from .checkpoint import CHECKPOINT_FORMAT_VERSION
        cfg, state = self.config, self.record.get("state", {})
        return {"cell": cfg.cell, "layers": cfg.layers, "hidden": cfg.hidden,
                "embed": cfg.embed, "dropout": cfg.dropout, "softmax": cfg.softmax,
                "vocab_size": self.vocab.size,
                "params": cfg.parameter_count(), "step": state.get("step", 0),
                "chars_seen": state.get("chars_seen", 0),
                "val_bpc": state.get("best_val_bpc"),
                "last_val_bpc": state.get("last_val_bpc"),
                "train_seconds": state.get("train_seconds", 0.0),
                "format_version": CHECKPOINT_FORMAT_VERSION,
                "history": state.get("history", [])}


def one_blas_thread_each(pieces):
    """The pieces of a generator, each made with one thread per BLAS call; between
    pieces the host's BLAS keeps its own settings."""
    while True:
        with one_blas_thread_now():
            piece = next(pieces, None)
        if piece is None:
            return
        yield piece


def check_decoding(n, temperature, top_k, top_p, stops, beam, adapt_lr) -> None:
    """The checks `charrnn sample`'s option types make, as ValueErrors."""
    problems = []
    if not (isinstance(n, int) and n >= 0):
        problems.append(f"n must be a whole number >= 0, not {n!r}")
    if not (temperature > 0 and math.isfinite(temperature)):
        problems.append(f"temperature must be > 0, not {temperature!r}")
    if top_k is not None and not (isinstance(top_k, int) and top_k >= 1):
        problems.append(f"top_k must be a whole number >= 1, not {top_k!r}")
    if top_p is not None and not 0 < top_p <= 1:
        problems.append(f"top_p must be in (0, 1], not {top_p!r}")
    if "" in stops:
        problems.append("an empty stop string would end every sample at once")
    if beam is not None and not (isinstance(beam, int) and beam >= 1):
        problems.append(f"beam must be a whole number >= 1, not {beam!r}")
    if beam and n == 0:
        problems.append("beam search needs a finite n")
    if not (adapt_lr > 0 and math.isfinite(adapt_lr)):
        problems.append(f"adapt_lr must be a positive number, not {adapt_lr!r}")
    if problems:
        raise ValueError("; ".join(problems))


def load(path: str) -> TrainedModel:
    """The trained model in the checkpoint at path; raises checkpoint.CheckpointError
    (one line) for a file that cannot be loaded."""
    from .checkpoint import load_trained
    model, vocab, record, _ = load_trained(path)
    return TrainedModel(model, vocab, record, path)


def train(corpus: str, output: str | None = None, progress=None, *, resume: bool = False,
          force: bool = False, init_from: str | None = None, max_vocab: int | None = None,
          min_count: int | None = None, encoding: str = "utf-8", errors: str = "strict",
          time_limit=None, log: str | None = None, **options) -> TrainedModel:
    """Train on the text file corpus as `charrnn train` does, with its defaults, and
    return the model saved at output (default: the corpus's name with .ckpt in the
    current directory). options: the command's other flags spelled with underscores
    (hidden=256, steps=500, seed=1, ...). progress: called with each event dict (kinds
    start, step, eval, rollback, done); pass progress.Reporter() for the command's lines
    on stderr. log: a JSONL file appended to per evaluation, as --log. Raises
    training_run.RunError (one line) when the run cannot start or go on. Signals are
    left to the host program: an interrupt ends the call, and the last checkpoint
    saved stays."""
    from .distributed import LocalComm
    from .progress import JsonlLog
    from .training_run import (
        TRAIN_DEFAULTS,
        AllRanks,
        RunRequest,
        check_flags,
        default_output,
        parse_duration,
        prepare_run,
        run_training,
    )
    unknown = sorted(set(options) - set(TRAIN_DEFAULTS))
    if unknown:
        raise TypeError(f"train() got unknown options: {', '.join(unknown)}")
    check_flags(options)
    output = output or default_output(corpus)
    given = set(options) | ({"max_vocab"} if max_vocab is not None else set()) | \
        ({"min_count"} if min_count is not None else set())
    request = RunRequest(str(corpus), str(output), resume, force, init_from, max_vocab,
                         min_count, encoding, errors, parse_duration(time_limit),
                         {**TRAIN_DEFAULTS, **options}, given, log)
    callbacks = [progress] if progress else []
    if log:
        callbacks.append(JsonlLog(log))
    try:
        with one_blas_thread_now(), warnings.catch_warnings():
            # A diverging run overflows in numpy's products; the run says so itself.
            warnings.filterwarnings("ignore", category=RuntimeWarning, module=r"charrnn\.")
            trainer, _ = prepare_run(LocalComm(), request, None)
            try:
                run_training(trainer, lambda event: [callback(event) for callback in callbacks],
                             lambda: 0, request.output)
            finally:
                for callback in callbacks:
                    getattr(callback, "close", lambda: None)()
    except AllRanks as agreed:  # what every rank knows: with one process, this one
        raise agreed.error from None
    return load(request.output)
