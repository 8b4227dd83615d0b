"""charrnn plot: a training curve from a checkpoint's history or a --log file."""

from __future__ import annotations

import click

from .common import fail


@click.command()
@click.argument("source", type=click.Path())
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None, help="Image to write: .png, .svg or .pdf [default: SOURCE's name with .png, beside it].")
@click.option("--x", "x_axis", type=click.Choice(["step", "time"]), default="step", show_default=True, help="Horizontal axis: training steps, or training time.")
@click.option("--title", default=None, help="Title above the plot [default: SOURCE's file name].")
def plot(source, output, x_axis, title):
    """Draw training and validation bits/char from a checkpoint or a --log file.

    \b
    charrnn plot model.ckpt                     # writes model.png
    charrnn plot run.jsonl -o curve.svg --x time
    """
    import os

    from ..plot import PlotError, default_output, plot_history, read_history
    output = output or default_output(source)
    try:
        plot_history(read_history(source), output, x=x_axis,
                     title=title or os.path.basename(source))
    except PlotError as error:
        fail(str(error))
    click.echo(f"wrote {output}", err=True)
