"""Tests of charrnn.plot: reading a history from a --log file or a checkpoint, and
drawing it into PNG, SVG and PDF files."""

import json
import os
import sys

import numpy as np
import pytest

from charrnn.checkpoint import save_trained
from charrnn.model import Model, ModelConfig
from charrnn.plot import PlotError, default_output, plot_history, read_history
from charrnn.vocab import Vocab


def evaluation(step, val_bpc=2.0, train_bpc=2.5):
    return {"step": step, "seconds": step * 0.5, "train_bpc": train_bpc,
            "val_bpc": val_bpc, "lr": 0.002}


HISTORY = [evaluation(50, 3.1, 3.4), evaluation(100, None, 2.9), evaluation(150, 2.4, 2.6),
           evaluation(200, 2.5, 2.3)]


def write_log(path, records):
    path.write_text("".join(json.dumps(record) + "\n" for record in records), encoding="utf-8")
    return str(path)


def write_checkpoint(path, training):
    vocab = Vocab.from_text("abc")
    model = Model(ModelConfig("rnn", vocab.size, 2, 1))
    model.initialise(np.random.default_rng(0))
    save_trained(str(path), model, vocab, training, {})
    return str(path)


# -- reading ----------------------------------------------------------------------------

def test_log_history_in_step_order(tmp_path):
    assert read_history(write_log(tmp_path / "run.jsonl", HISTORY)) == HISTORY


def test_resumed_log_keeps_the_last_record_of_each_step(tmp_path):
    # A run logs steps 50-200, dies, and resumes from its step-100 checkpoint: the
    # resumed run's records replace the old ones from step 150 on; the old run's step
    # 200, never reached again, is not in the history either.
    resumed = [evaluation(150, 2.2, 2.4)]
    path = write_log(tmp_path / "run.jsonl", HISTORY + resumed)
    assert read_history(path) == HISTORY[:2] + resumed
    # ... and logged again past where it had died
    more = [evaluation(150, 2.2), evaluation(200, 2.1), evaluation(250, 2.0)]
    path = write_log(tmp_path / "run.jsonl", HISTORY + more)
    assert read_history(path) == HISTORY[:2] + more


def test_blank_lines_are_skipped(tmp_path):
    path = tmp_path / "run.jsonl"
    path.write_text("\n" + json.dumps(HISTORY[0]) + "\n\n", encoding="utf-8")
    assert read_history(str(path)) == HISTORY[:1]


@pytest.mark.parametrize("content, message", [
    ("", "run.jsonl has no records: give a checkpoint or a file written by charrnn train --log"),
    (json.dumps(HISTORY[0]) + "\n{not json\n", "run.jsonl line 2 is not JSON"),
    ("First Citizen:\nBefore we proceed any further, hear me speak.\n", "line 1 is not JSON"),
    ("[1, 2]\n", "run.jsonl line 1 is not a JSON object"),
    ('{"step": 50, "seconds": 1.0, "train_bpc": 3.0}\n', "line 1 has no val_bpc"),
    ('{"step": "50", "seconds": 1.0, "train_bpc": 3.0, "val_bpc": null}\n',
     "line 1 step is '50', not an integer"),
    ('{"step": 50, "seconds": 1.0, "train_bpc": NaN, "val_bpc": null}\n',
     "line 1 train_bpc is nan, not a finite number"),
])
def test_bad_logs_say_what_is_wrong(tmp_path, content, message):
    path = tmp_path / "run.jsonl"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(PlotError) as raised:
        read_history(str(path))
    assert message in str(raised.value)
    assert "\n" not in str(raised.value)


def test_binary_file_is_not_a_log(tmp_path):
    path = tmp_path / "picture.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe\x00")
    with pytest.raises(PlotError, match="picture.png is not UTF-8 text"):
        read_history(str(path))


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(PlotError, match=r"missing.jsonl: no such file$"):
        read_history(str(tmp_path / "missing.jsonl"))
    with pytest.raises(PlotError, match="is a directory: give a checkpoint or a charrnn train"):
        read_history(str(tmp_path))


def test_checkpoint_history(tmp_path):
    path = write_checkpoint(tmp_path / "model.ckpt", {"state": {"step": 200, "history": HISTORY}})
    assert read_history(path) == HISTORY


@pytest.mark.parametrize("training", [{}, {"state": {"step": 0, "history": []}}])
def test_checkpoint_without_history(tmp_path, training):
    path = write_checkpoint(tmp_path / "model.ckpt", training)
    with pytest.raises(PlotError, match="model.ckpt has no training history: it was never "
                                        "evaluated"):
        read_history(path)


def test_checkpoint_history_entry_without_a_field(tmp_path):
    history = [evaluation(50), {"step": 100, "val_bpc": 2.0}]
    path = write_checkpoint(tmp_path / "model.ckpt", {"state": {"history": history}})
    with pytest.raises(PlotError, match="model.ckpt: history entry 2 has no seconds"):
        read_history(path)


def test_broken_checkpoint_gives_the_checkpoint_error(tmp_path):
    path = write_checkpoint(tmp_path / "model.ckpt", {"state": {"history": HISTORY}})
    blob = bytearray(open(path, "rb").read())
    blob[-10] ^= 0xFF
    open(path, "wb").write(bytes(blob))
    with pytest.raises(PlotError, match="model.ckpt is truncated or corrupted"):
        read_history(path)


def test_default_output_is_beside_the_input():
    assert default_output("model.ckpt") == "model.png"
    assert default_output("run.jsonl") == "run.png"
    assert default_output(os.path.join("runs", "a.b", "model.best.ckpt")) == \
        os.path.join("runs", "a.b", "model.best.png")
    assert default_output(os.path.join("a.b", "log")) == os.path.join("a.b", "log.png")


# -- drawing ----------------------------------------------------------------------------

def test_png_svg_and_pdf_are_written(tmp_path):
    pytest.importorskip("matplotlib")
    for name, start in [("curve.png", b"\x89PNG\r\n\x1a\n"), ("curve.PDF", b"%PDF-")]:
        plot_history(HISTORY, str(tmp_path / name), title="a run")
        assert (tmp_path / name).read_bytes().startswith(start)
    plot_history(HISTORY, str(tmp_path / "curve.svg"), x="time", title="a run")
    svg = (tmp_path / "curve.svg").read_text(encoding="utf-8")
    assert "<svg" in svg
    assert "a run" in svg and "training time (s)" in svg  # 100 s: not minutes
    assert "best validation 2.400 (step 150)" in svg
    assert sorted(os.listdir(tmp_path)) == ["curve.PDF", "curve.png", "curve.svg"]


def test_png_is_800_by_450(tmp_path):
    pytest.importorskip("matplotlib")
    plot_history(HISTORY, str(tmp_path / "curve.png"))
    header = (tmp_path / "curve.png").read_bytes()[16:24]  # IHDR width, height
    assert (int.from_bytes(header[:4], "big"), int.from_bytes(header[4:], "big")) == (800, 450)


def test_axes_of_a_long_run(tmp_path):
    pytest.importorskip("matplotlib")
    long_run = [{**record, "seconds": record["step"] * 10.0} for record in HISTORY]
    plot_history(long_run, str(tmp_path / "time.svg"), x="time")
    assert "training time (minutes)" in (tmp_path / "time.svg").read_text(encoding="utf-8")
    plot_history(long_run, str(tmp_path / "step.svg"))
    svg = (tmp_path / "step.svg").read_text(encoding="utf-8")
    assert "<!-- step -->" in svg and "training time" not in svg


def test_history_without_validation_is_drawn(tmp_path):
    pytest.importorskip("matplotlib")
    unvalidated = [{**record, "val_bpc": None} for record in HISTORY]
    plot_history(unvalidated, str(tmp_path / "curve.svg"))
    svg = (tmp_path / "curve.svg").read_text(encoding="utf-8")
    assert "training" in svg and "best validation" not in svg


@pytest.mark.parametrize("extension", [".png", ".svg", ".pdf"])
def test_same_history_same_bytes(tmp_path, extension):
    matplotlib = pytest.importorskip("matplotlib")
    plot_history(HISTORY, str(tmp_path / f"a{extension}"))
    plot_history(HISTORY, str(tmp_path / f"b{extension}"))
    assert (tmp_path / f"a{extension}").read_bytes() == (tmp_path / f"b{extension}").read_bytes()
    assert matplotlib.rcParams["svg.hashsalt"] is None  # a setting of the caller's


def test_unknown_extension_leaves_no_file(tmp_path):
    with pytest.raises(PlotError, match=r"curve.jpeg: name it with one of .png, .svg, .pdf"):
        plot_history(HISTORY, str(tmp_path / "curve.jpeg"))
    with pytest.raises(PlotError, match="name it with one of"):
        plot_history(HISTORY, str(tmp_path / "curve"))
    assert os.listdir(tmp_path) == []


def test_failed_write_keeps_the_old_file(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    path = tmp_path / "curve.png"
    path.write_bytes(b"old picture")

    def crash(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(PlotError, match="cannot write .*curve.png: No space left on device"):
        plot_history(HISTORY, str(path))
    assert os.listdir(tmp_path) == ["curve.png"] and path.read_bytes() == b"old picture"


def test_missing_directory(tmp_path):
    pytest.importorskip("matplotlib")
    with pytest.raises(PlotError, match="cannot write .*curve.png: No such file or directory"):
        plot_history(HISTORY, str(tmp_path / "absent" / "curve.png"))


def test_missing_matplotlib_gives_the_install_hint(tmp_path, monkeypatch):
    for name in [name for name in sys.modules if name.startswith("matplotlib")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib fails
    with pytest.raises(PlotError) as raised:
        plot_history(HISTORY, str(tmp_path / "curve.png"))
    assert str(raised.value) == "plotting needs matplotlib: pip install 'charrnn[plot]'"
    assert os.listdir(tmp_path) == []


def test_bad_arguments(tmp_path):
    with pytest.raises(PlotError, match="plot against step or time"):
        plot_history(HISTORY, str(tmp_path / "curve.png"), x="chars")
    with pytest.raises(PlotError, match="no history to plot"):
        plot_history([], str(tmp_path / "curve.png"))


def test_plotting_leaves_pyplot_alone(tmp_path):
    pytest.importorskip("matplotlib")
    imported = "matplotlib.pyplot" in sys.modules  # by another test or plugin
    plot_history(HISTORY, str(tmp_path / "curve.png"))
    assert imported or "matplotlib.pyplot" not in sys.modules
