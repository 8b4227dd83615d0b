"""The command line: the only module that knows click, stdin/stdout and exit codes.

Only the product (generated text, scores, info) goes to stdout; diagnostics and progress
go to stderr. Errors are one line: exit 2 for bad usage, 1 for runtime failures,
130/143 after a clean stop on SIGINT/SIGTERM.
"""

from __future__ import annotations

import json
import math
import os
import re
import signal
import sys
import time
import warnings

import click

from . import __version__, defaults, keep_freed_memory, key_kernel_cache, one_blas_thread


def parse_duration(value: str | None) -> float | None:
    """'90', '90s', '10m', '2h', '1.5h' -> seconds."""
    if value is None:
        return None
    match = re.fullmatch(r"\s*(\d+(?:\.\d*)?)\s*([smh]?)\s*", str(value))
    if not match or float(match.group(1)) <= 0:
        raise click.BadParameter(f"{value!r} is not a duration like 90, 90s, 10m or 2h",
                                 param_hint="--time-limit")
    return float(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[match.group(2)]


def set_threads(threads: int | None) -> None:
    """Threads for charrnn's own parallel pieces (see parallel.py); BLAS stays at one
    thread per call (see main)."""
    if not threads:
        return
    from . import parallel
    parallel.set_thread_count(threads)


def finite(ctx, param, value):
    """Reject nan and inf, which FloatRange lets through (comparisons with nan are false)."""
    if value is not None and not math.isfinite(value):
        raise click.BadParameter(f"{value} is not a finite number")
    return value


# score and sample: the rate of --adapt's steps (check_adapt_lr: only with --adapt)
adapt_lr_option = click.option(
    "--adapt-lr", type=click.FloatRange(min=0, min_open=True), default=defaults.ADAPT_LR,
    show_default=True, callback=finite, help="Learning rate of --adapt's steps.")


def note_compiling() -> None:
    """Until the current command ends, say on stderr when kernels start compiling."""
    from .compile_note import note_when_compiling
    ctx = click.get_current_context()
    ctx.with_resource(note_when_compiling(lambda line: click.echo(line, err=True),
                                          ctx.info_name))


def fail(message: str) -> None:
    raise click.ClickException(message)


def load_trained_or_fail(path: str):
    from .checkpoint import CheckpointError, load_trained
    try:
        return load_trained(path)
    except CheckpointError as error:
        fail(str(error))


def write_stdout(text: str) -> None:
    """Write UTF-8 whatever the locale, and flush so `| tee` shows progress. The one
    place that writes standard output, so every command ends the same way when it
    cannot: quietly (exit 0) when the reader went away (`| head`), else one line."""
    if sys.stdout is None:  # started with stdout closed (`>&-`)
        fail("cannot write to standard output: it is closed")
    try:
        stream = sys.stdout.buffer
        stream.write(text.encode("utf-8", "surrogatepass"))
        stream.flush()
    except BrokenPipeError:
        discard_stdout()
        sys.exit(0)
    except OSError as error:  # e.g. a full disk, or > /dev/full
        discard_stdout()
        fail(f"cannot write to standard output: {error.strerror or error}")


def stdout_is_terminal() -> bool:
    return sys.stdout is not None and sys.stdout.isatty()


def discard_stdout() -> None:
    """Point stdout at /dev/null, so the interpreter's flush at exit cannot fail again
    on what is still buffered and print a traceback."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="charrnn")
def cli():
    """Character-level RNN, GRU and LSTM text models on the CPU.

    \b
    charrnn train corpus.txt -o model.ckpt --time-limit 10m
    charrnn sample model.ckpt -n 500 --prime "ROMEO:" --seed 7
    cat text.txt | charrnn score model.ckpt
    """


# --------------------------------------------------------------------------- train


@cli.command()
@click.argument("corpus", type=click.Path(allow_dash=True, dir_okay=True))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="Checkpoint to write (also OUT.best for the best validation loss).")
@click.option("--resume", is_flag=True, help="Continue training the checkpoint at --output exactly where it stopped.")
@click.option("--force", is_flag=True, help="Overwrite an existing checkpoint at --output without resuming it.")
@click.option("--init-from", type=click.Path(), default=None, help="Fine-tune: start from this checkpoint's weights and architecture, matched to the new vocabulary by character; new characters get fresh rows.")
@click.option("--cell", type=click.Choice(["lstm", "gru", "rnn"]), default="lstm", show_default=True, help="Recurrent cell.")
@click.option("--layers", type=click.IntRange(1, 16), default=2, show_default=True, help="Stacked recurrent layers.")
@click.option("--hidden", type=click.IntRange(1, 8192), default=None, help=f"Hidden units per layer [default: by --time-limit: {defaults.describe(defaults.HIDDEN_BY_BUDGET)}; {defaults.HIDDEN_FOR_STEPS} with --steps only; at most 128 for corpora under 300 KB].")
@click.option("--embed", type=click.IntRange(0, 4096), default=64, show_default=True, help="Input embedding width; 0 = one-hot input.")
@click.option("--dropout", type=click.FloatRange(0, 1, max_open=True), default=None, callback=finite, help=f"Dropout after each layer (training only) [default: by --time-limit: {defaults.describe(defaults.DROPOUT_BY_BUDGET)}; {defaults.SMALL_CORPUS_DROPOUT[1]} beyond {defaults.SMALL_CORPUS_DROPOUT[0]}s for corpora under 300 KB; 0 with --steps only].")
@click.option("--max-vocab", type=click.IntRange(1), default=None, help="Keep only this many of the most frequent characters; the rest become one unknown symbol, never sampled [default: all].")
@click.option("--min-count", type=click.IntRange(1), default=1, show_default=True, help="Characters seen fewer times than this become the unknown symbol.")
@click.option("--seq-len", type=click.IntRange(1), default=64, show_default=True, help="Characters per stream per step (BPTT length).")
@click.option("--batch-size", type=click.IntRange(1), default=32, show_default=True, help="Parallel streams per step.")
@click.option("--lr", type=click.FloatRange(0, min_open=True), default=None, callback=finite, help=f"Adam's peak learning rate [default: {defaults.LR_DECAYING:g} when it decays to the end of the run (--time-limit, or a cosine or step schedule), else {defaults.LR_CONSTANT:g}; times {defaults.LR_FULL_WIDTH}/hidden beyond {defaults.LR_FULL_WIDTH} units].")
@click.option("--lr-schedule", type=click.Choice(["auto", "constant", "cosine", "step"]), default="auto", show_default=True, help="Learning-rate schedule over --steps or --time-limit; auto: cosine to the end of a --time-limit, constant for --steps runs (so they resume bit for bit whatever the total).")
@click.option("--warmup", type=click.IntRange(0), default=50, show_default=True, help="Linear learning-rate warm-up steps.")
@click.option("--clip", type=click.FloatRange(0), default=5.0, show_default=True, callback=finite, help="Clip the global gradient norm to this; 0 = off.")
@click.option("--steps", type=click.IntRange(1), default=None, help="Stop when the model has this many steps in total [default: 2000 unless --time-limit].")
@click.option("--time-limit", default=None, help="Stop after this long: seconds, or 90s, 10m, 2h.")
@click.option("--eval-every", type=click.IntRange(0), default=200, show_default=True, help="Steps between validation passes; 0 = only at the end.")
@click.option("--save-every", type=click.IntRange(0), default=500, show_default=True, help="Steps between checkpoint writes; 0 = only at the end.")
@click.option("--val-fraction", type=click.FloatRange(0, 0.9), default=None, callback=finite, help="Last fraction of the corpus held out for validation [default: 0.1, at most 20,000 chars].")
@click.option("--val-chars", type=click.IntRange(0), default=0, help=f"Validate on at most this many chars (same ones every time); 0 = all [default: all, up to {defaults.SCORED_VAL_CHARS_CAP:,}].")
@click.option("--patience", type=click.IntRange(0), default=0, show_default=True, help="Stop after this many evaluations without improvement; 0 = never.")
@click.option("--seed", type=click.IntRange(0), default=0, show_default=True, help="Seed for initialisation, dropout and data order.")
@click.option("--encoding", default="utf-8", show_default=True, help="Text encoding of the corpus.")
@click.option("--errors", type=click.Choice(["strict", "replace", "ignore"]), default="strict", show_default=True, help="What to do with undecodable bytes.")
@click.option("--threads", type=click.IntRange(1), default=None, help="CPU threads (per rank under mpiexec) [default: all cores, shared out among the ranks on one machine].")
@click.option("--quiet", is_flag=True, help="No progress on stderr.")
@click.option("--log", "log_path", type=click.Path(dir_okay=False), default=None, help="Append one JSON object per evaluation to this file.")
@click.pass_context
def train(ctx, corpus, output, resume, force, init_from, max_vocab, min_count, threads, quiet,
          log_path, encoding, errors, time_limit, **flags):
    """Train a model on a text file (or '-' for stdin) and save a checkpoint.

    \b
    charrnn train corpus.txt -o model.ckpt --steps 2000
    charrnn train corpus.txt -o model.ckpt --time-limit 10m --cell gru
    charrnn train corpus.txt -o model.ckpt --resume --steps 4000
    cat a.txt b.txt | charrnn train - -o model.ckpt --max-vocab 3000
    charrnn train new.txt -o new.ckpt --init-from old.ckpt --steps 500
    mpiexec -n 4 charrnn train corpus.txt -o model.ckpt --threads 2
    """
    from .distributed import communicator, threads_per_rank
    from .runs import AllRanks, RunError, RunRequest
    try:
        comm = communicator()
    except RuntimeError as error:
        fail(str(error))
    if threads is None and comm.size > 1:
        from .parallel import thread_count
        threads = threads_per_rank(comm, thread_count())
    set_threads(threads)
    if comm.rank == 0 and not quiet:  # the other ranks print only their fatal errors
        note_compiling()
    try:
        time_limit = parse_duration(time_limit)
    except click.BadParameter:
        if comm.rank == 0:
            raise
        sys.exit(2)  # every rank parsed the same words: rank 0 alone says what is wrong
    given = {name for name in (*flags, "max_vocab", "min_count")
             if ctx.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE}
    request = RunRequest(corpus, output, resume, force, init_from, max_vocab, min_count,
                         encoding, errors, time_limit, flags, given, log_path)
    replaced = exit_on_signals()
    try:
        code = train_on_ranks(comm, request, quiet, log_path)
    except AllRanks as agreed:  # every rank ends here together
        if comm.rank == 0:
            raise click_error(agreed.error, agreed.rank) from None
        sys.exit(agreed.error.exit_code)
    except BaseException as error:
        if comm.size == 1:
            if isinstance(error, RunError):
                raise click_error(error) from None
            raise
        # This rank alone: the others may be waiting for it in a collective.
        if isinstance(error, SystemExit):  # a signal before training (exit_on_signals)
            comm.abort(error.code if isinstance(error.code, int) else 1)
        click.echo(f"Error: rank {comm.rank}: {describe(error)}", err=True)
        comm.abort(1)
    finally:  # the caller's handlers again (a test runner's, in-process)
        restore_signals(replaced)
    if code:
        sys.exit(code)


def click_error(error, rank: int | None = None) -> click.ClickException:
    """A runs.RunError as click shows it: usage errors (exit 2) with the usage line; one
    from another rank as plain "rank R: ..." with its exit code."""
    from .runs import BadOption, RunUsageError
    if isinstance(error, BadOption):
        shown = click.BadParameter(error.message, param_hint=error.option)
    elif isinstance(error, RunUsageError):
        shown = click.UsageError(str(error))
    else:
        shown = click.ClickException(str(error))
    if rank is not None:
        shown = click.ClickException(f"rank {rank}: {shown.format_message()}")
    shown.exit_code = error.exit_code
    return shown


def describe(error: BaseException) -> str:
    from .runs import RunError
    if isinstance(error, RunError):
        return click_error(error).format_message()
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__


def train_on_ranks(comm, request, quiet: bool, log_path: str | None) -> int:
    """The train command on each rank (one with LocalComm); returns the exit code."""
    from .runs import prepare_run, run_training
    stdin = sys.stdin.buffer if request.corpus == "-" else None
    trainer, notes = prepare_run(comm, request, stdin)
    reporter = None  # other ranks stay silent
    if comm.rank == 0:
        for line, always in notes:
            if always or not quiet:
                click.echo(line, err=True)
        reporter = Reporter(quiet, log_path)
    stop = StopFlag()
    with stop.installed():
        reason = run_training(trainer, reporter or (lambda event: None), stop, request.output)
    if reporter:
        reporter.close()
    if reason != "interrupted":
        return 0
    if reporter:
        click.echo(f"stopped at step {trainer.state.step}; saved {request.output}; continue "
                   f"with: charrnn train {request.corpus} -o {request.output} --resume",
                   err=True)
    return 128 + trainer.stop_signal


def handle_stop_signals(handler) -> dict:
    """Point SIGINT and SIGTERM at handler, except a signal the process was started
    to ignore (a script's background job, `trap '' INT`): Ctrl-C meant for the
    foreground must not stop it. Returns the handlers replaced, to restore them."""
    replaced = {}
    try:
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous = signal.getsignal(sig)
            if previous is not signal.SIG_IGN:
                signal.signal(sig, handler)
                replaced[sig] = previous
    except ValueError:  # not the main thread (e.g. some test runners)
        pass
    return replaced


def restore_signals(replaced: dict) -> None:
    for sig, handler in replaced.items():
        signal.signal(sig, handler)


def exit_on_signals() -> dict:
    """Until training starts (and StopFlag takes over): SIGINT and SIGTERM end the run
    with 128 + the signal, as an exception, so what reading the corpus leaves (a spool
    of stdin, a half-written cache entry) is removed on the way out. Python's default
    SIGTERM kills at once. Returns the handlers replaced."""
    def leave(signum, frame):
        sys.exit(128 + signum)
    return handle_stop_signals(leave)


class StopFlag:
    """Turns SIGINT/SIGTERM into a request the training loop honours between steps."""

    def __init__(self):
        self.signum = 0

    def __call__(self) -> int:
        """The signal received, 0 if none."""
        return self.signum

    def _handle(self, signum, frame):
        self.signum = signum

    def installed(self):
        import contextlib

        @contextlib.contextmanager
        def manager():
            previous = handle_stop_signals(self._handle)
            try:
                yield self
            finally:
                restore_signals(previous)
        return manager()


class Reporter:
    """Progress on stderr: a live line on a terminal, plain periodic lines otherwise."""

    def __init__(self, quiet: bool, log_path: str | None, interval: float = 5.0):
        self.quiet, self.interval = quiet, interval
        self.live = sys.stderr is not None and sys.stderr.isatty()  # None: `2>&-`
        self.log_path, self.log = log_path, None
        if log_path:
            try:
                self.log = open(log_path, "a", encoding="utf-8")
            except OSError as error:
                self.lose_log(error)
        self.last_print = 0.0
        self.started = time.perf_counter()
        self.steps_since, self.chars_since, self.rate_clock = 0, 0, time.perf_counter()
        self.rate = 0.0

    def close(self):
        if self.log:
            try:
                self.log.close()
            except OSError as error:
                self.lose_log(error)

    def lose_log(self, error: OSError) -> None:
        """A log that cannot be written is not worth the training run: say so, go on."""
        click.echo(f"warning: cannot write the log {self.log_path}: "
                   f"{error.strerror or error}; training goes on without it", err=True)
        log, self.log = self.log, None
        try:
            if log:
                log.close()  # closes the file even when its flush fails
        except OSError:
            pass

    def write_log(self, event: dict) -> None:
        try:
            self.log.write(json.dumps({k: event[k] for k in
                                       ("step", "seconds", "train_bpc", "val_bpc", "lr")}) + "\n")
            self.log.flush()
        except OSError as error:
            self.lose_log(error)

    def say(self, line: str, live: bool = False) -> None:
        if self.quiet:
            return
        if self.live:
            click.echo(f"\r\x1b[K{line}", err=True, nl=not live)
        else:
            click.echo(line, err=True)

    def __call__(self, event: dict) -> None:
        kind = event["kind"]
        if kind == "start":
            total = f"/{event['steps']}" if event["steps"] else ""
            self.say(f"training from step {event['step']}{total}, {event['params']:,} parameters")
        elif kind == "step":
            self.chars_since += event["chars"]
            now = time.perf_counter()
            if now - self.rate_clock >= 1.0:
                self.rate = self.chars_since / (now - self.rate_clock)
                self.chars_since, self.rate_clock = 0, now
            if now - self.last_print >= (0.2 if self.live else self.interval):
                self.last_print = now
                self.say(self.status(event), live=True)
        elif kind == "eval":
            val = "n/a" if event["val_bpc"] is None else f"{event['val_bpc']:.4f}"
            mark = " (best)" if event["improved"] else ""
            self.say(f"step {event['step']}: train {event['train_bpc']:.4f} bits/char, "
                     f"val {val} bits/char{mark}")
            if self.log:
                self.write_log(event)
        elif kind == "rollback":
            click.echo(f"step {event['step']}: loss not finite; rolled back to the last good "
                       f"state, learning rate now {event['lr']:.3g}", err=True)
        elif kind == "done":
            best = event["best_val_bpc"]
            best = "n/a" if best is None else f"{best:.4f}"
            self.say(f"done at step {event['step']} ({event['reason']}); best val {best} "
                     f"bits/char; saved {event['path']}")

    def status(self, event: dict) -> str:
        parts = []
        if event["steps"]:
            parts.append(f"step {event['step']}/{event['steps']}")
        else:
            parts.append(f"step {event['step']}")
        parts.append(f"train {event['loss_bpc']:.3f} bits/char")
        parts.append(f"{self.rate:,.0f} chars/s")
        left = []
        if event["time_limit"]:
            left.append(event["time_limit"] - event["elapsed"])
        if event["steps"] and self.rate:
            left.append((event["steps"] - event["step"]) * event["chars"] / self.rate)
        if left:
            parts.append(f"ETA {format_seconds(max(0.0, min(left)))}")
        return ", ".join(parts)


def format_seconds(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else \
        f"{seconds // 60}m{seconds % 60:02d}s"


# -------------------------------------------------------------------------- sample
@cli.command()
@click.argument("checkpoint", type=click.Path())
@click.option("-n", "--length", type=click.IntRange(0), default=500, show_default=True, help="Characters to generate (the prime is not counted); 0 = endless.")
@click.option("-t", "--temperature", type=click.FloatRange(0, min_open=True), default=1.0, show_default=True, callback=finite, help="Below 1: safer, more repetitive; above 1: more random.")
@click.option("--greedy", is_flag=True, help="Always take the most likely character.")
@click.option("--top-k", type=click.IntRange(1), default=None, help="Sample only among the K most likely characters.")
@click.option("--top-p", type=click.FloatRange(0, 1, min_open=True), default=None, callback=finite, help="Sample from the smallest set holding probability P (nucleus).")
@click.option("--prime", default=None, help="Text to start from; it is printed first.")
@click.option("--prime-file", type=click.Path(allow_dash=True), default=None, help="Read the prime from a file ('-' for stdin).")
@click.option("--strict", is_flag=True, help="Prime characters missing from the vocabulary are an error, not a warning.")
@click.option("--seed", type=click.IntRange(0), default=None, help="Seed for reproducible output [default: drawn, and printed to stderr].")
@click.option("--stop", "stops", multiple=True, help="End a sample right after this string (repeatable).")
@click.option("--num-samples", type=click.IntRange(1), default=1, show_default=True, help="Independent samples to write.")
@click.option("--separator", default="\n\n", show_default=repr("\n\n"), help="Written between samples (and after the last one on a terminal).")
@click.option("--beam", type=click.IntRange(1), default=None, help="Beam search of this width for the most likely continuation.")
@click.option("--format", "fmt", type=click.Choice(["text", "jsonl"]), default="text", show_default=True, help="jsonl: one {\"text\", \"seed\"} object per sample.")
@click.option("--precision", type=click.Choice(["auto", "float32", "bfloat16"]), default="auto", show_default=True, help="Weights generation multiplies by. bfloat16 (8 significant bits) halves the memory read per character: 2-3x faster for models too big for the CPU caches, text of the same quality. auto: bfloat16 above 4 MiB of float32 weights (e.g. 2x512 or 3x256 LSTMs), the same choice on every machine. float32: the weights as trained (a seed then gives other text on such models). Scoring and --beam always use the weights as trained.")
@click.option("--adapt", is_flag=True, help="Before generating, let the model learn from the prime as `score --adapt` does, to write more in its manner (a long prime: its names, spelling, layout). The checkpoint is not changed.")
@adapt_lr_option
@click.option("--threads", type=click.IntRange(1), default=None, help="CPU threads [default: all cores].")
def sample(checkpoint, length, temperature, greedy, top_k, top_p, prime, prime_file, strict,
           seed, stops, num_samples, separator, beam, fmt, precision, adapt, adapt_lr,
           threads):
    """Generate text from a checkpoint, streamed to stdout.

    \b
    charrnn sample model.ckpt -n 500 --temperature 0.8 --prime "ROMEO:" --seed 7
    charrnn sample model.ckpt -n 0 | head -c 2000
    charrnn sample model.ckpt --stop $'\\n\\n' --num-samples 5 --format jsonl
    """
    set_threads(threads)
    if prime is not None and prime_file is not None:
        raise click.UsageError("give --prime or --prime-file, not both")
    if beam and length == 0:
        raise click.UsageError("--beam needs a finite -n/--length")
    if adapt and prime is None and prime_file is None:
        raise click.UsageError("--adapt learns from the prime: give --prime or --prime-file")
    if "" in stops:  # it would end every sample before its first character
        raise click.BadParameter("an empty string would end every sample at once",
                                 param_hint="--stop")
    check_adapt_lr(adapt)
    import numpy as np

    from .textfile import CorpusError, read_text
    from .sample import Decoding, Sampler, adapted_to

    model, vocab, _, _ = load_trained_or_fail(checkpoint)
    if prime_file is not None:
        try:
            prime = read_text(prime_file, options=())  # sample has no decoding options
        except CorpusError as error:
            fail(str(error))
    prime = prime or ""
    prime_ids, unknown = vocab.encode(prime, skip_unknown=True)
    if unknown.any():
        missing = "".join(sorted({ch for ch, bad in zip(prime, unknown) if bad}))
        if strict:
            fail(f"the prime has characters the model never saw: {missing!r}")
        click.echo(f"warning: skipping prime characters the model never saw: {missing!r}", err=True)
        prime = vocab.decode(prime_ids)
    if adapt and len(prime_ids) < 2:
        fail("--adapt learns from the prime, and it has fewer than 2 characters the model "
             "knows")
    if seed is None:
        seed = int(np.random.SeedSequence().entropy % (2 ** 31))
        click.echo(f"seed: {seed}", err=True)
    decoding = Decoding(temperature, top_k or 0, 1.0 if top_p is None else top_p, greedy)
    note_compiling()
    if adapt:
        model = adapted_to(model, vocab, prime_ids, adapt_lr)
    sampler = Sampler(model, vocab, precision)
    if not beam and stdout_is_terminal():
        # On a terminal a compile note would land mid-line after the first character;
        # in a pipe it goes elsewhere, and loading the kernel early costs 0.3 s.
        sampler.prepare(decoding)
    try:
        for index in range(num_samples):
            rng = np.random.default_rng([seed, index])
            if beam:
                pieces = [prime + sampler.beam_search(prime_ids, length, beam, rng)]
            else:
                pieces = with_stops(sampler.stream(prime_ids, length, decoding, rng), stops)
                pieces = prepend(prime, pieces)
            if fmt == "jsonl":
                text = "".join(pieces)
                write_stdout(json.dumps({"text": text, "seed": seed, "index": index},
                                        ensure_ascii=False) + "\n")
            else:
                # Between samples only, so `-n 300` writes exactly 300 characters to a
                # pipe; on a terminal the last one too, to leave the prompt on its own line.
                if index:
                    write_stdout(separator)
                for piece in pieces:
                    write_stdout(piece)
        if fmt == "text" and stdout_is_terminal():
            write_stdout(separator or "\n")
    except KeyboardInterrupt:
        sys.exit(130)


def check_adapt_lr(adapt: bool) -> None:
    given = click.get_current_context().get_parameter_source("adapt_lr")
    if not adapt and given == click.core.ParameterSource.COMMANDLINE:
        raise click.UsageError("--adapt-lr sets the rate of --adapt: add --adapt")


def prepend(first: str, pieces):
    if first:
        yield first
    yield from pieces


def with_stops(pieces, stops):
    """Pass text through until the first occurrence of any stop string, which is kept."""
    if not stops:
        yield from pieces
        return
    tail, keep = "", max(len(s) for s in stops) - 1
    for piece in pieces:
        window = tail + piece
        ends = [window.find(s) + len(s) for s in stops if s in window]
        if ends:
            yield window[len(tail):min(ends)] if min(ends) > len(tail) else ""
            return
        yield piece
        tail = window[-keep:] if keep else ""


# --------------------------------------------------------------------------- score
@cli.command()
@click.argument("checkpoint", type=click.Path())
@click.argument("text_file", type=click.Path(allow_dash=True), default="-")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--per-line", is_flag=True, help="Score each line from a fresh state: bits_per_char<TAB>line.")
@click.option("--adapt", is_flag=True,
              help="Let the model learn from the text as it reads it (dynamic evaluation): "
                   f"each {defaults.ADAPT_SEGMENT}-char segment is scored, then trained on. "
                   "Every char is still predicted from the chars before it only. The "
                   "checkpoint is not changed.")
@adapt_lr_option
@click.option("--encoding", default="utf-8", show_default=True, help="Text encoding of the input.")
@click.option("--threads", type=click.IntRange(1), default=None, help="CPU threads [default: all cores]. --adapt scores repeat exactly at the same thread count.")
def score(checkpoint, text_file, as_json, per_line, adapt, adapt_lr, encoding, threads):
    """How likely is a text under the model, in bits per character.

    \b
    cat text.txt | charrnn score model.ckpt
    charrnn score model.ckpt val.txt --json
    charrnn score model.ckpt val.txt --adapt
    charrnn score model.ckpt --per-line < lines.txt | sort -n | head
    """
    from .textfile import CorpusError, read_text
    from .sample import AdaptiveScorer, Sampler, score_line, score_text

    if adapt and per_line:
        raise click.UsageError("--adapt reads the text as one stream; --per-line scores "
                               "each line on its own: choose one")
    check_adapt_lr(adapt)
    set_threads(threads)
    model, vocab, _, _ = load_trained_or_fail(checkpoint)
    try:
        text = read_text(text_file, encoding, options=("--encoding",))
    except CorpusError as error:
        fail(str(error))
    note_compiling()
    scorer = AdaptiveScorer(model, vocab, adapt_lr) if adapt else Sampler(model, vocab)
    if per_line:
        lines = text.split("\n")  # only newlines end lines (not \f, \u2028, ...)
        if lines[-1] == "":
            lines.pop()
        for line in lines:
            line = line[:-1] if line.endswith("\r") else line
            write_stdout(f"{score_line(scorer, line):.4f}\t{line}\n")
        return
    result = score_text(scorer, text)
    if adapt:
        result["adapt_lr"] = adapt_lr
    if as_json:
        write_stdout(json.dumps({k: (None if isinstance(v, float) and math.isnan(v) else v)
                                 for k, v in result.items()}) + "\n")
    else:
        write_stdout(f"{result['bits_per_char']:.4f} bits/char "
                     f"({result['nats_per_char']:.4f} nats/char) over {result['chars']} "
                     f"chars; {result['unknown_chars']} unknown chars skipped"
                     + (f"; adapting at lr {adapt_lr:g}" if adapt else "") + "\n")


# ---------------------------------------------------------------------------- info
@cli.command()
@click.argument("checkpoint", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def info(checkpoint, as_json):
    """Describe a checkpoint: architecture, vocabulary, training record.

    \b
    charrnn info model.ckpt
    charrnn info model.ckpt --json | jq .val_bpc
    """
    from . import CHECKPOINT_FORMAT_VERSION

    model, vocab, record, _ = load_trained_or_fail(checkpoint)
    cfg, state = model.config, record.get("state", {})
    history = state.get("history", [])
    summary = {"cell": cfg.cell, "layers": cfg.layers, "hidden": cfg.hidden, "embed": cfg.embed,
               "dropout": cfg.dropout, "vocab_size": vocab.size,
               "params": cfg.parameter_count(), "step": state.get("step", 0),
               "chars_seen": state.get("chars_seen", 0),
               "val_bpc": state.get("best_val_bpc"),
               "last_val_bpc": state.get("last_val_bpc"),
               "train_seconds": state.get("train_seconds", 0.0),
               "format_version": CHECKPOINT_FORMAT_VERSION,
               "history": history}
    if as_json:
        write_stdout(json.dumps(summary, ensure_ascii=False) + "\n")
        return
    def bpc(value):
        return "n/a" if value is None else f"{value:.4f} bits/char"
    lines = [
        f"cell          {cfg.cell}, {cfg.layers} layer(s) x {cfg.hidden} hidden",
        "input         " + (f"embedding {cfg.embed}" if cfg.embed else "one-hot"),
        f"dropout       {cfg.dropout}",
        f"vocabulary    {vocab.size} chars: {vocab.preview()}",
        f"parameters    {summary['params']:,}",
        f"steps         {summary['step']:,} ({summary['chars_seen']:,} chars seen)",
        f"validation    best {bpc(summary['val_bpc'])}, last {bpc(summary['last_val_bpc'])}"
        + (f"  {sparkline([h['val_bpc'] for h in history if h.get('val_bpc') is not None])}"
           if history else ""),
        f"trained for   {format_seconds(summary['train_seconds'])}",
        f"file format   {CHECKPOINT_FORMAT_VERSION}",
    ]
    write_stdout("\n".join(lines) + "\n")


# --------------------------------------------------------------------------- bench
@cli.command()
@click.option("--config", "configs", type=click.Choice(["S", "M", "L", "B1", "all"]), multiple=True, default=["M"], show_default=True, help="Model/batch configuration(s) to time (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per configuration (and per extra measurement).")
@click.option("--seconds", type=click.FloatRange(0.5), default=5.0, show_default=True, help="Timed seconds per measurement (after a burn-in).")
@click.option("--no-torch", is_flag=True, help="Skip the PyTorch peer even when it is installed.")
@click.option("--threads", type=click.IntRange(1), default=None, help="CPU threads [default: all cores].")
@click.option("--extras", is_flag=True, help="Also measure start-up of `sample -n 1`, peak RSS training M (charrnn and PyTorch) and training L on 1 vs 2 threads, each beside its target (~30 s more).")
def bench(configs, as_json, seconds, no_torch, threads, extras):
    """Time training and sampling throughput, side by side with PyTorch if installed.

    \b
    charrnn bench --config M
    charrnn bench --config M --extras --json
    make bench        # every config, BLAS overrides removed
    """
    set_threads(threads)
    note_compiling()
    from .bench import CONFIGS, bench_rows, format_row

    names = list(CONFIGS) if "all" in configs else list(dict.fromkeys(configs))
    for row in bench_rows(names, seconds, not no_torch, extras):
        write_stdout((json.dumps(row) if as_json else format_row(row)) + "\n")


def sparkline(values) -> str:
    if not values:
        return ""
    bars = "▁▂▃▄▅▆▇█"
    low, high = min(values), max(values)
    span = (high - low) or 1.0
    return "".join(bars[min(7, int((v - low) / span * 7.999))] for v in values[-40:])


def main():
    # A diverging run overflows in numpy's products; training and --adapt check for
    # non-finite values themselves and say so in one line, so numpy's multi-line
    # warnings would only bury that line.
    warnings.filterwarnings("ignore", category=RuntimeWarning, module=r"charrnn\.")
    one_blas_thread()
    keep_freed_memory()
    key_kernel_cache()
    cli(prog_name="charrnn")
