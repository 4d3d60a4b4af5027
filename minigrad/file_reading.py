"""Read a whole input file, refusing early what no reader should try to swallow.

Checkpoints and data files come from users, downloads and other machines. Before any byte is
parsed, the file must be a regular file (a FIFO would block forever, a device never end) no
larger than the reader's limit; a gzip file's decompressed contents are held to the same limit,
so a small "zip bomb" cannot fill the memory. Each reader turns ``FileRefused`` into its own
one-line error naming the file.
"""
import gzip
import os
import stat

_CHUNK = 1 << 20
_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


class FileRefused(ValueError):
    """A file that is not a regular file, or larger than the limit; the message omits the name."""


def read_limited(path, limit, gzipped=False):
    """The bytes of the regular file ``path`` (decompressed when ``gzipped``), at most ``limit`` of them.

    Raises ``FileRefused`` for anything else; ``OSError`` (and gzip's errors) pass through.
    """
    # O_NONBLOCK: opening a FIFO must not wait for a writer; fstat then refuses it.
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            kind = next((name for test, name in _KINDS if test(info.st_mode)), "not a regular file")
            raise FileRefused(f"expected a regular file, got {kind}")
        _check_size(info.st_size, limit, "")
    except BaseException:
        os.close(fd)
        raise
    with os.fdopen(fd, "rb") as f:
        if gzipped:
            with gzip.GzipFile(fileobj=f, mode="rb") as gz:
                data = _read_at_most(gz, limit + 1)
            _check_size(len(data), limit, " once decompressed")
            return data
        data = _read_at_most(f, limit + 1)
    _check_size(len(data), limit, "")
    return data


def _read_at_most(f, n):
    """Up to ``n`` bytes of ``f``, in chunks: ``f.read(n)`` may allocate all ``n`` at once."""
    chunks, size = [], 0
    while size < n:
        chunk = f.read(min(_CHUNK, n - size))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def _check_size(size, limit, how):
    if size > limit:
        raise FileRefused(f"expected at most {_mib(limit)}{how}, got {'more' if how else _mib(size)}")


def _mib(n):
    return f"{n / 2 ** 20:.1f} MiB" if n >= 2 ** 20 else f"{n} bytes"
