"""charrnn sample: generate text from a checkpoint, streamed to stdout."""

from __future__ import annotations

import json
import sys

import click

from .common import (
    adapt_lr_option,
    check_adapt_lr,
    fail,
    finite,
    load_or_fail,
    note_compiling,
    set_threads,
    stdout_is_terminal,
    threads_option,
    write_stdout,
)


@click.command()
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
@click.option("--precision", type=click.Choice(["auto", "float32", "bfloat16"]), default="auto", show_default=True, help="Weights generation multiplies by. bfloat16 (8 significant bits) halves the memory read per character: 1.2-3x faster, text of the same quality. auto: bfloat16 above 256 KiB of float32 weights (a 1x128 LSTM and anything larger), the same choice on every machine. float32: the weights as trained (a seed then gives other text on such models). Scoring and --beam always use the weights as trained.")
@click.option("--adapt", is_flag=True, help="Before generating, let the model learn from the prime as `score --adapt` does, to write more in its manner (a long prime: its names, spelling, layout). The checkpoint is not changed.")
@adapt_lr_option
@threads_option()
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

    from ..sample import Decoding, encode_prime, sample_pieces
    from ..textfile import CorpusError, read_text

    model = load_or_fail(checkpoint)
    if prime_file is not None:
        try:
            prime = read_text(prime_file, options=())  # sample has no decoding options
        except CorpusError as error:
            fail(str(error))
    prime_ids, prime, missing = encode_prime(model.vocab, prime or "")
    if missing:
        if strict:
            fail(f"the prime has characters the model never saw: {missing!r}")
        click.echo(f"warning: skipping prime characters the model never saw: {missing!r}",
                   err=True)
    if adapt and len(prime_ids) < 2:
        fail("--adapt learns from the prime, and it has fewer than 2 characters the model "
             "knows")
    if seed is None:
        seed = int(np.random.SeedSequence().entropy % (2 ** 31))
        click.echo(f"seed: {seed}", err=True)
    decoding = Decoding(temperature, top_k or 0, 1.0 if top_p is None else top_p, greedy)
    note_compiling()
    sampler = model.sampler(precision, prime_ids if adapt else None, adapt_lr)
    if not beam and stdout_is_terminal():
        # On a terminal a compile note would land mid-line after the first character;
        # in a pipe it goes elsewhere, and loading the kernel early costs time.
        sampler.prepare(decoding)
    try:
        for index in range(num_samples):
            rng = np.random.default_rng([seed, index])
            pieces = sample_pieces(sampler, prime_ids, prime, length, decoding, rng, stops,
                                   beam)
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
