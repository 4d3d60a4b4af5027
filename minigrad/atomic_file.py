"""Replace a file in one step, so readers never see half of it.

A crash, a kill, a full disk or a failed checksum while writing leaves the previous
file (or no file) in place, never a truncated one that a later run would mistake
for good data or a good checkpoint.
"""
import contextlib
import os
import tempfile


@contextlib.contextmanager
def atomic_write(path):
    """Yield a binary file whose contents replace ``path`` when the block ends without error.

    The bytes go to a temp file in the same folder (``os.replace`` is atomic only within
    one file system), are fsynced, then renamed over ``path``; the folder is fsynced so
    the rename survives a power cut. On any failure, a KeyboardInterrupt included, the
    temp file is removed and ``path`` is untouched. The file keeps the permissions of the
    one it replaces (0644 for a new file: mkstemp would make it private).
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    mode = os.stat(path).st_mode & 0o777 if os.path.exists(path) else 0o644
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
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
