"""The command line: the only code that knows click, stdin/stdout and exit codes. One
module per subcommand, holding its click declarations and the calls it makes; the
options several share are declared once in common.py.

Only the product (generated text, scores, info) goes to stdout; diagnostics and progress
go to stderr. Errors are one line: exit 2 for bad usage, 1 for runtime failures,
130/143 after a clean stop on SIGINT/SIGTERM.
"""

from __future__ import annotations

import click

from .. import __version__
from ..runtime import setup_command_line
from .bench import bench
from .info import info
from .plot import plot
from .sample import sample
from .score import score
from .train import train


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="charrnn")
def cli():
    """Character-level RNN, GRU and LSTM text models on the CPU.

    \b
    charrnn train corpus.txt --time-limit 10m      # writes corpus.ckpt
    charrnn sample corpus.ckpt -n 500 --prime "ROMEO:" --seed 7
    cat text.txt | charrnn score corpus.ckpt
    """


for command in (train, sample, score, info, plot, bench):
    cli.add_command(command)


def main(args=None):
    setup_command_line()
    cli(args, prog_name="charrnn")
