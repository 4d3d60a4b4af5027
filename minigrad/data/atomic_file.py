"""Replace a file in one step, so readers never see half of it.

A crash, a full disk or a failed checksum while writing leaves the previous
file (or no file) in place, never a truncated one that a later run would
mistake for good data.
"""

import contextlib
import os
import tempfile

# mkstemp creates files readable by the owner only; package data and
# downloads should be readable like any other file.
_FILE_MODE = 0o644


@contextlib.contextmanager
def atomic_write(path):
    """Yield a binary file object whose contents replace ``path`` on success.

    The bytes go to a temporary file in the same folder (``os.replace`` is
    atomic only within one file system) and are fsynced before the rename.
    If the block raises, the temporary file is removed and ``path`` is left
    untouched.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp_path = tempfile.mkstemp(
        dir=folder, prefix="." + os.path.basename(path) + ".", suffix=".part"
    )
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp_path, _FILE_MODE)
        os.replace(tmp_path, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp_path)
        raise
