"""The Python API (charrnn/api.py, charrnn/__init__.py) against the command line: the
same text as `charrnn sample`, the same scores as `charrnn score --json`, the same
description as `charrnn info --json` and the same weights as `charrnn train` for the
same options and seed; its argument checks; what importing charrnn sets up and what it
leaves alone; and `charrnn train` without -o. The tiny model: conftest.py's `trained`.
"""

import importlib
import importlib.util
import itertools
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from clitools import TINY, assert_fails, run, sample

import charrnn
import charrnn.api
from charrnn import api, parallel
from charrnn.checkpoint import CheckpointError, load_trained
from charrnn.training_run import BadOption, RunError

# The train tests call api.train, which charrnn.train hands on to unchanged, so that
# they check the run itself whatever becomes of the name charrnn.train (see
# test_charrnn_train_stays_the_function_after_the_train_module_loads).

# TINY's architecture and run as keyword arguments of charrnn.train.
TINY_OPTIONS = dict(hidden=16, layers=1, embed=8, seq_len=16, batch_size=4, steps=30, seed=1)
PRIME = "The lazy dog jumps over the quick brown fox.\nA bird sings"


@pytest.fixture(scope="module")
def model(trained):
    return charrnn.load(trained.ckpt)


# (charrnn sample's options, generate's keyword arguments) for the same decoding
DECODINGS = {
    "plain": (["-n", "200"], dict(n=200)),
    "prime-cool": (["-n", "150", "--prime", "The dog", "-t", "0.7"],
                   dict(n=150, prime="The dog", temperature=0.7)),
    "top-k": (["-n", "150", "--top-k", "3"], dict(n=150, top_k=3)),
    "top-p": (["-n", "150", "--top-p", "0.8", "-t", "1.3"],
              dict(n=150, top_p=0.8, temperature=1.3)),
    "greedy": (["-n", "60", "--greedy", "--prime", "A"], dict(n=60, greedy=True, prime="A")),
    "stop": (["-n", "300", "--prime", "Th", "--stop", "e"], dict(n=300, prime="Th", stop="e")),
    "stops": (["-n", "300", "--stop", "qqq", "--stop", " "], dict(n=300, stop=["qqq", " "])),
    "beam": (["-n", "40", "--beam", "3"], dict(n=40, beam=3)),
    "bfloat16": (["-n", "150", "--precision", "bfloat16"], dict(n=150, precision="bfloat16")),
    "adapt": (["-n", "100", "--prime", PRIME, "--adapt"], dict(n=100, prime=PRIME, adapt=True)),
}


@pytest.mark.parametrize("name", list(DECODINGS))
def test_generate_returns_what_sample_prints(trained, model, name):
    args, kwargs = DECODINGS[name]
    printed = sample(trained, *args, "--seed", "11").stdout  # in a pipe: no separator after
    text = model.generate(**kwargs, seed=11)
    assert text == printed
    assert text.startswith(kwargs.get("prime", ""))
    if "stop" in kwargs:  # the stop came up, and ended the text
        assert text.endswith(" " if name == "stops" else "e")
        assert len(text) < kwargs["n"] + len(kwargs.get("prime", ""))
    else:
        assert len(text) == kwargs["n"] + len(kwargs.get("prime", ""))


def test_the_seed_decides_the_text_and_a_drawn_one_is_kept(model):
    first = model.generate(120, seed=3)
    assert model.generate(120, seed=3) == first
    assert model.generate(120, seed=4) != first
    drawn = model.generate(120)
    assert isinstance(model.last_seed, int)
    assert model.generate(120, seed=model.last_seed) == drawn


def test_stream_yields_pieces_that_join_to_generate(model):
    kwargs = dict(prime="The ", temperature=0.9, top_k=5, seed=5)
    pieces = list(model.stream(400, **kwargs))
    assert len(pieces) > 2 and all(isinstance(piece, str) for piece in pieces)
    assert "".join(pieces) == model.generate(400, **kwargs)
    stopped = list(model.stream(400, stop="dog", **kwargs))
    assert "".join(stopped) == model.generate(400, stop="dog", **kwargs)


def test_endless_stream_goes_past_any_length_and_a_finite_n_cuts_it(model):
    endless = "".join(itertools.islice(model.stream(0, seed=9), 6))
    finite = model.generate(300, seed=9)
    assert len(endless) > 300
    assert endless.startswith(finite)


def cli_score(trained, text, *args):
    result = run("score", trained.ckpt, "--json", "--threads", "1", *args, input=text)
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


@pytest.mark.parametrize("kind", ["plain", "adapt", "unknown", "one-char"])
def test_score_equals_score_json(trained, model, kind):
    text = trained.text[:2500]
    adapt = kind == "adapt"
    if kind == "unknown":
        text = text[:300] + "€!9" + text[300:900] + "¿"
    elif kind == "one-char":
        text = "T"
    expected = cli_score(trained, text, *(["--adapt"] if adapt else []))
    result = model.score(text, adapt=adapt)
    assert result == expected
    assert list(result) == list(expected)
    assert result["unknown_chars"] == (4 if kind == "unknown" else 0)
    if kind == "one-char":  # nothing to score
        assert result["bits_per_char"] is None and result["chars"] == 0
    else:
        assert result["chars"] == len(text) - 1 - result["unknown_chars"]
        assert result["bits_per_char"] > 0
    if adapt:
        assert result["bits_per_char"] != model.score(text)["bits_per_char"]


def test_score_lines_equals_per_line(trained, model):
    text = "The dog.\r\n\nA quick brown fox jumps.\nZebra €\nthe end"
    result = run("score", trained.ckpt, "--per-line", "--threads", "1", input=text)
    assert result.exit_code == 0, result.stderr
    lines = list(model.score_lines(text))
    assert [line for line, _ in lines] == ["The dog.", "", "A quick brown fox jumps.",
                                           "Zebra €", "the end"]
    assert "".join(f"{bits:.4f}\t{line}\n" for line, bits in lines) == result.stdout
    assert len({round(bits, 4) for _, bits in lines}) == len(lines)


def test_info_equals_info_json(trained, model):
    result = run("info", trained.ckpt, "--json")
    assert result.exit_code == 0, result.stderr
    summary = model.info()
    assert summary == json.loads(result.stdout)
    assert (summary["hidden"], summary["layers"], summary["step"]) == (16, 1, 30)


def test_train_gives_the_weights_train_writes(trained, tmp_path):
    from_cli = tmp_path / "cli.ckpt"
    result = run("train", trained.corpus, "-o", from_cli, *TINY, "--eval-every", "10",
                 "--quiet")
    assert result.exit_code == 0, result.stderr
    parallel.set_thread_count(1)  # TINY's --threads 1: the same thread count
    events, log = [], tmp_path / "run.jsonl"
    output = tmp_path / "api.ckpt"
    returned = api.train(str(trained.corpus), str(output), events.append,
                             eval_every=10, log=str(log), **TINY_OPTIONS)
    assert isinstance(returned, charrnn.TrainedModel)
    assert returned.path == str(output) and output.exists()
    api_weights = load_trained(output)[0].flat
    assert np.array_equal(api_weights, load_trained(from_cli)[0].flat)
    assert np.array_equal(returned.model.flat, api_weights)
    assert api_weights.size == returned.config.parameter_count()

    kinds = [event["kind"] for event in events]
    assert kinds[0] == "start" and kinds[-1] == "done"
    assert kinds.count("step") == 30
    evals = [event for event in events if event["kind"] == "eval"]
    assert [event["step"] for event in evals][-1] == 30 and len(evals) >= 3
    assert all(event["step"] % 10 == 0 for event in evals)
    assert events[-1]["path"] == str(output)
    logged = [json.loads(line) for line in log.read_text().splitlines()]
    assert [entry["val_bpc"] for entry in logged] == [event["val_bpc"] for event in evals]
    assert returned.info()["val_bpc"] == charrnn.load(from_cli).info()["val_bpc"]


def test_train_without_output_writes_the_corpus_name_in_the_cwd(trained, tmp_path,
                                                                 monkeypatch):
    monkeypatch.chdir(tmp_path)
    returned = api.train(str(trained.corpus), **{**TINY_OPTIONS, "steps": 3})
    assert (tmp_path / "m.ckpt").exists()  # m.txt lives in another directory
    assert not (trained.folder / "m.ckpt").samefile(tmp_path / "m.ckpt")
    assert returned.path == "m.ckpt" and returned.info()["step"] == 3


def test_charrnn_train_stays_the_function_after_the_train_module_loads(trained, tmp_path):
    # Importing a submodule binds it as an attribute of the package: one named like a
    # public function (charrnn/train.py) would replace charrnn.train once loaded.
    importlib.import_module("charrnn.trainer")
    assert callable(charrnn.train) and callable(charrnn.load)
    assert [name for name in charrnn.__all__
            if importlib.util.find_spec(f"charrnn.{name}") is not None] == []
    for name in ("a", "b"):  # a script that trains twice
        returned = charrnn.train(str(trained.corpus), str(tmp_path / f"{name}.ckpt"),
                                 **{**TINY_OPTIONS, "steps": 2})
        assert returned.info()["step"] == 2


def test_train_refuses_unknown_options_with_type_error(trained, tmp_path):
    output = tmp_path / "x.ckpt"
    with pytest.raises(TypeError, match="hiden"):
        api.train(str(trained.corpus), str(output), hiden=16, steps=3)
    assert not output.exists()


@pytest.mark.parametrize("option, value", [
    ("hidden", 0), ("cell", "xyz"), ("lr", -1), ("steps", 2.5), ("dropout", 1.0)])
def test_train_refuses_bad_values_naming_the_option(trained, tmp_path, option, value):
    output = tmp_path / "x.ckpt"
    options = {**TINY_OPTIONS, option: value}
    with pytest.raises(BadOption) as caught:
        api.train(str(trained.corpus), str(output), **options)
    assert isinstance(caught.value, RunError)
    assert caught.value.option == "--" + option
    assert option in str(caught.value), str(caught.value)
    assert not output.exists()


def test_train_refuses_an_existing_output_unless_forced(trained, tmp_path):
    output = tmp_path / "x.ckpt"
    output.write_bytes(trained.ckpt.read_bytes())
    with pytest.raises(RunError, match="already exists"):
        api.train(str(trained.corpus), str(output), **{**TINY_OPTIONS, "steps": 3})
    assert output.read_bytes() == trained.ckpt.read_bytes()
    forced = api.train(str(trained.corpus), str(output), force=True,
                           **{**TINY_OPTIONS, "steps": 3})
    assert forced.info()["step"] == 3


@pytest.mark.parametrize("problem", ["missing corpus", "diverges"])
def test_train_failures_are_run_errors_with_the_commands_line(trained, tmp_path, problem):
    # With one process, failures every rank would share come out as themselves.
    corpus = tmp_path / "none.txt" if problem == "missing corpus" else trained.corpus
    options = {**TINY_OPTIONS, **({"lr": 1e30} if problem == "diverges" else {})}
    with pytest.raises(RunError) as caught:
        charrnn.api.train(str(corpus), str(tmp_path / "x.ckpt"), **options)
    message = str(caught.value)
    assert "\n" not in message
    assert ("none.txt" in message) if problem == "missing corpus" else \
        ("not finite" in message)


def test_train_without_o_writes_corpus_ckpt_and_says_how_to_sample(trained, tmp_path,
                                                                   monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "corpus.txt").write_text(trained.text, encoding="utf-8")
    args = ["train", os.path.join("data", "corpus.txt"), *TINY[:-6], "--steps", "3",
            "--threads", "1"]
    first = run(*args)
    assert first.exit_code == 0, first.stderr
    assert (tmp_path / "corpus.ckpt").exists() and not (tmp_path / "data" / "corpus.ckpt").exists()
    assert "charrnn sample corpus.ckpt" in first.stderr
    written = (tmp_path / "corpus.ckpt").read_bytes()
    again = run(*args)
    assert "already exists" in assert_fails(again, code=1)
    assert (tmp_path / "corpus.ckpt").read_bytes() == written
    sampled = run("sample", "corpus.ckpt", "-n", "20", "--seed", "1")
    assert sampled.exit_code == 0, sampled.stderr
    assert len(sampled.stdout) == 20
    assert sampled.stdout == charrnn.load("corpus.ckpt").generate(20, seed=1)


def test_train_from_stdin_without_o_writes_stdin_ckpt(trained, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = run("train", "-", *TINY[:-6], "--steps", "3", "--threads", "1",
                 input=trained.text)
    assert result.exit_code == 0, result.stderr
    assert (tmp_path / "stdin.ckpt").exists()
    assert "charrnn sample stdin.ckpt" in result.stderr


@pytest.mark.parametrize("kwargs", [
    dict(temperature=0), dict(temperature=float("nan")), dict(top_p=1.5), dict(top_p=0),
    dict(top_k=0), dict(stop=""), dict(stop=["a", ""]), dict(n=0, beam=3), dict(n=-1),
    dict(beam=0), dict(adapt_lr=0)])
def test_generate_refuses_what_sample_refuses(model, kwargs):
    with pytest.raises(ValueError):
        model.generate(**{"n": 20, "seed": 1, **kwargs})


def test_unknown_prime_characters_are_skipped_with_a_warning_as_sample_does(trained, model):
    prime = "The €dog¿"
    printed = run("sample", trained.ckpt, "-n", "40", "--seed", "2", "--prime", prime,
                  "--threads", "1")
    assert printed.exit_code == 0
    assert "skipping prime characters" in printed.stderr and "€" in printed.stderr
    with pytest.warns(UserWarning, match="never saw") as caught:
        text = model.generate(40, prime=prime, seed=2)
    assert "€" in str(caught[0].message) and "¿" in str(caught[0].message)
    assert text == printed.stdout
    assert text.startswith("The dog") and len(text) == len("The dog") + 40


def test_unknown_prime_warning_points_at_the_callers_line(model):
    # stacklevel: the warning shows the user's call, not a line inside charrnn
    with pytest.warns(UserWarning) as caught:
        model.generate(10, prime="€The", seed=2)
    assert caught[0].filename == __file__


HOST_PROGRAM = r"""
import ctypes, json, os, signal, sys

def host_handler(signum, frame):
    pass

signal.signal(signal.SIGINT, host_handler)
signal.signal(signal.SIGTERM, signal.SIG_IGN)
WATCHED = (signal.SIGINT, signal.SIGTERM)
before = [signal.getsignal(s) for s in WATCHED]

mallopt_calls = []  # charrnn.runtime.keep_freed_memory reaches mallopt through ctypes

class Spy(ctypes.CDLL):
    def __getattr__(self, name):
        if name == "mallopt":
            mallopt_calls.append(name)
        return super().__getattr__(name)

    def __getitem__(self, name):
        if name == "mallopt":
            mallopt_calls.append(name)
        return super().__getitem__(name)

ctypes.CDLL = Spy
blas = os.environ.get("OPENBLAS_NUM_THREADS")
import charrnn
seen = {"blas_before": blas, "blas_after": os.environ.get("OPENBLAS_NUM_THREADS")}
text = charrnn.load(sys.argv[1]).generate(5, seed=1)
during = []
charrnn.train(sys.argv[2], sys.argv[3], hidden=8, layers=1, embed=4, seq_len=8,
              batch_size=2, steps=2, seed=1,
              progress=lambda event: during.append(signal.getsignal(signal.SIGINT)))
seen["text"] = text
seen["signals_kept"] = [signal.getsignal(s) for s in WATCHED] == before
seen["kept_during_training"] = bool(during) and all(h is host_handler for h in during)
seen["mallopt_by_charrnn"] = len(mallopt_calls)
charrnn.runtime.keep_freed_memory()  # the command line's set-up: the spy must see it
seen["mallopt_by_command_setup"] = len(mallopt_calls)
print(json.dumps(seen))
"""


def host_env(**changes):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("MALLOC_") and k not in ("GLIBC_TUNABLES", "OPENBLAS_NUM_THREADS")}
    env.update(changes)
    return env


@pytest.mark.slow  # a subprocess or a compile: `make test-fast` leaves it out
@pytest.mark.parametrize("user_blas", [None, "3"])
def test_import_leaves_signals_and_allocator_alone(trained, model, tmp_path, user_blas):
    env = host_env(**({"OPENBLAS_NUM_THREADS": user_blas} if user_blas else {}))
    done = subprocess.run(
        [sys.executable, "-c", HOST_PROGRAM, str(trained.ckpt), str(trained.corpus),
         str(tmp_path / "host.ckpt")],
        capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    assert seen["blas_before"] == user_blas
    assert seen["blas_after"] == (user_blas or "1")
    assert seen["text"] == model.generate(5, seed=1)
    assert seen["signals_kept"] and seen["kept_during_training"]
    assert seen["mallopt_by_charrnn"] == 0
    assert seen["mallopt_by_command_setup"] > 0


@pytest.mark.parametrize("kind", ["missing", "text", "truncated"])
def test_load_refuses_a_bad_file_in_one_line(trained, tmp_path, kind):
    path = tmp_path / "bad.ckpt"
    if kind == "text":
        path.write_text(trained.text)
    elif kind == "truncated":
        path.write_bytes(trained.ckpt.read_bytes()[:-100])
    with pytest.raises(CheckpointError) as caught:
        charrnn.load(path)
    message = str(caught.value)
    assert "bad.ckpt" in message and "\n" not in message.strip()
