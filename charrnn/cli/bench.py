"""charrnn bench: the speed benchmark (charrnn.bench.speed); the others run as
`python -m charrnn.bench.NAME`."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import click

from .common import note_compiling, set_threads, threads_option, write_stdout


@click.command()
@click.option("--config", "configs", type=click.Choice(["S", "M", "L", "B1", "all"]), multiple=True, default=["M"], show_default=True, help="Model/batch configuration(s) to time (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per configuration (and per extra measurement).")
@click.option("--seconds", type=click.FloatRange(0.5), default=5.0, show_default=True, help="Timed seconds per measurement (after a burn-in); training's are shared by rounds that take turns with PyTorch's.")
@click.option("--no-torch", is_flag=True, help="Skip the PyTorch peer even when it is installed.")
@threads_option()
@click.option("--isa", type=click.Choice(["native", "avx2"]), default="native", show_default=True, help="Instruction set to measure: this CPU's best, or AVX2 only (no AVX-512) as on most laptops, for charrnn's kernels, OpenBLAS and PyTorch alike.")
@click.option("--extras", is_flag=True, help="Also measure start-up of `sample -n 1`, peak RSS training M (charrnn and PyTorch) and training L on 1 vs 2 threads, and whole `charrnn train` processes against the benchmark's training figure, each beside its target (~1 min more).")
def bench(configs, as_json, seconds, no_torch, threads, isa, extras):
    """Time training and sampling throughput, side by side with PyTorch if installed.

    \b
    charrnn bench --config M
    charrnn bench --config M --extras --json
    charrnn bench --config all --isa avx2
    make bench        # every config, BLAS overrides removed
    """
    if isa == "avx2":  # the same options, in a process compiled for AVX2
        args = [word for name in configs for word in ("--config", name)]
        args += ["--seconds", str(seconds)] + ["--json"] * as_json + \
            ["--no-torch"] * no_torch + ["--extras"] * extras + \
            (["--threads", str(threads)] if threads else [])
        sys.exit(in_avx2_child(args))
    set_threads(threads)
    note_compiling()
    from ..bench.speed import CONFIGS, bench_rows, format_row

    names = list(CONFIGS) if "all" in configs else list(dict.fromkeys(configs))
    for row in bench_rows(names, seconds, not no_torch, extras):
        write_stdout((json.dumps(row) if as_json else format_row(row)) + "\n")


def in_avx2_child(args: list[str]) -> int:
    """Run `charrnn bench ARGS` in a child process set up as an AVX2-only CPU
    (runtime.avx2_environment); its output passes through. Returns its exit code."""
    from ..runtime import avx2_environment
    env = avx2_environment()
    if env is None:
        raise click.ClickException("this CPU cannot run AVX2 code: --isa avx2 needs AVX2 "
                                   "and FMA")
    command = [sys.executable, "-m", "charrnn", "bench", *args]
    return subprocess.run(command, env={**os.environ, **env}).returncode
