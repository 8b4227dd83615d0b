"""charrnn info: describe a checkpoint."""

from __future__ import annotations

import json

import click

from .common import json_option, load_or_fail, write_stdout


@click.command()
@click.argument("checkpoint", type=click.Path())
@json_option
def info(checkpoint, as_json):
    """Describe a checkpoint: architecture, vocabulary, training record.

    \b
    charrnn info model.ckpt
    charrnn info model.ckpt --json | jq .val_bpc
    """
    from ..progress import format_seconds

    model = load_or_fail(checkpoint)
    summary = model.info()
    if as_json:
        write_stdout(json.dumps(summary, ensure_ascii=False) + "\n")
        return

    def bpc(value):
        return "n/a" if value is None else f"{value:.4f} bits/char"
    history = summary["history"]
    curve = [h["val_bpc"] for h in history if h.get("val_bpc") is not None]
    lines = [
        f"cell          {summary['cell']}, {summary['layers']} layer(s) x "
        f"{summary['hidden']} hidden",
        "input         " + (f"embedding {summary['embed']}" if summary["embed"] else "one-hot"),
        f"dropout       {summary['dropout']}",
        "output        " + ("adaptive softmax (head "
                            f"{model.config.head:,} chars, {len(model.config.tails)} clusters)"
                            if summary["softmax"] == "adaptive" else "full softmax"),
        f"vocabulary    {summary['vocab_size']} chars: {model.vocab.preview()}",
        f"parameters    {summary['params']:,}",
        f"steps         {summary['step']:,} ({summary['chars_seen']:,} chars seen)",
        f"validation    best {bpc(summary['val_bpc'])}, last {bpc(summary['last_val_bpc'])}"
        + (f"  {sparkline(curve)}" if history else ""),
        f"trained for   {format_seconds(summary['train_seconds'])}",
        f"file format   {summary['format_version']}",
    ]
    write_stdout("\n".join(lines) + "\n")


def sparkline(values) -> str:
    if not values:
        return ""
    bars = "▁▂▃▄▅▆▇█"
    low, high = min(values), max(values)
    span = (high - low) or 1.0
    return "".join(bars[min(7, int((v - low) / span * 7.999))] for v in values[-40:])
