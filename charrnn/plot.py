"""Training curves: training and validation bits/char against steps or time, read from a
checkpoint's history or a `charrnn train --log` file and drawn into a PNG, SVG or PDF.

matplotlib is an optional extra (pip install 'charrnn[plot]'), imported only to draw.
The figure is a matplotlib.figure.Figure rendered by its own canvas, never pyplot, so a
host program's backend and figures are left as they were.
"""

from __future__ import annotations

import io
import json
import os

from .checkpoint import CheckpointError, check_record, is_checkpoint_file, load_trained

FORMATS = (".png", ".svg", ".pdf")
# What a plot reads from each evaluation (train.Trainer.evaluate_and_record writes more).
RECORD_TYPES = {"step": int, "seconds": float, "train_bpc": float, "val_bpc": float | None}
MINUTES_AFTER = 120.0  # seconds; a longer run's time axis is in minutes
SIZE_INCHES, DPI = (8.0, 4.5), 100  # 800 x 450 px, the README's picture


class PlotError(Exception):
    """A history that cannot be read or a plot that cannot be written; the message (one
    line) says how to fix it."""


def read_history(path: str) -> list[dict]:
    """The evaluations recorded in a checkpoint or a --log file, one per step, in step
    order. A resumed run appends to its log from the step it went back to: a record
    replaces those at its step and after, as the checkpoint's own history is cut back."""
    if os.path.isdir(path):
        raise PlotError(f"{path} is a directory: give a checkpoint or a charrnn train --log file")
    if not os.path.exists(path):
        raise PlotError(f"{path}: no such file")
    if is_checkpoint_file(path):
        try:
            _, _, training, _ = load_trained(path)
        except CheckpointError as error:
            raise PlotError(str(error)) from None
        records = [(f"{path}: history entry {n}", record) for n, record
                   in enumerate(training.get("state", {}).get("history", []), 1)]
        if not records:
            raise PlotError(f"{path} has no training history: it was never evaluated "
                            "(train it with charrnn train)")
    else:
        records = list(_log_records(path))
        if not records:
            raise PlotError(f"{path} has no records: give a checkpoint or a file written "
                            "by charrnn train --log")
    history = []
    for where, record in records:
        try:
            check_record(record, RECORD_TYPES, where, required=list(RECORD_TYPES))
        except ValueError as error:
            raise PlotError(f"{error}: give a checkpoint or a file written by "
                            "charrnn train --log") from None
        while history and history[-1]["step"] >= record["step"]:
            history.pop()  # superseded by a resumed run
        history.append(record)
    return history


def _log_records(path: str):
    """(where, record) for each non-blank line of a JSON-lines file."""
    try:
        with open(path, encoding="utf-8") as handle:
            for number, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                try:
                    yield f"{path} line {number}", json.loads(line)
                except ValueError:
                    raise PlotError(f"{path} line {number} is not JSON: give a checkpoint "
                                    "or a file written by charrnn train --log") from None
    except UnicodeDecodeError:
        raise PlotError(f"{path} is not UTF-8 text: give a checkpoint or a file written "
                        "by charrnn train --log") from None
    except OSError as error:
        raise PlotError(f"{path}: cannot read: {error.strerror}") from None


def default_output(path: str) -> str:
    """Where a plot of path goes unless told: beside it, named after it (model.ckpt ->
    model.png)."""
    return os.path.splitext(path)[0] + ".png"


def plot_history(history: list[dict], output: str, x: str = "step",
                 title: str | None = None) -> None:
    """Draw training and validation bits/char against x ("step" or "time") into output,
    whose extension names the format; the best validation point is marked. The file is
    replaced atomically: a failure leaves the old one or none, never half an image."""
    extension = os.path.splitext(output)[1].lower()
    if extension not in FORMATS:
        raise PlotError(f"cannot tell the format of {output}: name it with one of "
                        + ", ".join(FORMATS))
    if x not in ("step", "time"):
        raise PlotError(f"x is {x!r}: plot against step or time")
    if not history:
        raise PlotError("no history to plot: train with charrnn train first")
    try:
        from matplotlib import rc_context
        from matplotlib.figure import Figure
    except ImportError:
        raise PlotError("plotting needs matplotlib: pip install 'charrnn[plot]'") from None

    if x == "step":
        xlabel, xs = "step", [record["step"] for record in history]
    else:
        minutes = max(record["seconds"] for record in history) > MINUTES_AFTER
        scale, xlabel = (60.0, "training time (minutes)") if minutes else (1.0, "training time (s)")
        xs = [record["seconds"] / scale for record in history]
    validated = [(x_value, record) for x_value, record in zip(xs, history)
                 if record["val_bpc"] is not None]

    figure = Figure(figsize=SIZE_INCHES, dpi=DPI, layout="constrained")
    axes = figure.add_subplot()

    def marker(points):  # dots while they can be told apart
        return "o" if len(points) <= 40 else None

    axes.plot(xs, [record["train_bpc"] for record in history], color="tab:blue",
              linewidth=1.5, marker=marker(xs), markersize=3, label="training")
    if validated:
        axes.plot([x_value for x_value, _ in validated],
                  [record["val_bpc"] for _, record in validated], color="tab:orange",
                  linewidth=1.5, marker=marker(validated), markersize=3, label="validation")
        best_x, best = min(validated, key=lambda pair: pair[1]["val_bpc"])
        axes.plot([best_x], [best["val_bpc"]], linestyle="none", marker="*", markersize=13,
                  color="tab:red", zorder=3,
                  label=f"best validation {best['val_bpc']:.3f} (step {best['step']:,})")
    axes.set_xlabel(xlabel)
    axes.set_ylabel("bits per character")
    axes.grid(alpha=0.3)
    axes.legend(frameon=False)
    for side in ("top", "right"):
        axes.spines[side].set_visible(False)
    if title:
        axes.set_title(title, fontsize=10)

    image = io.BytesIO()
    # The same history gives the same bytes, so a redrawn picture in git changes only
    # when the run does: no creation date, and SVG ids salted by a constant, not a
    # random one (restored when saved).
    metadata = {".svg": {"Date": None}, ".pdf": {"CreationDate": None}}.get(extension)
    with rc_context({"svg.hashsalt": "charrnn"}):
        figure.savefig(image, format=extension[1:], metadata=metadata)
    _write_atomically(output, image.getvalue())


def _write_atomically(path: str, data: bytes) -> None:
    """Write a temporary file beside path and rename it over path (as
    checkpoint.save_checkpoint does, without its fsyncs: a plot can be drawn again)."""
    temporary = f"{path}.tmp{os.getpid()}"
    try:
        with open(temporary, "wb") as handle:
            handle.write(data)
        os.replace(temporary, path)
    except BaseException as error:
        if os.path.exists(temporary):
            os.unlink(temporary)
        if isinstance(error, OSError):
            raise PlotError(f"cannot write {path}: {error.strerror}") from None
        raise
