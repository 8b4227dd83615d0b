"""Checkpoints whose CRC is right but whose header is not what charrnn writes: every
command refuses them in one line (exit 1) and leaves the file as it was; one written by
a newer charrnn of the same format is refused for resuming, not half-understood. Also
the output checks made before training starts, and which file a failed save names.
"""

import errno
import os
import re
import struct
import zlib

import pytest
from clitools import TINY, assert_fails, english_text, run, tiny_model
from test_checkpoint import reencode

from charrnn import checkpoint as ckpt
from charrnn.checkpoint import CheckpointError, load_trained
from charrnn.training_run import RunError, refuse_to_overwrite


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return tiny_model(tmp_path_factory.mktemp("input"), english_text(), "m")


def setting(*path_and_value):
    """An edit of a header dict that sets header[p0][p1]... = value."""
    *path, value = path_and_value

    def edit(header):
        target = header
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
    return edit


def removing(*path):
    def edit(header):
        target = header
        for key in path[:-1]:
            target = target[key]
        del target[path[-1]]
    return edit


def counts_of(value):
    def edit(header):
        header["vocab"]["counts"] = [value] * len(header["vocab"]["counts"])
    return edit


def with_header_bytes(blob, header_bytes):
    """blob with its header replaced by header_bytes, CRC recomputed."""
    _, version, header_len = ckpt._PREFIX.unpack_from(blob)
    start = ckpt._PREFIX.size + header_len
    head = ckpt._PREFIX.pack(ckpt.MAGIC, version, len(header_bytes)) + header_bytes
    body = head + b"\0" * (-len(head) % 64) + blob[start + (-start % 64):-4]
    return body + struct.pack("<I", zlib.crc32(body))


def edited_copy(trained, folder, edit):
    """A copy of the trained checkpoint in folder with its header edited (or, given
    bytes, replaced), the CRC made right again."""
    blob = trained.ckpt.read_bytes()
    path = folder / "edited.ckpt"
    path.write_bytes(with_header_bytes(blob, edit) if isinstance(edit, bytes)
                     else reencode(blob, edit_header=edit))
    return path


DEEP = b"[" * 100_000 + b"]" * 100_000

# Every command loads the whole checkpoint: each of these is refused by all of them.
MALFORMED = {
    "offset infinite": setting("arrays", "params", "offset", float("inf")),
    "offset before the data": setting("arrays", "params", "offset", -64),
    "offset unaligned": setting("arrays", "params", "offset", 4),
    "offset a string": setting("arrays", "params", "offset", "0"),
    "shape huge": setting("arrays", "params", "shape", [10**30]),
    "shape negative": setting("arrays", "params", "shape", [-1]),
    "shape a string": setting("arrays", "params", "shape", "x"),
    "shape too many dimensions": setting("arrays", "params", "shape", [1] * 100),
    "dtype unhashable": setting("arrays", "params", "dtype", ["float32"]),
    "params integers": setting("arrays", "params", "dtype", "int32"),
    "no params": removing("arrays", "params"),
    "arrays a list": setting("arrays", []),
    "array entry a number": setting("arrays", "params", 5),
    "header nested deep": DEEP,
    "header a list": b"[1]",
    "model a list": setting("model", []),
    "model hidden a string": setting("model", "hidden", "x"),
    "model hidden huge": setting("model", "hidden", 10**30),
    "model layers huge": setting("model", "layers", 10**12),  # counting them would hang
    "model without cell": removing("model", "cell"),
    "vocab a list": setting("vocab", []),
    "vocab chars a list": setting("vocab", "chars", ["a"]),
    "counts infinite": counts_of(float("inf")),
    "counts zero": counts_of(0),
    "counts negative": counts_of(-1),
    "counts fractional": counts_of(0.5),
    "counts beyond 64 bits": counts_of(10**400),
    "training a list": setting("training", [1]),
    "options a list": setting("training", "options", [1]),
    "state a list": setting("training", "state", [1]),
    "state null": setting("training", "state", None),
    "history of numbers": setting("training", "state", "history", [1]),
    "history a dict": setting("training", "state", "history", {"step": 1}),
    "history entry without step": setting("training", "state", "history", [{"val_bpc": 1.5}]),
    "history val_bpc a string": setting("training", "state", "history",
                                        [{"step": 1, "val_bpc": "x"}]),
    "step a string": setting("training", "state", "step", "x"),
    "step true": setting("training", "state", "step", True),
    "best_val_bpc a string": setting("training", "state", "best_val_bpc", "x"),
    "last_val_bpc infinite": setting("training", "state", "last_val_bpc", float("inf")),
    "best_val_bpc beyond a float": setting("training", "state", "best_val_bpc", 10**400),
    "history val_bpc beyond a float": setting("training", "state", "history",
                                              [{"step": 1, "val_bpc": 10**400}]),
    "train_seconds a string": setting("training", "state", "train_seconds", "x"),
    "train_seconds infinite": setting("training", "state", "train_seconds", float("inf")),
    "chars_seen a float": setting("training", "state", "chars_seen", 1.5),
}


@pytest.mark.parametrize("command", ["info", "sample", "score"])
@pytest.mark.parametrize("case", MALFORMED)
def test_malformed_header_is_refused_in_one_line(trained, tmp_path, case, command):
    path = edited_copy(trained, tmp_path, MALFORMED[case])
    before = path.read_bytes()
    message = assert_fails(run(command, path, "--threads", "1", input="The dog.")
                           if command != "info" else run(command, path))
    assert "edited.ckpt" in message
    assert path.read_bytes() == before


def test_a_long_value_gives_a_short_message(trained, tmp_path):
    path = edited_copy(trained, tmp_path, setting("model", "cell", "x" * 10_000))
    with pytest.raises(CheckpointError, match="is inconsistent") as error:
        load_trained(str(path))
    assert len(str(error.value)) < 400


def test_malformed_headers_raise_checkpoint_errors(trained, tmp_path):
    """The library raises CheckpointError for each, which the CLI and training_run.py show."""
    for edit in MALFORMED.values():
        with pytest.raises(CheckpointError):
            load_trained(str(edited_copy(trained, tmp_path, edit)))


def test_deep_header_nesting_names_the_cause(trained, tmp_path):
    with pytest.raises(CheckpointError, match="malformed header: nested too deeply"):
        load_trained(str(edited_copy(trained, tmp_path, DEEP)))


@pytest.mark.parametrize("edit, says", [
    (setting("arrays", "params", "offset", -64), "offset -64, not a non-negative multiple"),
    (setting("arrays", "params", "shape", [10**30]), "runs past the end"),
    (counts_of(0), "vocabulary counts"),
    (setting("training", "state", "step", "x"), "training state step is 'x', not an integer"),
])
def test_messages_say_what_is_wrong(trained, tmp_path, edit, says):
    with pytest.raises(CheckpointError, match=says):
        load_trained(str(edited_copy(trained, tmp_path, edit)))


def test_unknown_fields_outside_the_training_record_still_load(trained, tmp_path):
    """sample, score and info need nothing a newer charrnn might add to the training
    record, so they ignore what they do not know there (not in the model: below)."""
    def newer(header):
        header["training"]["options"]["new_option"] = 1
        header["training"]["state"]["new_counter"] = 2
        header["vocab"]["new_field"] = 3
    path = edited_copy(trained, tmp_path, newer)
    result = run("info", path)
    assert result.exit_code == 0 and "16 hidden" in result.stdout
    assert run("sample", path, "-n", "5", "--seed", "1", "--threads", "1").exit_code == 0


@pytest.mark.parametrize("command", ["info", "sample", "score"])
def test_a_model_setting_from_a_newer_charrnn_is_refused(trained, tmp_path, command):
    # It may change the network (a norm, a new cell option): computing without it would
    # give another model's text and scores.
    path = edited_copy(trained, tmp_path, setting("model", "layer_norm", True))
    message = assert_fails(run(command, path, "--threads", "1", input="The dog.")
                           if command != "info" else run(command, path))
    assert re.search(r"settings that charrnn .* does not know \('layer_norm'\)", message)


# ----------------------------------------------------------------------------- resume
def resume(trained, path, *extra):
    return run("train", trained.corpus, "-o", path, "--resume", "--steps", "32",
               "--threads", "1", *extra)


def rng_of(bit_generator):
    def edit(header):
        header["training"]["state"]["rng_state"]["bit_generator"] = bit_generator
    return edit


def shape_of(name, shape):
    def edit(header):
        header["arrays"][name]["shape"] = shape
    return edit


# Loaded fine for sample and info, but not a run that can continue exactly.
NOT_RESUMABLE = {
    "option from a newer charrnn": (setting("training", "options", "new_option", 1),
                                    r"options that charrnn .* does not know \('new_option'\)"),
    "state from a newer charrnn": (setting("training", "state", "new_counter", 0),
                                   r"state that charrnn .* does not know \('new_counter'\)"),
    "no state": (removing("training", "state"), "holds no training state"),
    "no options": (removing("training", "options"), "holds no training options"),
    "no adam_m": (removing("arrays", "adam_m"), "array adam_m is missing"),
    "no state_c": (removing("arrays", "state_c"), "array state_c is missing"),
    "adam_m too short": (shape_of("adam_m", [10]), "array adam_m is float32 \\[10\\]"),
    "adam_m of bytes": (setting("arrays", "adam_m", "dtype", "uint8"), "array adam_m is uint8"),
    "state_h too few streams": (shape_of("state_h", [1, 1, 16]), "array state_h"),
    "seq_len 0": (setting("training", "options", "seq_len", 0), "seq_len is 0, less than 1"),
    "lr beyond a float": (setting("training", "options", "lr", 10**400), "lr is"),
    "batch_size 0": (setting("training", "options", "batch_size", 0), "batch_size is 0"),
    "lr a string": (setting("training", "options", "lr", "x"), "lr is 'x', not a finite"),
    "lr 0": (setting("training", "options", "lr", 0), "lr is 0, not positive"),
    "lr infinite": (setting("training", "options", "lr", float("inf")), "lr is inf"),
    "seed negative": (setting("training", "options", "seed", -1), "seed is -1"),
    "schedule unknown": (setting("training", "options", "lr_schedule", "linear"),
                         "lr_schedule is 'linear'"),
    "val_fraction 1": (setting("training", "options", "val_fraction", 1.0), "val_fraction"),
    "steps a string": (setting("training", "options", "steps", "x"), "steps is 'x'"),
    "step negative": (setting("training", "state", "step", -5), "step is -5"),
    "cursor negative": (setting("training", "state", "cursor", -10), "cursor is -10"),
    "lr_scale 0": (setting("training", "state", "lr_scale", 0.0), "lr_scale is 0.0"),
    "rng_state a list": (setting("training", "state", "rng_state", [1]), "rng_state"),
    "rng_state of another generator": (rng_of("MT19937"), "not a PCG64 state"),
    "rng_state without state": (removing("training", "state", "rng_state", "state"),
                                "not a PCG64 state"),
}


@pytest.mark.parametrize("case", NOT_RESUMABLE)
def test_resume_refuses_a_record_it_cannot_continue_exactly(trained, tmp_path, case):
    edit, says = NOT_RESUMABLE[case]
    path = edited_copy(trained, tmp_path, edit)
    before = path.read_bytes()
    message = assert_fails(resume(trained, path))
    assert "edited.ckpt" in message
    assert re.search(says, message), message
    assert path.read_bytes() == before
    assert not (tmp_path / "edited.best.ckpt").exists()


@pytest.mark.parametrize("case", ["offset before the data", "options a list", "counts zero"])
def test_resume_refuses_a_malformed_header_too(trained, tmp_path, case):
    path = edited_copy(trained, tmp_path, MALFORMED[case])
    before = path.read_bytes()
    assert_fails(resume(trained, path))
    assert path.read_bytes() == before


def test_a_record_of_an_older_charrnn_still_resumes(trained, tmp_path):
    """Fields a record lacks take their defaults, and a whole number where a float is
    stored is a number: checkpoints that loaded before still resume."""
    def older(header):
        del header["training"]["options"]["patience"]
        del header["training"]["state"]["evals_since_best"]
        header["training"]["options"]["clip"] = 5
    path = edited_copy(trained, tmp_path, older)
    result = resume(trained, path)
    assert result.exit_code == 0, result.stderr
    assert load_trained(str(path))[2]["state"]["step"] == 32


# ----------------------------------------------------------------------------- output
def test_output_in_a_missing_directory_fails_before_training(trained, tmp_path):
    out = tmp_path / "nodir" / "x.ckpt"
    message = assert_fails(run("train", trained.corpus, "-o", out, *TINY))
    assert "no such directory" in message and str(tmp_path / "nodir") in message
    assert not (tmp_path / "nodir").exists()


def test_output_in_a_directory_it_cannot_write_to_fails_before_training(tmp_path,
                                                                         monkeypatch):
    # os.access rather than chmod: root may write into any directory.
    folder = str(tmp_path / "locked")
    os.mkdir(folder)
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode, **kwargs:
                        False if path == folder else real_access(path, mode, **kwargs))
    with pytest.raises(RunError, match="cannot create files in .*locked") as raised:
        refuse_to_overwrite(os.path.join(folder, "x.ckpt"), False, False)
    assert raised.value.exit_code == 1


class FullDisk:
    """A file opened for writing on a full disk: every write fails as the OS's would,
    with no file name attached."""

    def __init__(self, handle):
        self.handle = handle

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.close()

    def write(self, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_a_failed_save_of_the_best_checkpoint_names_it(trained, tmp_path, monkeypatch):
    def open_on_a_disk_full_for_best(file, mode="r", *args, **kwargs):
        handle = open(file, mode, *args, **kwargs)
        return FullDisk(handle) if ".best." in os.path.basename(file) else handle

    monkeypatch.setattr(ckpt, "open", open_on_a_disk_full_for_best, raising=False)
    out = tmp_path / "m.ckpt"
    message = assert_fails(run("train", trained.corpus, "-o", out, *TINY, "--steps", "2",
                               "--eval-every", "1", "--quiet"))
    assert f"cannot write {tmp_path / 'm.best.ckpt'}: No space left on device" in message
    assert not [name for name in os.listdir(tmp_path) if ".tmp" in name]


def test_a_failed_save_names_the_checkpoint_not_its_temporary(tmp_path, monkeypatch):
    def failing_replace(source, target):
        raise OSError(errno.EACCES, os.strerror(errno.EACCES), source, target)

    monkeypatch.setattr(ckpt.os, "replace", failing_replace)
    path = tmp_path / "x.ckpt"
    with pytest.raises(OSError) as raised:
        ckpt.save_checkpoint(str(path), {}, {})
    assert (raised.value.filename, raised.value.filename2) == (str(path), None)
    assert os.listdir(tmp_path) == []
