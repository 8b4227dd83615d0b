"""The checkpoint file: one self-contained file of named arrays plus a JSON header.

Layout (little-endian):
    8 bytes   magic b"\\x89CHRNN\\r\\n" (binary marker, catches text-mode mangling)
    4 bytes   format version (uint32)
    8 bytes   header length in bytes (uint64)
    header    UTF-8 JSON: model config, vocabulary, training state, and an "arrays"
              table {name: {dtype, shape, offset, nbytes}}; offsets are from the start
              of the data section, each aligned to 64 bytes
    padding   to a multiple of 64 bytes
    data      raw array bytes
    4 bytes   CRC-32 of everything before it (detects truncation and corruption)

A checkpoint is data, never code: only plain numeric dtypes are accepted and nothing is
unpickled. A header is not trusted for being checksummed: each array's entry must lie
inside the data section, and load_trained checks the records' types, so a hand-edited
or foreign file is refused with one CheckpointError, never half-read.

Writes are atomic: a temporary file in the same directory is written, fsynced and
renamed over the target, so a crash at any moment leaves either the old file or the
new one. A process killed mid-write (kill -9) leaves its temporary file behind; the
next save of the same checkpoint removes it.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import reprlib
import struct
import sys
import time
import typing
import zlib

import numpy as np

CHECKPOINT_FORMAT_VERSION = 1  # the layout's version, in every file's prefix
STALE_TEMPORARY_SECONDS = 600  # a writer's temporary file older than this, writer gone

MAGIC = b"\x89CHRNN\r\n"
ALIGN = 64
ALLOWED_DTYPES = {"float32", "float64", "int32", "int64", "uint8", "uint16", "uint32"}
MAX_DIMENSIONS = 32  # what every NumPy version can build
_PREFIX = struct.Struct("<8sIQ")


class CheckpointError(ValueError):
    """A file that cannot be loaded as a checkpoint; the message says why."""


def _padding(size: int) -> int:
    return -size % ALIGN


def encode_checkpoint(header: dict, arrays: dict[str, np.ndarray]) -> bytes:
    table, offset, blobs = {}, 0, []
    for name, array in arrays.items():
        array = np.asarray(array)
        if not array.flags.c_contiguous:
            array = array.copy(order="C")  # (ascontiguousarray would turn 0-d into 1-d)
        if array.dtype.name not in ALLOWED_DTYPES:
            raise TypeError(f"array {name} has unsupported dtype {array.dtype}")
        data = array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes()
        table[name] = {"dtype": array.dtype.name, "shape": list(array.shape),
                       "offset": offset, "nbytes": len(data)}
        blobs += [data, b"\0" * _padding(len(data))]
        offset += len(data) + _padding(len(data))
    header_bytes = json.dumps({**header, "arrays": table}, ensure_ascii=False,
                              separators=(",", ":")).encode("utf-8")
    prefix = _PREFIX.pack(MAGIC, CHECKPOINT_FORMAT_VERSION, len(header_bytes))
    head = prefix + header_bytes
    body = b"".join([head, b"\0" * _padding(len(head))] + blobs)
    return body + struct.pack("<I", zlib.crc32(body))


def decode_checkpoint(blob: bytes, name: str = "checkpoint") -> tuple[dict, dict[str, np.ndarray]]:
    if blob[:1] == b"\x80" or blob[:2] == b"PK" or blob[:6] == b"\x93NUMPY":
        raise CheckpointError(f"{name} is a pickle or NumPy file, not a charrnn checkpoint "
                              "(charrnn never unpickles: loading a checkpoint cannot run code)")
    if blob[:len(MAGIC)] != MAGIC:
        raise CheckpointError(f"{name} is not a charrnn checkpoint")
    if len(blob) < _PREFIX.size:
        raise CheckpointError(f"{name} is truncated or corrupted (only {len(blob)} bytes): "
                              "use an earlier checkpoint, e.g. the .best one")
    _, version, header_len = _PREFIX.unpack_from(blob)
    if version > CHECKPOINT_FORMAT_VERSION:
        raise CheckpointError(f"{name} has checkpoint format {version}, newer than this "
                              f"charrnn reads ({CHECKPOINT_FORMAT_VERSION}): upgrade charrnn")
    if len(blob) < _PREFIX.size + header_len + 4 or \
            struct.unpack("<I", blob[-4:])[0] != zlib.crc32(blob[:-4]):
        raise CheckpointError(f"{name} is truncated or corrupted (checksum mismatch): "
                              "use an earlier checkpoint, e.g. the .best one")
    try:
        header = json.loads(blob[_PREFIX.size:_PREFIX.size + header_len].decode("utf-8"))
    except RecursionError:
        raise CheckpointError(f"{name} has a malformed header: nested too deeply") from None
    except (ValueError, UnicodeDecodeError) as error:
        raise CheckpointError(f"{name} has a malformed header: {error}") from None
    if not isinstance(header, dict) or not isinstance(header.get("arrays"), dict):
        raise CheckpointError(f"{name} has a malformed header: no table of arrays")
    start = _PREFIX.size + header_len
    start += _padding(start)
    arrays = {key: _read_array(blob, start, key, entry, name)
              for key, entry in header.pop("arrays").items()}
    return header, arrays


def _read_array(blob: bytes, start: int, key: str, entry, name: str) -> np.ndarray:
    """The array an entry of the header's table describes, once the entry is known to
    lie inside the data section, which begins at byte start and ends at the CRC."""
    def refuse(why: str) -> CheckpointError:
        return CheckpointError(f"{name}: array {_shown(key)} {why}")

    if not isinstance(entry, dict):
        raise refuse("is not described by {dtype, shape, offset}")
    dtype_name, shape, offset = entry.get("dtype"), entry.get("shape"), entry.get("offset")
    if not isinstance(dtype_name, str) or dtype_name not in ALLOWED_DTYPES:
        raise refuse(f"has forbidden dtype {_shown(dtype_name)}")
    if not isinstance(shape, list) or len(shape) > MAX_DIMENSIONS or \
            not all(_is_int(size) and size >= 0 for size in shape):
        raise refuse(f"has shape {reprlib.repr(shape)}, not a list of at most "
                     f"{MAX_DIMENSIONS} non-negative integers")
    if not _is_int(offset) or offset < 0 or offset % ALIGN:
        raise refuse(f"has offset {reprlib.repr(offset)}, not a non-negative multiple of "
                     f"{ALIGN} from the start of the data")
    dtype = np.dtype(dtype_name).newbyteorder("<")
    count = math.prod(shape)  # a Python int: a huge shape cannot overflow
    if start + offset + count * dtype.itemsize > len(blob) - 4:
        raise refuse("runs past the end of the file")
    array = np.frombuffer(blob, dtype, count, start + offset).reshape(shape)
    return array.astype(dtype.newbyteorder("="))


def save_checkpoint(path: str, header: dict, arrays: dict[str, np.ndarray]) -> None:
    """Write atomically: temp file in the same directory, fsync, rename, fsync dir."""
    blob = encode_checkpoint(header, arrays)
    directory = os.path.dirname(os.path.abspath(path))
    temporary = f"{path}.tmp{os.getpid()}"
    try:
        with open(temporary, "wb") as handle:
            handle.write(blob)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException as error:
        if os.path.exists(temporary):
            os.unlink(temporary)
        if isinstance(error, OSError):  # name the checkpoint, not its temporary file
            error.filename, error.filename2 = path, None
        raise
    remove_stale_temporaries(path)
    try:
        dir_fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return  # platforms without directory fds: the rename is still atomic
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def remove_stale_temporaries(path: str) -> None:
    """Delete PATH.tmpPID files left by writers that died mid-write: the process PID is
    gone (on this machine) and the file is older than STALE_TEMPORARY_SECONDS, so a
    writer on another machine sharing the directory is not cut off mid-write."""
    directory = os.path.dirname(os.path.abspath(path))
    pattern = re.compile(re.escape(os.path.basename(path)) + r"\.tmp(\d+)")
    try:
        names = os.listdir(directory)
    except OSError:
        return
    for name in names:
        match = pattern.fullmatch(name)
        if not match or int(match.group(1)) == os.getpid() or _alive(int(match.group(1))):
            continue
        candidate = os.path.join(directory, name)
        try:
            if time.time() - os.stat(candidate).st_mtime > STALE_TEMPORARY_SECONDS:
                os.unlink(candidate)
        except OSError:
            pass  # gone already, or not ours to remove


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (OverflowError, OSError):
        return True  # exists (another user's), or not a pid we can judge: keep the file
    return True


def load_checkpoint(path: str) -> tuple[dict, dict[str, np.ndarray]]:
    if os.path.isdir(path):
        raise CheckpointError(f"{path} is a directory, not a checkpoint file")
    try:
        with open(path, "rb") as handle:
            blob = handle.read()
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such file") from None
    except OSError as error:
        raise CheckpointError(f"{path}: cannot read: {error.strerror}") from None
    return decode_checkpoint(blob, path)


def is_checkpoint_file(path: str) -> bool:
    """True if path starts with the checkpoint magic (cheap; reads 8 bytes)."""
    try:
        with open(path, "rb") as handle:
            return handle.read(len(MAGIC)) == MAGIC
    except OSError:
        return False


FORMAT_NAME = "charrnn-checkpoint"


def save_trained(path: str, model, vocab, training: dict, arrays: dict[str, np.ndarray]) -> None:
    """Save a model with its vocabulary, training record and extra arrays (optimizer
    moments, carried state)."""
    from . import __version__
    header = {"format": FORMAT_NAME, "charrnn_version": __version__,
              "model": model.config.to_dict(), "vocab": vocab.to_dict(), "training": training}
    save_checkpoint(path, header, {"params": model.flat, **arrays})


def load_trained(path: str, dtype=np.float32):
    """Load (model, vocab, training dict, arrays) from a checkpoint file. The training
    dict's documented fields are of their types (STATE_TYPES); resuming checks the rest
    (resume.py)."""
    from .model import Model, ModelConfig
    from .vocab import Vocab
    header, arrays = load_checkpoint(path)
    if header.get("format") != FORMAT_NAME:
        raise CheckpointError(f"{path} is not a charrnn checkpoint (format field missing)")
    model_record = header.get("model")
    if isinstance(model_record, dict) and (unknown := unknown_fields(model_record, ModelConfig)):
        # a newer charrnn's architecture: the network would be another one
        from . import __version__
        raise CheckpointError(f"{path} has a model with settings that charrnn {__version__} "
                              f"does not know ({unknown}), as a newer charrnn writes: use "
                              "that version")
    try:
        config = ModelConfig.from_dict(check_record(model_record, ModelConfig, "model"))
        vocab = Vocab.from_dict(checked_vocab(header.get("vocab")))
        if vocab.size != config.vocab_size:
            raise ValueError("vocabulary size does not match the model")
        params = arrays.pop("params", None)
        if params is None or params.dtype.kind != "f":
            raise ValueError("no floating-point params array")
        # Each layer holds more weights than it has units, so sizes past the params
        # array are wrong, and are refused before counting the layers (10**12 of them
        # would take hours and gigabytes).
        if max(config.layers, config.hidden, config.embed, config.vocab_size) > params.size:
            raise ValueError(f"the model's sizes do not fit its {params.size} parameters")
        model = Model(config, params, dtype=dtype)
        training = checked_training(header.get("training", {}))
    except (KeyError, ValueError, TypeError, OverflowError) as error:
        # ModelConfig and Vocab check their values; a failure they did not foresee is
        # still this file's fault, and one line (a short one: they quote the values).
        message = str(error) if len(str(error)) <= 300 else f"{str(error)[:300]}..."
        raise CheckpointError(f"{path} is inconsistent: {message}") from None
    return model, vocab, training, arrays


# The training state's fields that readers other than the trainer show (charrnn info),
# and those of each evaluation in its history; train.TrainState has them all.
STATE_TYPES = {"step": int, "chars_seen": int, "train_seconds": float,
               "best_val_bpc": float | None, "last_val_bpc": float | None, "history": list}
EVALUATION_TYPES = {"step": int, "val_bpc": float | None}


def checked_training(training) -> dict:
    """A checkpoint's training record, once its options and state (either may be
    absent: not every checkpoint comes from `charrnn train`) are JSON objects and the
    state's STATE_TYPES fields are of their types."""
    check_record(training, {"options": dict, "state": dict}, "training record")
    if "state" in training:
        state = check_record(training["state"], STATE_TYPES, "training state")
        for evaluation in state.get("history", []):
            check_record(evaluation, EVALUATION_TYPES, "training history entry", ["step"])
    return training


def checked_vocab(data) -> dict:
    """A checkpoint's vocabulary record, once its counts can weigh a first character:
    whole numbers, none negative, not all zero (Vocab.from_dict checks the characters)."""
    check_record(data, {"chars": str, "counts": list, "has_unknown": bool}, "vocabulary",
                 ["chars", "counts"])
    counts = data["counts"]
    if not all(_is_int(n) and 0 <= n < 2**63 for n in counts) or (counts and not sum(counts)):
        raise ValueError("vocabulary counts are not whole numbers >= 0 with a positive sum")
    return data


def unknown_fields(record: dict, kind) -> str:
    """The fields of record that the dataclass kind lacks (what a newer charrnn added),
    quoted for a message, at most three; '' if none."""
    unknown = sorted(set(record) - {field.name for field in dataclasses.fields(kind)})
    return ", ".join(map(reprlib.repr, unknown[:3]))


def check_record(record, schema, what: str, required=()) -> dict:
    """record, once it is known to be a JSON object whose fields named in schema hold
    values of their types: schema is a dict {name: type}, or a dataclass whose
    annotations give them (its fields without a default are then required). Types are
    int (not bool), float (any finite number), str, bool, list, dict, None and unions
    such as `float | None`. Fields schema does not name are not looked at.
    Raises ValueError saying which field is wrong."""
    if dataclasses.is_dataclass(schema):
        required = [field.name for field in dataclasses.fields(schema)
                    if field.default is dataclasses.MISSING
                    and field.default_factory is dataclasses.MISSING]
        schema = typing.get_type_hints(schema)
    if not isinstance(record, dict):
        raise ValueError(f"{what} is not a JSON object")
    for name in required:
        if name not in record:
            raise ValueError(f"{what} has no {name}")
    for name, expected in schema.items():
        allowed = typing.get_args(expected) or (expected,)
        if name in record and not any(_holds(record[name], kind) for kind in allowed):
            raise ValueError(f"{what} {name} is {reprlib.repr(record[name])}, not "
                             + " or ".join(_described(kind) for kind in allowed))
    return record


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _shown(value) -> str:
    """value from a file, short and on one line; a string without quotes."""
    text = reprlib.repr(value)
    return text[1:-1] if isinstance(value, str) else text


def _holds(value, kind) -> bool:
    if kind is float:  # an integer is a number too, if a float can hold it
        return _is_int(value) and abs(value) <= sys.float_info.max or \
            isinstance(value, float) and math.isfinite(value)
    if kind is int:
        return _is_int(value)
    if kind is tuple:  # JSON has lists only
        return isinstance(value, (list, tuple))
    if kind is type(None):
        return value is None
    return isinstance(value, kind)


def _described(kind) -> str:
    """kind as an error message names it."""
    return {int: "an integer", float: "a finite number", str: "a string", bool: "a boolean",
            list: "a list", tuple: "a list", dict: "a JSON object",
            type(None): "null"}.get(kind, kind.__name__)
