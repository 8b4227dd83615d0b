"""Training you can trust: exact resume, validation that does not disturb training, best
and last checkpoints, early stopping, rollback on a non-finite loss, clean stops on
SIGTERM/SIGINT, and the hidden state carried from batch to batch.

Runs go through the CLI in-process (CliRunner) or through Trainer directly, on a tiny
LSTM and a few KB of text generated here; one test trains in a real subprocess to send
it a signal. Weights are compared bit for bit (np.array_equal), never approximately.
"""

import itertools
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import charrnn.signals
import charrnn.trainer
from charrnn.batches import split_ids
from charrnn.checkpoint import load_trained
from charrnn.cli import cli
from charrnn.corpus import corpus_ids
from charrnn.model import Model, ModelConfig
from charrnn.trainer import Trainer, TrainOptions, best_path
from charrnn.vocab import Vocab

SMALL = ["--hidden", "16", "--layers", "2", "--embed", "8", "--seq-len", "16",
         "--batch-size", "8", "--threads", "1", "--seed", "3",
         "--warmup", "0"]  # the learning-rate assertions below expect no warm-up
CONSOLE_SCRIPT = Path(sys.executable).with_name("charrnn")


def text_of(size=4000, seed=5):
    """Deterministic sentences: at batch 8 x seq 16 the streams wrap after 28 steps."""
    rng = random.Random(seed)
    words = "a bird sang over the hill and seven cows lay in the warm grass".split()
    out = []
    while sum(map(len, out)) < size:
        out.append(" ".join(rng.choice(words) for _ in range(rng.randint(2, 8))) + ".\n")
    return "".join(out)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("train") / "corpus.txt"
    path.write_text(text_of(), encoding="utf-8")
    return path


def train(corpus, out, *args):
    result = CliRunner().invoke(cli, ["train", str(corpus), "-o", str(out), *SMALL,
                                      *map(str, args)])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"crashed: {result.exception!r}\n{result.stderr}") \
            from result.exception
    return result


def trained(corpus, out, *args):
    result = train(corpus, out, *args)
    assert result.exit_code == 0, result.stderr
    return load(out)


def load(path):
    """(arrays incl. params, training state) of a checkpoint."""
    model, _, record, arrays = load_trained(path)
    return {"params": model.flat, **arrays}, record["state"]


def assert_same_arrays(a, b, skip=()):
    assert set(a) == set(b)
    for name in set(a) - set(skip):
        assert np.array_equal(a[name], b[name]), f"{name} differs"


def small_trainer(tmp_path, steps, layers=1, **options):
    """A Trainer built directly (no CLI), so a test can watch it between steps."""
    text = text_of()
    vocab = Vocab.from_text(text)
    ids, _ = corpus_ids(text, vocab)
    train_ids, val_ids = split_ids(ids, 0.1)
    model = Model(ModelConfig(cell="lstm", vocab_size=vocab.size, hidden=16, layers=layers,
                              embed=8))
    model.initialise(np.random.default_rng(0), vocab.counts)
    options = TrainOptions(**{"seq_len": 16, "batch_size": 8, "steps": steps, "warmup": 0,
                              "lr": 2e-3, **options})
    return Trainer(model, vocab, train_ids, val_ids, options, str(tmp_path / "m.ckpt"))


# ----------------------------------------------------------------------- exact resume
@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_resume_continues_bit_for_bit(corpus, tmp_path, cell):
    # Dropout draws from the RNG, warm-up depends on the step, the streams wrap at step 28,
    # evaluation (every 7) and saving (every 10) fall on and off the split point.
    args = ["--cell", cell, "--dropout", "0.1", "--warmup", "6",
            "--eval-every", "7", "--save-every", "10"]
    whole, whole_state = trained(corpus, tmp_path / "whole.ckpt", *args, "--steps", 40)
    half, half_state = trained(corpus, tmp_path / "split.ckpt", *args, "--steps", 20)
    assert half_state["step"] == 20 and not np.array_equal(half["params"], whole["params"])
    resumed, resumed_state = trained(corpus, tmp_path / "split.ckpt", *args, "--resume",
                                     "--steps", 40)
    assert resumed_state["step"] == whole_state["step"] == 40
    assert resumed_state["cursor"] == whole_state["cursor"]
    assert resumed_state["rng_state"] == whole_state["rng_state"]
    # Params, Adam moments and the carried state; GRU and RNN have no cell state c.
    assert_same_arrays(resumed, whole, skip=() if cell == "lstm" else ("state_c",))


def test_resume_refuses_another_batch_size(corpus, tmp_path):
    # The data cursor and the carried state are those of the stored streams.
    trained(corpus, tmp_path / "m.ckpt", "--steps", 3)
    result = train(corpus, tmp_path / "m.ckpt", "--resume", "--batch-size", 4)
    assert result.exit_code == 2
    assert "--batch-size 4 differs from the 8 streams" in result.stderr
    assert load(tmp_path / "m.ckpt")[1]["step"] == 3


def test_resume_after_an_interrupt_keeps_the_schedule(corpus, tmp_path, monkeypatch):
    # A cosine schedule depends on the total; stop the run as SIGTERM would after 17 steps.
    args = ["--lr-schedule", "cosine", "--steps", 30, "--eval-every", 5, "--save-every", 0]
    whole, _ = trained(corpus, tmp_path / "whole.ckpt", *args)
    calls = itertools.count()

    def stop_after_17(self):
        if next(calls) >= 17:
            self.signum = signal.SIGTERM
        return self.signum

    with monkeypatch.context() as patch:
        patch.setattr(charrnn.signals.StopFlag, "__call__", stop_after_17)
        result = train(corpus, tmp_path / "cut.ckpt", *args)
    assert result.exit_code == 128 + signal.SIGTERM
    assert "--resume" in result.stderr.strip().splitlines()[-1]
    assert load(tmp_path / "cut.ckpt")[1]["step"] == 17
    resumed, state = trained(corpus, tmp_path / "cut.ckpt", "--resume")
    assert state["step"] == 30
    assert_same_arrays(resumed, whole)


# ----------------------------------------------------------------------- validation
def test_validation_does_not_change_the_trajectory(corpus, tmp_path):
    args = ["--dropout", "0.2", "--steps", 35, "--save-every", 0]
    often, often_state = trained(corpus, tmp_path / "often.ckpt", *args, "--eval-every", 5)
    never, never_state = trained(corpus, tmp_path / "never.ckpt", *args, "--eval-every", 0)
    assert [h["step"] for h in often_state["history"]] == [5, 10, 15, 20, 25, 30, 35]
    assert [h["step"] for h in never_state["history"]] == [35]
    assert_same_arrays(often, never)


def scripted_evaluate(monkeypatch, values):
    """Replace validation by a script of bits/char values, one per evaluation."""
    script = iter(values)
    monkeypatch.setattr(charrnn.trainer, "evaluate", lambda *args, **kwargs: next(script))


def test_best_checkpoint_holds_the_best_validation_state(corpus, tmp_path, monkeypatch):
    out = tmp_path / "m.ckpt"
    assert best_path(str(out)) == str(tmp_path / "m.best.ckpt")
    with monkeypatch.context() as patch:
        scripted_evaluate(patch, [3.0, 2.0, 2.5, 2.6])
        last, state = trained(corpus, out, "--steps", 20, "--eval-every", 5)
    best, best_state = load(tmp_path / "m.best.ckpt")
    assert best_state["step"] == 10 and best_state["best_val_bpc"] == 2.0
    assert (state["step"], state["best_step"], state["best_val_bpc"], state["last_val_bpc"]) \
        == (20, 10, 2.0, 2.6)
    assert [h["val_bpc"] for h in state["history"]] == [3.0, 2.0, 2.5, 2.6]
    # The .best file is exactly the model after 10 steps.
    ten, _ = trained(corpus, tmp_path / "ten.ckpt", "--steps", 10, "--eval-every", 0)
    assert np.array_equal(best["params"], ten["params"])
    assert not np.array_equal(best["params"], last["params"])


def test_real_validation_writes_a_loadable_best_checkpoint(corpus, tmp_path):
    _, state = trained(corpus, tmp_path / "m.ckpt", "--steps", 12, "--eval-every", 4)
    _, best_state = load(tmp_path / "m.best.ckpt")
    assert best_state["step"] == state["best_step"]
    assert best_state["best_val_bpc"] == state["best_val_bpc"] == min(
        h["val_bpc"] for h in state["history"])


@pytest.mark.parametrize("values, stop_step", [
    ([4.0] * 50, 8),  # improved at 2, then 3 evaluations without improvement
    ([4.0, 3.9, 3.9, 3.8, 3.9, 3.9, 3.9] + [1.0] * 50, 14),
    ([4.0 - 0.01 * k for k in range(50)], 30),  # always improving: runs to --steps
])
def test_patience_stops_after_k_evaluations_without_improvement(corpus, tmp_path, monkeypatch,
                                                                  values, stop_step):
    with monkeypatch.context() as patch:
        scripted_evaluate(patch, values)
        result = train(corpus, tmp_path / "m.ckpt", "--steps", 30, "--eval-every", 2,
                       "--patience", 3)
    assert result.exit_code == 0, result.stderr
    assert load(tmp_path / "m.ckpt")[1]["step"] == stop_step
    assert ("(patience)" in result.stderr) == (stop_step < 30)


def test_patience_with_a_learning_rate_too_small_to_improve(corpus, tmp_path):
    result = train(corpus, tmp_path / "m.ckpt", "--steps", 200, "--eval-every", 2,
                   "--patience", 2, "--lr", "1e-30")
    assert result.exit_code == 0, result.stderr
    state = load(tmp_path / "m.ckpt")[1]
    assert state["step"] == 6 and state["best_step"] == 2


def test_log_file_gets_one_json_object_per_evaluation(corpus, tmp_path):
    log = tmp_path / "log.jsonl"
    log.write_text('{"earlier": "run"}\n')
    trained(corpus, tmp_path / "m.ckpt", "--steps", 9, "--eval-every", 3, "--log", log)
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert records[0] == {"earlier": "run"}  # appended, not truncated
    assert [r["step"] for r in records[1:]] == [3, 6, 9]
    assert all({"step", "seconds", "train_bpc", "val_bpc", "lr"} <= set(r) for r in records[1:])


# ------------------------------------------------------------------------- divergence
def nan_forward(monkeypatch, bad_calls):
    """Make the training calls (Model.forward_backward) whose 0-based index is in
    bad_calls report a NaN loss. Returns the list that collects every training call's x
    batch."""
    original = Model.forward_backward
    count, batches = itertools.count(), []

    def forward_backward(self, x_ids, y_ids, h0, c0, masks=None):
        loss, losses, h, c = original(self, x_ids, y_ids, h0, c0, masks)
        batches.append(np.array(x_ids))
        if next(count) in bad_calls:
            loss = float("nan")
        return loss, losses, h, c

    monkeypatch.setattr(Model, "forward_backward", forward_backward)
    return batches


def test_nan_rolls_back_halves_the_learning_rate_and_continues(corpus, tmp_path, monkeypatch):
    with monkeypatch.context() as patch:
        nan_forward(patch, {7})  # the 8th step; the last save was after step 5
        result = train(corpus, tmp_path / "m.ckpt", "--steps", 12, "--save-every", 5,
                       "--eval-every", 4, "--lr", "0.002")
    assert result.exit_code == 0, result.stderr
    rollback = [line for line in result.stderr.splitlines() if "rolled back" in line]
    assert len(rollback) == 1 and "0.001" in rollback[0]
    arrays, state = load(tmp_path / "m.ckpt")
    assert state["step"] == 12 and state["lr_scale"] == 0.5
    assert np.isfinite(arrays["params"]).all()
    assert [h["lr"] for h in state["history"]][-1] == pytest.approx(0.001)


def test_rollback_restores_the_last_saved_state_exactly(tmp_path, monkeypatch):
    trainer = small_trainer(tmp_path, steps=12, save_every=5, eval_every=0)
    saved, events = {}, []

    def on_event(event):
        events.append(event)
        if event["kind"] == "save" and event["step"] == 5:
            saved.update(flat=trainer.model.flat.copy(), h=trainer.h.copy(), c=trainer.c.copy())
        if event["kind"] == "rollback":
            assert event["step"] == 5
            assert np.array_equal(trainer.model.flat, saved["flat"])
            assert np.array_equal(trainer.h, saved["h"]) and np.array_equal(trainer.c, saved["c"])

    with monkeypatch.context() as patch:
        batches = nan_forward(patch, {7})
        assert trainer.run(on_event) == "steps"
    assert [e["lr"] for e in events if e["kind"] == "rollback"] == [pytest.approx(1e-3)]
    assert trainer.state.step == 12 and trainer.current_lr() == pytest.approx(1e-3)
    # After the rollback the data stream resumes at the batch that followed step 5.
    assert len(batches) == 8 + 7
    assert np.array_equal(batches[8], batches[5])


def test_three_rollbacks_in_a_row_stop_with_the_last_good_checkpoint(corpus, tmp_path,
                                                                     monkeypatch):
    with monkeypatch.context() as patch:
        nan_forward(patch, set(range(6, 1000)))
        result = train(corpus, tmp_path / "m.ckpt", "--steps", 40, "--save-every", 5,
                       "--eval-every", 0)
    assert result.exit_code == 1
    assert result.stdout == "" and "Traceback" not in result.stderr
    assert result.stderr.count("rolled back") == 3
    assert result.stderr.strip().splitlines()[-1].startswith("Error: ")
    _, state = load(tmp_path / "m.ckpt")
    assert state["step"] == 5 and state["lr_scale"] == 1.0


def test_isolated_nans_separated_by_good_steps_are_not_in_a_row(tmp_path, monkeypatch):
    trainer = small_trainer(tmp_path, steps=40, save_every=100, eval_every=0)
    with monkeypatch.context() as patch:
        nan_forward(patch, {2, 10, 18, 26})  # each followed by several finite steps
        assert trainer.run() == "steps"
    assert trainer.state.step == 40 and trainer.state.lr_scale == 0.5 ** 4


def test_divergence_before_the_first_save_keeps_a_good_checkpoint(corpus, tmp_path,
                                                                   monkeypatch):
    out = tmp_path / "m.ckpt"
    with monkeypatch.context() as patch:
        nan_forward(patch, set(range(3, 1000)))
        result = train(corpus, out, "--steps", 40, "--save-every", 100, "--eval-every", 0)
    assert result.exit_code == 1 and str(out) in result.stderr
    _, state = load(out)  # the file the message names exists and loads
    assert state["step"] in (0, 3)  # the start of the run, or the last good step


# -------------------------------------------------------------------------- signals
@pytest.mark.slow  # a subprocess or a compile: `make test-fast` leaves it out
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_saves_a_checkpoint_that_loads_and_resumes(corpus, tmp_path, signum):
    if not CONSOLE_SCRIPT.exists():
        pytest.skip(f"{CONSOLE_SCRIPT} is not installed (run `make install`)")
    out = tmp_path / "m.ckpt"
    with open(tmp_path / "out", "wb") as stdout, open(tmp_path / "err", "wb") as stderr:
        process = subprocess.Popen(
            [str(CONSOLE_SCRIPT), "train", str(corpus), "-o", str(out), *SMALL,
             "--steps", "10000000", "--save-every", "5", "--eval-every", "0"],
            stdout=stdout, stderr=stderr)
        try:
            deadline = time.monotonic() + 120
            while not out.exists():
                assert process.poll() is None, (tmp_path / "err").read_text()
                assert time.monotonic() < deadline, "no checkpoint after 120 s"
                time.sleep(0.02)
            process.send_signal(signum)
            code = process.wait(timeout=60)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    assert code == 128 + signum
    assert (tmp_path / "out").read_bytes() == b""
    err = (tmp_path / "err").read_text()
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert str(out) in last and "--resume" in last
    assert not [name for name in os.listdir(tmp_path) if ".tmp" in name]
    _, state = load(out)
    assert state["step"] >= 5
    _, resumed = trained(corpus, out, "--resume", "--steps", state["step"] + 3)
    assert resumed["step"] == state["step"] + 3


@pytest.mark.slow  # a subprocess or a compile: `make test-fast` leaves it out
def test_sigkill_at_any_moment_leaves_a_checkpoint_that_loads_and_resumes(corpus, tmp_path):
    """kill -9 cannot be caught: only the atomic write protects the file. Kill a run
    that saves every step at several moments after its first checkpoint."""
    if not CONSOLE_SCRIPT.exists():
        pytest.skip(f"{CONSOLE_SCRIPT} is not installed (run `make install`)")
    out = tmp_path / "m.ckpt"
    delays = random.Random(7).sample([k / 100 for k in range(0, 40)], 4)
    steps_seen = []
    for delay in delays:
        args = ["--resume"] if out.exists() else []
        process = subprocess.Popen(
            [str(CONSOLE_SCRIPT), "train", str(corpus), "-o", str(out), *SMALL, *args,
             "--steps", "10000000", "--save-every", "1", "--eval-every", "0", "--quiet"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            deadline = time.monotonic() + 120
            start_mtime = out.stat().st_mtime_ns if out.exists() else None
            while not out.exists() or out.stat().st_mtime_ns == start_mtime:
                assert process.poll() is None, process.stderr.read()
                assert time.monotonic() < deadline, "no checkpoint after 120 s"
                time.sleep(0.005)
            time.sleep(delay)
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=60)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
        _, state = load(out)  # never torn, whatever the moment of the kill
        steps_seen.append(state["step"])
    assert steps_seen == sorted(steps_seen) and steps_seen[-1] > steps_seen[0]
    _, resumed = trained(corpus, out, "--resume", "--steps", steps_seen[-1] + 2)
    assert resumed["step"] == steps_seen[-1] + 2


# --------------------------------------------------------------------- carried state
def test_hidden_state_is_carried_from_batch_to_batch(tmp_path, monkeypatch):
    trainer = small_trainer(tmp_path, steps=32, layers=2, eval_every=3, save_every=0)
    per_epoch = trainer.stream.batches_per_epoch
    assert per_epoch < 32  # the run crosses one wrap of the streams
    calls, original = [], Model.forward_backward

    def recording(self, x_ids, y_ids, h0, c0, masks=None):  # training calls only
        out = original(self, x_ids, y_ids, h0, c0, masks)
        calls.append((np.array(h0), np.array(c0), out[2].copy(), out[3].copy()))
        return out

    with monkeypatch.context() as patch:
        patch.setattr(Model, "forward_backward", recording)
        trainer.run()
    assert len(calls) == 32
    for k in range(1, 32):
        h0, c0 = calls[k][:2]
        if k % per_epoch == 0:  # a new pass over the text starts from zeros
            assert not h0.any() and not c0.any()
        else:
            assert h0.any() and c0.any()
            assert np.array_equal(h0, calls[k - 1][2]) and np.array_equal(c0, calls[k - 1][3])
    assert np.array_equal(trainer.h, calls[-1][2]) and np.array_equal(trainer.c, calls[-1][3])
    assert not np.array_equal(calls[1][0], calls[2][0])
