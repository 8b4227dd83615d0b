"""charrnn score: how likely a text is under a model, in bits per character."""

from __future__ import annotations

import json

import click

from .. import defaults
from .common import (
    adapt_lr_option,
    check_adapt_lr,
    fail,
    json_option,
    load_or_fail,
    note_compiling,
    set_threads,
    threads_option,
    write_stdout,
)


@click.command()
@click.argument("checkpoint", type=click.Path())
@click.argument("text_file", type=click.Path(allow_dash=True), default="-")
@json_option
@click.option("--per-line", is_flag=True, help="Score each line from a fresh state: bits_per_char<TAB>line.")
@click.option("--adapt", is_flag=True,
              help="Let the model learn from the text as it reads it (dynamic evaluation): "
                   f"each {defaults.ADAPT_SEGMENT}-char segment is scored, then trained on. "
                   "Every char is still predicted from the chars before it only. The "
                   "checkpoint is not changed.")
@adapt_lr_option
@click.option("--encoding", default="utf-8", show_default=True, help="Text encoding of the input.")
@threads_option("; --adapt scores repeat exactly at the same thread count")
def score(checkpoint, text_file, as_json, per_line, adapt, adapt_lr, encoding, threads):
    """How likely is a text under the model, in bits per character.

    \b
    cat text.txt | charrnn score model.ckpt
    charrnn score model.ckpt val.txt --json
    charrnn score model.ckpt val.txt --adapt
    charrnn score model.ckpt --per-line < lines.txt | sort -n | head
    """
    from ..textfile import CorpusError, read_text

    if adapt and per_line:
        raise click.UsageError("--adapt reads the text as one stream; --per-line scores "
                               "each line on its own: choose one")
    check_adapt_lr(adapt)
    set_threads(threads)
    model = load_or_fail(checkpoint)
    try:
        text = read_text(text_file, encoding, options=("--encoding",))
    except CorpusError as error:
        fail(str(error))
    note_compiling()
    if per_line:
        for line, bits in model.score_lines(text):
            write_stdout(f"{bits:.4f}\t{line}\n")
        return
    result = model.score(text, adapt=adapt, adapt_lr=adapt_lr)
    if as_json:
        write_stdout(json.dumps(result) + "\n")
    else:
        write_stdout(f"{result['bits_per_char']:.4f} bits/char "
                     f"({result['nats_per_char']:.4f} nats/char) over {result['chars']} "
                     f"chars; {result['unknown_chars']} unknown chars "
                     + ("charged as the unknown symbol" if model.vocab.has_unknown
                        else "skipped")
                     + (f"; adapting at lr {adapt_lr:g}" if adapt else "") + "\n")
