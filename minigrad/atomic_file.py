"""Replace a file in one step, so readers never see half of it.

A crash, a kill, a full disk or a failed checksum while writing leaves the previous
file (or no file) in place, never a truncated one that a later run would mistake
for good data or a good checkpoint.
"""
import contextlib
import errno
import os
import tempfile

# A full disk, a full quota, a failing device: the write cannot succeed here, whoever retries it.
STORAGE_ERRNOS = frozenset(getattr(errno, name) for name in ("ENOSPC", "EDQUOT", "EIO", "EFBIG")
                           if hasattr(errno, name))


class WriteError(OSError):
    """A file could not be written (disk full, quota exceeded, I/O error); the previous file is whole.

    ``errno``, ``strerror`` and ``filename`` are the failed call's; ``step`` says what failed
    ("creating the temp file", "writing", "syncing to disk", "renaming over the old file");
    ``kept`` is whether a previous version of the file exists (and is untouched).
    """

    def __init__(self, path, step, error, kept):
        super().__init__(error.errno, error.strerror or str(error), path)
        self.step, self.kept = step, kept

    def __str__(self):
        code = errno.errorcode.get(self.errno, self.errno)
        after = "the previous file is unchanged" if self.kept else "no file was written"
        return f"{self.filename}: cannot write ({self.step}): {self.strerror} ({code}); {after}"


@contextlib.contextmanager
def atomic_write(path):
    """Yield a binary file whose contents replace ``path`` when the block ends without error.

    The bytes go to a temp file in the same folder (``os.replace`` is atomic only within
    one file system), are fsynced, then renamed over ``path``; the folder is fsynced so
    the rename survives a power cut. On any failure, a KeyboardInterrupt included, the
    temp file is removed and ``path`` is untouched; a full disk or quota, or an I/O error,
    is raised as one ``WriteError`` saying what failed and where. The file keeps the
    permissions of the one it replaces (0644 for a new file: mkstemp would make it private).
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    kept = os.path.exists(path)
    mode = os.stat(path).st_mode & 0o777 if kept else 0o644
    step, tmp = "creating the temp file", None
    try:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
        step = "writing"
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            step = "syncing to disk"
            os.fsync(f.fileno())
        step = "renaming over the old file"
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException as e:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.remove(tmp)
        if isinstance(e, OSError) and not isinstance(e, WriteError) and e.errno in STORAGE_ERRNOS:
            raise WriteError(path, step, e, kept) from e
        raise
    _fsync_directory(folder)


def atomic_write_bytes(path, data):
    with atomic_write(path) as f:
        f.write(data)


def atomic_write_text(path, text):
    atomic_write_bytes(path, text.encode("utf-8"))


def _fsync_directory(folder):
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:  # Windows cannot open a folder; its rename is durable enough
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
