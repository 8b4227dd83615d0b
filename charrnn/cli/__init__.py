"""The command line: the only code that knows click, stdin/stdout and exit codes. One
module per subcommand, holding its click declarations and the calls it makes; the
options several share are declared once in common.py.

Only the product (generated text, scores, info) goes to stdout; diagnostics and progress
go to stderr. Errors are one line: exit 2 for bad usage, 1 for runtime failures,
130/143 after a clean stop on SIGINT/SIGTERM.
"""

from __future__ import annotations

import gc
import importlib
from collections.abc import Mapping

import click

from .. import __version__
from ..runtime import setup_command_line

# Each subcommand lives in the module of its name, as a click command of that name.
SUBCOMMANDS = ("train", "sample", "score", "info", "plot", "bench")


class Subcommands(Mapping):
    """The group's commands by name, each one's module imported when the command is
    first asked for: `charrnn sample` starts without loading training's or the
    benchmarks' modules (docs/performance.md, "Start-up"). `charrnn --help`, which
    lists them all, imports them all."""

    def __getitem__(self, name: str) -> click.Command:
        if name not in SUBCOMMANDS:
            raise KeyError(name)
        return getattr(importlib.import_module(f"{__name__}.{name}"), name)

    def __contains__(self, name) -> bool:
        return name in SUBCOMMANDS

    def __iter__(self):
        return iter(SUBCOMMANDS)

    def __len__(self) -> int:
        return len(SUBCOMMANDS)


@click.group(commands=Subcommands(), context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="charrnn")
def cli():
    """Character-level RNN, GRU and LSTM text models on the CPU.

    \b
    charrnn train corpus.txt --time-limit 10m      # writes corpus.ckpt
    charrnn sample corpus.ckpt -n 500 --prime "ROMEO:" --seed 7
    cat text.txt | charrnn score corpus.ckpt
    """


def main(args=None):
    """The console script: runs one command, which ends the process (SystemExit)."""
    setup_command_line()
    try:
        cli(args, prog_name="charrnn")
    finally:
        # At exit the interpreter's collections would trace every object Numba made,
        # about 0.2 s after the last character (docs/performance.md, "Start-up"); frozen,
        # they are left to the end of the process, which returns all its memory anyway.
        gc.freeze()
