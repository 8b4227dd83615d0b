"""`charrnn bench` plumbing on tiny shapes (no torch needed; the figures themselves are
what `make bench` and `charrnn bench --extras` are for): every field the rows promise
is there and sane, the targets are printed beside the values, and only rows reach stdout.
"""

import json
import os

import numpy as np
import pytest
from click.testing import CliRunner

from charrnn.bench import extras
from charrnn.bench import speed as bench
from charrnn.cli import cli


@pytest.fixture
def tiny_configs(monkeypatch):
    monkeypatch.setitem(bench.CONFIGS, "M", (1, 8, 4, 8))
    monkeypatch.setitem(bench.CONFIGS, "L", (1, 16, 8, 8))
    monkeypatch.setattr(extras, "STARTUP_RUNS", 1)


@pytest.mark.slow  # a subprocess or a compile: `make test-fast` leaves it out
def test_bench_extras_rows_in_json_and_as_text(tiny_configs):
    result = CliRunner().invoke(cli, ["bench", "--config", "M", "--extras", "--no-torch",
                                      "--seconds", "0.5", "--json", "--threads", "2"])
    assert result.exit_code == 0, result.output
    config, startup, rss, scaling, process = [json.loads(line)
                                              for line in result.stdout.splitlines()]

    assert (config["config"], config["hidden"], config["threads"]) == ("M", 8, 2)
    assert config["train_chars_per_s"] > 0 and config["sample_chars_per_s"] > 0
    assert "torch_train_chars_per_s" not in config

    assert startup["measure"] == "startup" and startup["runs"] == 1
    assert 0 < startup["first_char_s"] <= startup["exit_s"] < 60
    assert startup["target_max_s"] == 0.5 and "--prime ROMEO:" in startup["command"]

    assert rss["measure"] == "peak_rss" and rss["config"] == "M" and rss["threads"] == 2
    assert 20 < rss["peak_rss_mb"] < 4096  # a Python process with numpy and numba loaded
    assert "ratio" not in rss and "torch_peak_rss_mb" not in rss
    assert rss["target_max_ratio"] == 1.0

    assert scaling["measure"] == "thread_scaling" and scaling["config"] == "L"
    one, two = scaling["train_chars_per_s_1_thread"], scaling["train_chars_per_s_2_threads"]
    assert one > 0 and two > 0 and scaling["ratio"] == pytest.approx(two / one)
    assert scaling["target_min_ratio"] == 1.6

    # whole `charrnn train` processes, their step difference against the benchmark's rate
    assert process["measure"] == "train_process" and process["config"] == "M"
    k1, k2 = process["steps"]
    assert 0 < k1 < k2 and process["train_chars_per_s"] > 0
    assert process["ratio"] == pytest.approx(
        process["train_chars_per_s"] / process["bench_train_chars_per_s"])

    lines = [bench.format_row(row) for row in (config, startup, rss, scaling, process)]
    isa = "AVX-512" if config["isa"] == "AVX-512" else "AVX2"
    assert lines[0].startswith(f" M 1x8 batch 4x8 float32 {isa} threads 2 | train ")
    assert config["isa"] in ("AVX-512", "AVX2") and config["blas"]
    assert f"first character after {startup['first_char_s']:.2f} s" in lines[1]
    assert lines[1].endswith("| target <= 0.5 s")
    assert f"charrnn {rss['peak_rss_mb']:,.0f} MiB (torch not measured)" in lines[2]
    assert lines[2].endswith("| target <= 1.00x torch")
    assert f"ratio {scaling['ratio']:.2f}x | target >= 1.6x" in lines[3]
    assert lines[4].startswith("charrnn train process M 1x8 batch 4x8 threads 2")
    assert lines[4].endswith(f"ratio {process['ratio']:.2f}x | target >= 0.95x")


def test_extras_only_when_asked(tiny_configs, monkeypatch):
    monkeypatch.setattr(bench, "run_config", lambda name, seconds, with_torch: {"config": name})
    assert list(bench.bench_rows(["M"], 0.5, with_torch=False)) == [{"config": "M"}]


@pytest.mark.parametrize("peer, expected", [
    ({"peak_rss_mb": 400.0}, {"torch_peak_rss_mb": 400.0, "ratio": 0.5}),
    ({"error": "ModuleNotFoundError: No module named 'torch'"},
     {"torch": "not measured: ModuleNotFoundError: No module named 'torch'"}),
])
def test_peak_rss_against_torch_measured_or_said_why_not(monkeypatch, peer, expected):
    calls = []

    def in_child(args, env=None):
        calls.append(args)
        return {"peak_rss_mb": 200.0} if args[1] == "charrnn" else peer
    monkeypatch.setattr(extras, "in_child", in_child)
    row = extras.peak_rss_row(seconds=30.0, threads=2)
    assert {k: row[k] for k in expected} == expected
    assert row["peak_rss_mb"] == 200.0
    # Each peer trains config M in a fresh process, briefly: the peak comes in the first steps.
    shape = ",".join(map(str, bench.CONFIGS["M"]))
    assert calls == [["train-rss", peer_name, shape, extras.RSS_SECONDS, 2]
                     for peer_name in ("charrnn", "torch")]
    assert "MiB" in bench.format_row(row)


def resident_mb() -> float:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:")) / 1024


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="Linux only")
def test_peak_rss_is_the_high_water_mark():
    before = bench.peak_rss_mb()
    assert before >= resident_mb() > 0
    # Enough to pass the old peak by 64 MiB, whatever this process held before.
    block = np.ones(int((before - resident_mb() + 64) * (1 << 20)), np.uint8)  # touched
    del block
    assert bench.peak_rss_mb() >= before + 60


def test_isa_avx2_runs_the_same_options_in_a_child_compiled_for_avx2(monkeypatch):
    import subprocess

    from charrnn import runtime
    if runtime.avx2_environment() is None:
        pytest.skip("this CPU cannot run AVX2 code")
    calls = []

    def fake_run(command, env):
        calls.append((command, env))
        return subprocess.CompletedProcess(command, 3)
    monkeypatch.setattr(subprocess, "run", fake_run)
    result = CliRunner().invoke(cli, ["bench", "--config", "S", "--config", "B1", "--isa",
                                      "avx2", "--seconds", "2", "--no-torch", "--json"])
    assert result.exit_code == 3  # the child's
    (command, env), = calls
    assert command[-9:] == ["bench", "--config", "S", "--config", "B1", "--seconds", "2.0",
                            "--json", "--no-torch"]
    assert env["NUMBA_CPU_NAME"] == "haswell" and env["OPENBLAS_CORETYPE"] == "Haswell"
    assert env["ATEN_CPU_CAPABILITY"] == "avx2" and env["ONEDNN_MAX_CPU_ISA"] == "AVX2"
    assert "+avx2" in env["NUMBA_CPU_FEATURES"].split(",")
    assert not [f for f in env["NUMBA_CPU_FEATURES"].split(",") if "avx512" in f]
    # compiled code for another target must not share the native path's cache
    assert env["NUMBA_CACHE_DIR"] == os.environ["NUMBA_CACHE_DIR"].rstrip(os.sep) + "-avx2"


def test_training_alternates_with_the_peer_and_the_ratio_is_the_rounds_median(
        tiny_configs, monkeypatch):
    """run_config times charrnn's training and the peer's in turns, TRAIN_ROUNDS times
    each a share of the seconds, and quotes the median of each round's ratio (not the
    ratio of medians), besides each side's median rate."""
    from charrnn.bench import peer as peer_module
    order = []
    ours = iter([100.0, 300.0, 200.0])
    theirs = iter([50.0, 200.0, 400.0])  # rounds' ratios 2.0, 1.5, 0.5; medians' 1.0

    class Timer:
        def __init__(self, *shape):
            pass

        def rate(self, seconds):
            order.append(("charrnn", seconds))
            return next(ours)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            order.append("timer closed")

    class Peer(Timer):
        measures, error, hello = True, None, {"torch": "9.9"}

        def train(self, seconds):
            order.append(("torch", seconds))
            return next(theirs)

        def sample(self, seconds, onednn):
            return 10.0 if onednn else 20.0

    monkeypatch.setattr(bench, "TrainTimer", Timer)
    monkeypatch.setattr(peer_module, "TorchPeer", lambda name, threads: Peer())
    monkeypatch.setattr(bench, "charrnn_sample", lambda *args: 1000.0)
    monkeypatch.setattr(bench, "TRAIN_ROUNDS", 3)
    row = bench.run_config("M", 1.5)
    assert order[:6] == [("charrnn", 0.5), ("torch", 0.5)] * 3
    assert row["train_chars_per_s"] == 200.0 and row["torch_train_chars_per_s"] == 200.0
    assert row["train_round_ratios"] == [2.0, 1.5, 0.5] and row["train_ratio"] == 1.5
    assert row["sample_ratio"] == 1000.0 / 20.0 and row["torch"] == "9.9"
    assert "ratio 1.50x, rounds 0.50-2.00x" in bench.format_row(row)


def test_the_peer_answers_each_request_with_a_line_of_json(monkeypatch):
    """bench/peer.serve, the child's side, with a stand-in torch: its version first,
    then a rate per request, the model built once; a request it does not know gets an
    error, which the parent reports."""
    import sys
    import types

    from charrnn.bench import peer as peer_module
    fake_torch = types.SimpleNamespace(__version__="0.0-stand-in", set_num_threads=lambda n: None)
    monkeypatch.setitem(sys.modules, "torch", fake_torch)
    built = []

    def train_step(*shape):
        built.append(shape)
        return lambda: None
    monkeypatch.setattr(bench, "torch_train_step", train_step)
    monkeypatch.setattr(bench, "torch_sample", lambda layers, hidden, seconds, onednn:
                        7.0 if onednn else 8.0)
    replies = []
    peer_module.serve("M", 2, ["train 0.01\n", "train 0.01\n", "sample 0.01 onednn\n",
                               "sample 0.01 plain\n", "fly 1\n"], replies.append)
    assert replies[0] == {"torch": "0.0-stand-in"}
    assert all(reply["rate"] > 0 for reply in replies[1:3]) and len(built) == 1
    assert replies[3:5] == [{"rate": 7.0}, {"rate": 8.0}]
    assert replies[5] == {"error": "unknown request 'fly 1'"}


@pytest.mark.slow  # a subprocess
def test_a_peer_without_torch_says_so_and_measures_nothing(tmp_path, monkeypatch):
    """The real child process, where torch cannot be imported: its first line says
    "not installed", the row says so, and closing it ends the child."""
    from charrnn.bench.peer import TorchPeer
    (tmp_path / "torch.py").write_text("raise ImportError('no torch here')\n")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    with TorchPeer("M", 1) as peer:
        assert peer.hello == {"torch": "not installed"} and not peer.measures
        assert peer.train(0.1) is None
        assert bench.peer_figures(peer, [(1.0, None)], 0.1, True) == {"torch": "not installed"}
    assert peer._process.returncode == 0
