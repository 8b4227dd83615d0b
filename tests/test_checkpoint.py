"""Tests of charrnn.checkpoint: round trips, atomic writes, and every kind of file that
must be refused without running code (truncated, corrupted, newer, pickle, NumPy, text).
"""

import builtins
import json
import os
import pickle
import struct
import zlib

import numpy as np
import pytest

from charrnn import checkpoint as ckpt
from charrnn.checkpoint import (
    CHECKPOINT_FORMAT_VERSION,
    CheckpointError,
    decode_checkpoint,
    encode_checkpoint,
    is_checkpoint_file,
    load_checkpoint,
    load_trained,
    save_checkpoint,
    save_trained,
)
from charrnn.model import Model, ModelConfig
from charrnn.vocab import Vocab

HEADER = {"format": "test", "note": "中文 and 🎉", "nested": {"a": [1, 2.5, None, True]}}


def sample_arrays():
    rng = np.random.default_rng(0)
    return {
        "weights": rng.standard_normal((3, 5)).astype(np.float32),
        "steps": np.array([0, -1, 2**40, -(2**62)], dtype=np.int64),
        "ids": np.array([[0, 65535], [7, 300]], dtype=np.uint16),
        "float64": np.array([2.5, -0.0, np.inf]),
        "empty": np.zeros((0, 4), dtype=np.float32),
        "strided": np.arange(20, dtype=np.int32).reshape(4, 5)[:, ::2],  # not contiguous
    }


def assert_same_arrays(loaded, arrays):
    assert list(loaded) == list(arrays)
    for name, array in arrays.items():
        assert loaded[name].dtype == array.dtype, name
        assert loaded[name].shape == array.shape, name
        assert np.array_equal(loaded[name], array), name
        assert loaded[name].flags.writeable, name


def test_round_trip(tmp_path):
    path = tmp_path / "model.ckpt"
    arrays = sample_arrays()
    save_checkpoint(str(path), HEADER, arrays)
    header, loaded = load_checkpoint(str(path))
    assert header == HEADER
    assert_same_arrays(loaded, arrays)
    assert is_checkpoint_file(str(path))


def test_zero_dimensional_array_keeps_its_shape():
    _, loaded = decode_checkpoint(encode_checkpoint({}, {"lr": np.array(2.5)}))
    assert loaded["lr"].shape == ()


def test_big_endian_arrays_are_stored_little_endian():
    arrays = {"w": np.arange(6, dtype=">f4").reshape(2, 3)}
    header, loaded = decode_checkpoint(encode_checkpoint({}, arrays))
    assert np.array_equal(loaded["w"], arrays["w"]) and loaded["w"].dtype.isnative


def test_layout_is_aligned_and_ends_with_a_crc():
    blob = encode_checkpoint(HEADER, sample_arrays())
    assert blob[:8] == ckpt.MAGIC
    magic, version, header_len = ckpt._PREFIX.unpack_from(blob)
    assert version == CHECKPOINT_FORMAT_VERSION
    header = json.loads(blob[ckpt._PREFIX.size:ckpt._PREFIX.size + header_len])
    assert all(entry["offset"] % 64 == 0 for entry in header["arrays"].values())
    assert (len(blob) - 4) % 64 == 0
    assert struct.unpack("<I", blob[-4:])[0] == zlib.crc32(blob[:-4])


def test_object_arrays_are_refused_when_saving(tmp_path):
    with pytest.raises(TypeError, match="unsupported dtype"):
        save_checkpoint(str(tmp_path / "x.ckpt"), {}, {"o": np.array([{}], dtype=object)})
    assert os.listdir(tmp_path) == []


def test_atomic_write_leaves_no_temporary_file(tmp_path):
    path = tmp_path / "model.ckpt"
    save_checkpoint(str(path), {"n": 1}, {"a": np.zeros(3, np.float32)})
    save_checkpoint(str(path), {"n": 2}, {"a": np.ones(3, np.float32)})  # overwrite
    assert os.listdir(tmp_path) == ["model.ckpt"]
    assert load_checkpoint(str(path))[0] == {"n": 2}


def test_failed_write_keeps_the_old_file_and_removes_the_temporary(tmp_path, monkeypatch):
    path = tmp_path / "model.ckpt"
    save_checkpoint(str(path), {"n": 1}, {"a": np.zeros(3, np.float32)})
    before = path.read_bytes()

    def crash(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ckpt.os, "fsync", crash)
    with pytest.raises(OSError, match="No space"):
        save_checkpoint(str(path), {"n": 2}, {"a": np.ones(3, np.float32)})
    assert os.listdir(tmp_path) == ["model.ckpt"]
    assert path.read_bytes() == before


def test_temporary_files_of_killed_writers_are_removed_by_the_next_save(tmp_path):
    import subprocess
    import sys
    import time
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True, check=True)
    dead = int(finished.stdout)  # a writer killed with -9 leaves PATH.tmpPID behind
    old = time.time() - ckpt.STALE_TEMPORARY_SECONDS - 60
    path = tmp_path / "model.ckpt"
    names = {"dead_old": f"model.ckpt.tmp{dead}",
             "alive_old": f"model.ckpt.tmp{os.getppid()}",  # its writer still runs
             "other_checkpoint": f"other.ckpt.tmp{dead}"}
    for name in names.values():
        (tmp_path / name).write_bytes(b"partial")
        os.utime(tmp_path / name, (old, old))
    recent = tmp_path / f"model.ckpt.tmp{dead + 1 if dead + 1 != os.getpid() else dead + 2}"
    recent.write_bytes(b"partial")  # may be a live writer on another machine
    save_checkpoint(str(path), {"n": 1}, {"a": np.zeros(3, np.float32)})
    left = set(os.listdir(tmp_path))
    assert names["dead_old"] not in left
    assert {names["alive_old"], names["other_checkpoint"], recent.name, "model.ckpt"} <= left


def test_truncated_file(tmp_path):
    path = tmp_path / "model.ckpt"
    save_checkpoint(str(path), HEADER, sample_arrays())
    blob = path.read_bytes()
    for keep in (len(blob) - 1, len(blob) - 4, len(blob) - 100, 40, 21):
        path.write_bytes(blob[:keep])
        # (the message also holds the path, whose directory is named after this test)
        with pytest.raises(CheckpointError, match="is truncated or corrupted"):
            load_checkpoint(str(path))
    path.write_bytes(blob[:5])  # not even the magic
    with pytest.raises(CheckpointError, match="is not a charrnn checkpoint"):
        load_checkpoint(str(path))


def test_file_truncated_inside_the_prefix(tmp_path):
    path = tmp_path / "model.ckpt"
    path.write_bytes(encode_checkpoint(HEADER, sample_arrays())[:12])
    with pytest.raises(CheckpointError, match="is truncated"):
        load_checkpoint(str(path))


def test_every_flipped_byte_is_detected():
    blob = encode_checkpoint({"format": "test"}, {"a": np.arange(5, dtype=np.float32)})
    for position in range(len(blob)):
        corrupted = bytearray(blob)
        corrupted[position] ^= 0x10
        with pytest.raises(CheckpointError):
            decode_checkpoint(bytes(corrupted))


def test_flipped_data_byte_mentions_corruption(tmp_path):
    path = tmp_path / "model.ckpt"
    save_checkpoint(str(path), HEADER, sample_arrays())
    blob = bytearray(path.read_bytes())
    blob[len(blob) - 20] ^= 0x01
    path.write_bytes(bytes(blob))
    with pytest.raises(CheckpointError, match="is truncated or corrupted"):
        load_checkpoint(str(path))


def reencode(blob, version=None, edit_header=None, data=None):
    """Rebuild a checkpoint with a different version, header or data section and a
    correct CRC, so only the intended difference remains."""
    _, old_version, header_len = ckpt._PREFIX.unpack_from(blob)
    start = ckpt._PREFIX.size + header_len
    header = json.loads(blob[ckpt._PREFIX.size:start])
    if edit_header:
        edit_header(header)
    header_bytes = json.dumps(header).encode()
    old_data = blob[start + (-start % 64):-4]
    head = ckpt._PREFIX.pack(ckpt.MAGIC, old_version if version is None else version,
                             len(header_bytes)) + header_bytes
    body = head + b"\0" * (-len(head) % 64) + (old_data if data is None else data)
    return body + struct.pack("<I", zlib.crc32(body))


def test_reencode_helper_is_faithful():
    blob = encode_checkpoint(HEADER, sample_arrays())
    assert decode_checkpoint(reencode(blob))[0] == HEADER


def test_newer_format_version_asks_for_an_upgrade(tmp_path):
    blob = encode_checkpoint(HEADER, sample_arrays())
    path = tmp_path / "future.ckpt"
    path.write_bytes(reencode(blob, version=CHECKPOINT_FORMAT_VERSION + 1))
    with pytest.raises(CheckpointError, match="upgrade charrnn"):
        load_checkpoint(str(path))


def test_forbidden_dtype_in_header():
    blob = encode_checkpoint({}, {"a": np.zeros(4, np.float32)})

    def make_object(header):
        header["arrays"]["a"]["dtype"] = "object"

    with pytest.raises(CheckpointError, match="forbidden dtype object"):
        decode_checkpoint(reencode(blob, edit_header=make_object))


def test_array_running_past_the_end():
    blob = encode_checkpoint({}, {"a": np.zeros(4, np.float32)})

    def grow(header):
        header["arrays"]["a"]["shape"] = [1000]

    with pytest.raises(CheckpointError, match="runs past the end"):
        decode_checkpoint(reencode(blob, edit_header=grow))


def test_malformed_header():
    blob = encode_checkpoint({}, {"a": np.zeros(4, np.float32)})

    def drop_arrays(header):
        del header["arrays"]

    with pytest.raises(CheckpointError, match="malformed header"):
        decode_checkpoint(reencode(blob, edit_header=drop_arrays))


class CreatesMarker:
    """Unpickling this calls builtins.open(marker, "w"), which creates the marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (builtins.open, (self.marker, "w"))


@pytest.mark.parametrize("protocol", [0, 2, pickle.HIGHEST_PROTOCOL])
def test_pickle_file_is_refused_without_running_it(tmp_path, protocol):
    # The payload is live: unpickling it really does create a file.
    probe = tmp_path / "probe"
    pickle.loads(pickle.dumps(CreatesMarker(probe), protocol=protocol)).close()
    assert probe.exists()

    marker = tmp_path / "marker"
    path = tmp_path / "model.ckpt"
    path.write_bytes(pickle.dumps(CreatesMarker(marker), protocol=protocol))
    with pytest.raises(CheckpointError):
        load_checkpoint(str(path))
    with pytest.raises(CheckpointError):
        load_trained(str(path))
    assert not marker.exists()


def test_npy_with_pickled_objects_is_refused(tmp_path):
    marker = tmp_path / "marker"
    path = tmp_path / "model.npy"
    np.save(path, np.array([CreatesMarker(marker)], dtype=object), allow_pickle=True)
    with pytest.raises(CheckpointError, match="pickle or NumPy"):
        load_checkpoint(str(path))
    assert not marker.exists()


def test_npz_with_pickled_objects_is_refused(tmp_path):
    marker = tmp_path / "marker"
    path = tmp_path / "model.npz"
    np.savez(path, params=np.zeros(3), evil=np.array([CreatesMarker(marker)], dtype=object))
    with pytest.raises(CheckpointError, match="pickle or NumPy"):
        load_checkpoint(str(path))
    with pytest.raises(CheckpointError):
        load_trained(str(path))
    assert not marker.exists()


@pytest.mark.parametrize("content", [b"hello, this is just some text\n" * 3, b"x",
                                     "中文 text 🎉".encode()])
def test_text_file_is_not_a_checkpoint(tmp_path, content):
    path = tmp_path / "notes.txt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match="not a charrnn checkpoint"):
        load_checkpoint(str(path))
    assert not is_checkpoint_file(str(path))


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(CheckpointError, match="no such file"):
        load_checkpoint(str(tmp_path / "missing.ckpt"))
    with pytest.raises(CheckpointError, match="is a directory"):
        load_checkpoint(str(tmp_path))
    assert not is_checkpoint_file(str(tmp_path / "missing.ckpt"))


# -- a whole trained model --------------------------------------------------------------

def test_save_and_load_trained_model(tmp_path):
    vocab = Vocab.from_text("héllo 世界 🎉\n", min_count=1)
    config = ModelConfig("gru", vocab.size, 4, 2, embed=3, dropout=0.1)
    model = Model(config)
    model.initialise(np.random.default_rng(0))
    path = tmp_path / "model.ckpt"
    extra = {"adam_m": np.full(config.parameter_count(), 0.5, np.float32),
             "state_h": np.ones((2, 3, 4), np.float32)}
    save_trained(str(path), model, vocab, {"step": 7, "history": [{"val_bpc": 2.5}]}, extra)
    loaded, loaded_vocab, training, arrays = load_trained(str(path))
    assert loaded.config == config and loaded_vocab == vocab
    assert loaded.flat.dtype == np.float32 and np.array_equal(loaded.flat, model.flat)
    assert training == {"step": 7, "history": [{"val_bpc": 2.5}]}
    assert_same_arrays(arrays, extra)
    as64, _, _, _ = load_trained(str(path), dtype=np.float64)
    assert as64.flat.dtype == np.float64 and np.array_equal(as64.flat, model.flat)


def test_plain_checkpoint_is_not_a_trained_model(tmp_path):
    path = tmp_path / "plain.ckpt"
    save_checkpoint(str(path), {"something": "else"}, {"params": np.zeros(3, np.float32)})
    with pytest.raises(CheckpointError, match="format field missing"):
        load_trained(str(path))


def test_inconsistent_trained_model(tmp_path):
    vocab = Vocab.from_text("abc")
    model = Model(ModelConfig("rnn", vocab.size, 2, 1))
    path = tmp_path / "model.ckpt"
    save_trained(str(path), model, Vocab.from_text("abcd"), {}, {})  # vocab of 4 != V=3
    with pytest.raises(CheckpointError, match="inconsistent.*vocabulary size"):
        load_trained(str(path))
