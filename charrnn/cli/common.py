"""What several subcommands share: options declared once, one-line failures, and the
one writer of standard output."""

from __future__ import annotations

import math
import os
import sys

import click

from .. import defaults


def finite(ctx, param, value):
    """Reject nan and inf, which FloatRange lets through (comparisons with nan are false)."""
    if value is not None and not math.isfinite(value):
        raise click.BadParameter(f"{value} is not a finite number")
    return value


def threads_option(note: str = ""):
    """--threads: charrnn's own threads (parallel.py); BLAS stays at one per call."""
    return click.option("--threads", type=click.IntRange(1), default=None,
                        help=f"CPU threads [default: all cores{note}].")


def set_threads(threads: int | None) -> None:
    if threads:
        from .. import parallel
        parallel.set_thread_count(threads)


# score and sample: the rate of --adapt's steps (check_adapt_lr: only with --adapt)
adapt_lr_option = click.option(
    "--adapt-lr", type=click.FloatRange(min=0, min_open=True), default=defaults.ADAPT_LR,
    show_default=True, callback=finite, help="Learning rate of --adapt's steps.")

json_option = click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")


def check_adapt_lr(adapt: bool) -> None:
    given = click.get_current_context().get_parameter_source("adapt_lr")
    if not adapt and given == click.core.ParameterSource.COMMANDLINE:
        raise click.UsageError("--adapt-lr sets the rate of --adapt: add --adapt")


def note_compiling() -> None:
    """Until the current command ends, say on stderr when kernels start compiling. Each
    command that runs kernels calls this before the first, so cached kernels are set
    to load without refreshing Numba's compiler here too
    (runtime.load_cached_kernels_directly)."""
    from ..compile_note import note_when_compiling
    from ..runtime import load_cached_kernels_directly
    load_cached_kernels_directly()
    ctx = click.get_current_context()
    ctx.with_resource(note_when_compiling(lambda line: click.echo(line, err=True),
                                          ctx.info_name))


def fail(message: str):
    raise click.ClickException(message)


def load_or_fail(path: str):
    """The checkpoint at path as a charrnn.api.TrainedModel, or a one-line failure."""
    from ..api import load
    from ..checkpoint import CheckpointError
    try:
        return load(path)
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
