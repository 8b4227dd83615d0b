"""charrnn train: the click declarations, and the run on each MPI rank (or the one
process) with its signals, progress and one-line failures."""

from __future__ import annotations

import sys

import click

from .. import defaults
from ..training_run import TRAIN_DEFAULTS as D
from .common import finite, note_compiling, set_threads, threads_option


@click.command()
@click.argument("corpus", type=click.Path(allow_dash=True, dir_okay=True))
@click.option("-o", "--output", default=None, type=click.Path(dir_okay=False), help="Checkpoint to write (also OUT.best for the best validation loss) [default: the corpus's name with .ckpt, in the current directory].")
@click.option("--resume", is_flag=True, help="Continue training the checkpoint at --output exactly where it stopped.")
@click.option("--force", is_flag=True, help="Overwrite an existing checkpoint at --output without resuming it.")
@click.option("--init-from", type=click.Path(), default=None, help="Fine-tune: start from this checkpoint's weights and architecture, matched to the new vocabulary by character; new characters get fresh rows.")
@click.option("--cell", type=click.Choice(["lstm", "gru", "rnn"]), default=D["cell"], show_default=True, help="Recurrent cell.")
@click.option("--layers", type=click.IntRange(1, 16), default=D["layers"], show_default=True, help="Stacked recurrent layers.")
@click.option("--hidden", type=click.IntRange(1, 8192), default=D["hidden"], help=f"Hidden units per layer [default: by --time-limit: {defaults.describe(defaults.HIDDEN_BY_BUDGET)}; {defaults.HIDDEN_FOR_STEPS} with --steps only; at most 128 for corpora under 300 KB].")
@click.option("--embed", type=click.IntRange(0, 4096), default=D["embed"], show_default=True, help="Input embedding width; 0 = one-hot input.")
@click.option("--softmax", type=click.Choice(list(defaults.SOFTMAXES)), default=D["softmax"], show_default=True, help=f"Output layer: full, or adaptive (a head of the frequent characters and clusters of the rare ones, much faster for large alphabets, still an exact distribution); auto: adaptive from {defaults.ADAPTIVE_FROM_CHARS:,} distinct characters.")
@click.option("--dropout", type=click.FloatRange(0, 1, max_open=True), default=D["dropout"], callback=finite, help=f"Dropout after each layer (training only) [default: by --time-limit: {defaults.describe(defaults.DROPOUT_BY_BUDGET)}; {defaults.SMALL_CORPUS_DROPOUT[1]} beyond {defaults.SMALL_CORPUS_DROPOUT[0]}s for corpora under 300 KB; 0 with --steps only].")
@click.option("--max-vocab", type=click.IntRange(1), default=None, help="Keep only this many of the most frequent characters; the rest become one unknown symbol, never sampled [default: all].")
@click.option("--min-count", type=click.IntRange(1), default=None, help="Characters seen fewer times than this become the unknown symbol, whose probability score charges for characters the model never saw [default: 2 (the characters seen once) when those are at most 1% of the text, else 1].")
@click.option("--seq-len", type=click.IntRange(1), default=D["seq_len"], show_default=True, help="Characters per stream per step (BPTT length).")
@click.option("--batch-size", type=click.IntRange(1), default=D["batch_size"], show_default=True, help="Parallel streams per step.")
@click.option("--lr", type=click.FloatRange(0, min_open=True), default=D["lr"], callback=finite, help=f"Adam's peak learning rate [default: {defaults.LR_DECAYING:g} when it decays to the end of the run (--time-limit, or a cosine or step schedule), else {defaults.LR_CONSTANT:g}; times {defaults.LR_FULL_WIDTH}/hidden beyond {defaults.LR_FULL_WIDTH} units].")
@click.option("--lr-schedule", type=click.Choice(["auto", "constant", "cosine", "step"]), default=D["lr_schedule"], show_default=True, help="Learning-rate schedule over --steps or --time-limit; auto: cosine to the end of a --time-limit, constant for --steps runs (so they resume bit for bit whatever the total).")
@click.option("--warmup", type=click.IntRange(0), default=D["warmup"], show_default=True, help="Linear learning-rate warm-up steps.")
@click.option("--clip", type=click.FloatRange(0), default=D["clip"], show_default=True, callback=finite, help="Clip the global gradient norm to this; 0 = off.")
@click.option("--steps", type=click.IntRange(1), default=D["steps"], help="Stop when the model has this many steps in total [default: 2000 unless --time-limit].")
@click.option("--time-limit", default=None, help="Stop after this long: seconds, or 90s, 10m, 2h.")
@click.option("--eval-every", type=click.IntRange(0), default=D["eval_every"], show_default=True, help="Steps between validation passes; 0 = only at the end.")
@click.option("--save-every", type=click.IntRange(0), default=D["save_every"], show_default=True, help="Steps between checkpoint writes; 0 = only at the end.")
@click.option("--val-fraction", type=click.FloatRange(0, 0.9), default=D["val_fraction"], callback=finite, help="Last fraction of the corpus held out for validation [default: 0.1, at most 20,000 chars].")
@click.option("--val-chars", type=click.IntRange(0), default=D["val_chars"], help=f"Validate on at most this many chars (same ones every time); 0 = all [default: all, up to {defaults.SCORED_VAL_CHARS_CAP:,}].")
@click.option("--patience", type=click.IntRange(0), default=D["patience"], show_default=True, help="Stop after this many evaluations without improvement; 0 = never.")
@click.option("--seed", type=click.IntRange(0), default=D["seed"], show_default=True, help="Seed for initialisation, dropout and data order.")
@click.option("--encoding", default="utf-8", show_default=True, help="Text encoding of the corpus.")
@click.option("--errors", type=click.Choice(["strict", "replace", "ignore"]), default="strict", show_default=True, help="What to do with undecodable bytes.")
@threads_option(" (per rank under mpiexec), shared out among the ranks on one machine")
@click.option("--quiet", is_flag=True, help="No progress on stderr.")
@click.option("--log", "log_path", type=click.Path(dir_okay=False), default=None, help="Append one JSON object per evaluation to this file.")
@click.pass_context
def train(ctx, corpus, output, resume, force, init_from, max_vocab, min_count, threads, quiet,
          log_path, encoding, errors, time_limit, **flags):
    """Train a model on a text file (or '-' for stdin) and save a checkpoint.

    \b
    charrnn train corpus.txt --time-limit 10m        # writes corpus.ckpt
    charrnn train corpus.txt -o model.ckpt --steps 2000 --cell gru
    charrnn train corpus.txt -o model.ckpt --resume --steps 4000
    cat a.txt b.txt | charrnn train - -o model.ckpt --max-vocab 3000
    charrnn train new.txt -o new.ckpt --init-from old.ckpt --steps 500
    mpiexec -n 4 charrnn train corpus.txt -o model.ckpt --threads 2
    """
    from ..distributed import communicator, threads_per_rank
    from ..signals import exit_on_signals, restore_signals
    from ..training_run import AllRanks, RunError, RunRequest, default_output, parse_duration
    try:
        comm = communicator()
    except RuntimeError as error:
        raise click.ClickException(str(error)) from None
    if threads is None and comm.size > 1:
        from ..parallel import thread_count
        threads = threads_per_rank(comm, thread_count())
    set_threads(threads)
    if comm.rank == 0 and not quiet:  # the other ranks print only their fatal errors
        note_compiling()
    try:
        time_limit = parse_duration(time_limit)
    except ValueError as error:
        if comm.rank == 0:
            raise click.BadParameter(str(error), param_hint="--time-limit") from None
        sys.exit(2)  # every rank parsed the same words: rank 0 alone says what is wrong
    named = output is not None
    output = output if named else default_output(corpus)
    given = {name for name in (*flags, "max_vocab", "min_count")
             if ctx.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE}
    request = RunRequest(corpus, output, resume, force, init_from, max_vocab, min_count,
                         encoding, errors, time_limit, flags, given, log_path)
    replaced = exit_on_signals()
    try:
        code = train_on_ranks(comm, request, quiet, named)
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
    """A training_run.RunError as click shows it: usage errors (exit 2) with the usage
    line; one from another rank as plain "rank R: ..." with its exit code."""
    from ..training_run import BadOption, RunUsageError
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
    from ..training_run import RunError
    if isinstance(error, RunError):
        return click_error(error).format_message()
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__


def train_on_ranks(comm, request, quiet: bool, output_named: bool) -> int:
    """The train command on each rank (one with LocalComm); returns the exit code."""
    from ..progress import JsonlLog, Reporter
    from ..signals import StopFlag
    from ..training_run import prepare_run, run_training
    stdin = sys.stdin.buffer if request.corpus == "-" else None
    trainer, notes = prepare_run(comm, request, stdin)
    callbacks = []  # other ranks stay silent
    if comm.rank == 0:
        if not output_named:
            notes.append((f"writing {request.output} (no --output given); sample from it "
                          f"with: charrnn sample {request.output}", True))
        for line, always in notes:
            if always or not quiet:
                click.echo(line, err=True)
        callbacks.append(Reporter(quiet))
        if request.log:
            callbacks.append(JsonlLog(request.log))
    stop = StopFlag()

    def report(event):
        for callback in callbacks:
            callback(event)
    with stop.installed():
        reason = run_training(trainer, report, stop, request.output)
    for callback in callbacks:
        getattr(callback, "close", lambda: None)()
    if reason != "interrupted":
        return 0
    if callbacks:
        resume = f"charrnn train {request.corpus}" + \
            (f" -o {request.output}" if output_named else "") + " --resume"
        click.echo(f"stopped at step {trainer.state.step}; saved {request.output}; continue "
                   f"with: {resume}", err=True)
    return 128 + trainer.stop_signal
