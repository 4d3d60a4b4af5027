"""Read and write IDX files, the format MNIST is distributed in.

An IDX file is a big-endian header followed by the raw array bytes:

    magic   4 bytes   0x00 0x00 <type code> <number of dimensions>
    sizes   4 bytes per dimension
    data    one byte per item for type code 0x08 (unsigned byte)

MNIST uses unsigned bytes only: images are 3-D (count, rows, columns) with
magic 0x00000803 = 2051, labels are 1-D with magic 0x00000801 = 2049.
A path ending in ".gz" is read and written through gzip.
"""

import gzip
import math
import os
import struct
import zlib

import numpy as np

from ..atomic_file import atomic_write
from ..file_reading import FileRefused, read_limited

IMAGES_MAGIC = 0x00000803
LABELS_MAGIC = 0x00000801
_UBYTE = 0x08
MAX_BYTES = 2 ** 28  # 256 MiB; MNIST's 60,000 training images take 45 MiB


class DataError(ValueError):
    """A data file is missing, malformed, inconsistent or fails its checksum.

    The message is one line naming the file and saying what was expected
    and what was found, e.g.
    "t10k-images-idx3-ubyte.gz: expected magic 2051 (0x803), got 2049 (0x801)".
    """


def read_idx_images(path):
    """Read an IDX image file as a uint8 array shaped (count, rows, columns)."""
    return _read_idx(path, IMAGES_MAGIC)


def read_idx_labels(path):
    """Read an IDX label file as a uint8 array shaped (count,)."""
    return _read_idx(path, LABELS_MAGIC)


def write_idx(path, array):
    """Write a uint8 array as an IDX file, replacing ``path`` atomically.

    A path ending in ".gz" is gzipped with a zero timestamp and no stored
    name, so the same array always gives the same bytes.
    """
    array = np.asarray(array)
    if array.dtype != np.uint8:
        raise ValueError(f"expected a uint8 array, got {array.dtype}")
    if not 1 <= array.ndim <= 255:
        raise ValueError(f"expected 1 to 255 dimensions, got {array.ndim}")
    magic = (_UBYTE << 8) | array.ndim
    header = struct.pack(f">I{array.ndim}I", magic, *array.shape)
    payload = header + np.ascontiguousarray(array).tobytes()
    with atomic_write(path) as f:
        if os.fspath(path).endswith(".gz"):
            # filename="" keeps the temporary file's name out of the header.
            with gzip.GzipFile(filename="", mode="wb", fileobj=f, compresslevel=9, mtime=0) as gz:
                gz.write(payload)
        else:
            f.write(payload)


def _read_idx(path, expected_magic):
    path = os.fspath(path)
    raw = _read_bytes(path)
    ndim = expected_magic & 0xFF
    header_size = 4 + 4 * ndim
    if len(raw) < 4:
        raise DataError(f"{path}: expected a {header_size}-byte header, got {len(raw)} bytes")
    (magic,) = struct.unpack_from(">I", raw)
    if magic != expected_magic:
        raise DataError(
            f"{path}: expected magic {expected_magic} ({expected_magic:#x}), got {magic} ({magic:#x})"
        )
    if len(raw) < header_size:
        raise DataError(f"{path}: expected a {header_size}-byte header, got {len(raw)} bytes")
    shape = struct.unpack_from(f">{ndim}I", raw, 4)
    expected, got = math.prod(shape), len(raw) - header_size
    if got != expected:
        problem = "truncated" if got < expected else "trailing data"
        dims = "x".join(str(n) for n in shape)
        raise DataError(f"{path}: {problem}: expected {expected} data bytes for {dims}, got {got}")
    # frombuffer views the immutable bytes; copy so callers get a normal array.
    return np.frombuffer(raw, dtype=np.uint8, offset=header_size).reshape(shape).copy()


def _read_bytes(path):
    try:
        return read_limited(path, MAX_BYTES, gzipped=path.endswith(".gz"))
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except FileRefused as e:
        raise DataError(f"{path}: {e}") from None
    except (gzip.BadGzipFile, EOFError, zlib.error) as e:
        raise DataError(f"{path}: corrupt gzip data: {e}") from e
    except OSError as e:
        raise DataError(f"{path}: cannot read: {e.strerror or e}") from e
