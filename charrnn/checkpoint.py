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
unpickled. Writes are atomic: a temporary file in the same directory is written,
fsynced and renamed over the target, so a crash at any moment leaves either the old
file or the new one. A process killed mid-write (kill -9) leaves its temporary file
behind; the next save of the same checkpoint removes it.
"""

from __future__ import annotations

import json
import os
import re
import struct
import time
import zlib

import numpy as np

from . import CHECKPOINT_FORMAT_VERSION

STALE_TEMPORARY_SECONDS = 600  # a writer's temporary file older than this, writer gone

MAGIC = b"\x89CHRNN\r\n"
ALIGN = 64
ALLOWED_DTYPES = {"float32", "float64", "int32", "int64", "uint8", "uint16", "uint32"}
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
        start = _PREFIX.size + header_len
        start += _padding(start)
        arrays = {}
        for key, entry in header.pop("arrays").items():
            if entry["dtype"] not in ALLOWED_DTYPES:
                raise CheckpointError(f"{name}: array {key} has forbidden dtype {entry['dtype']}")
            dtype = np.dtype(entry["dtype"]).newbyteorder("<")
            begin = start + int(entry["offset"])
            count = int(np.prod(entry["shape"], dtype=np.int64))
            if begin + count * dtype.itemsize > len(blob) - 4:
                raise CheckpointError(f"{name}: array {key} runs past the end of the file")
            array = np.frombuffer(blob, dtype, count, begin).reshape(entry["shape"])
            arrays[key] = array.astype(dtype.newbyteorder("="))
    except CheckpointError:
        raise
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as error:
        raise CheckpointError(f"{name} has a malformed header: {error}") from None
    return header, arrays


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
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
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
    """Load (model, vocab, training dict, arrays) from a checkpoint file."""
    from .model import Model, ModelConfig
    from .vocab import Vocab
    header, arrays = load_checkpoint(path)
    if header.get("format") != FORMAT_NAME:
        raise CheckpointError(f"{path} is not a charrnn checkpoint (format field missing)")
    try:
        config = ModelConfig.from_dict(header["model"])
        vocab = Vocab.from_dict(header["vocab"])
        if vocab.size != config.vocab_size:
            raise ValueError("vocabulary size does not match the model")
        model = Model(config, arrays.pop("params"), dtype=dtype)
    except (KeyError, ValueError, TypeError) as error:
        raise CheckpointError(f"{path} is inconsistent: {error}") from None
    return model, vocab, header.get("training", {}), arrays
