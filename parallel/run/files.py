"""The files of a run folder besides the checkpoint: creating the folder and the CSV logs.

Only the parent writes them. A resumed run first cuts each log back to the checkpoint's
step (rows written after the last checkpoint belong to steps that will be redone). A log
that cannot be written (a full disk) is cut back to its last whole row and raises
``RunWriteError``.
"""
import csv
import os
import tempfile
import time

from minigrad.atomic_file import atomic_write_text

CHECKPOINT_NAME = "model.json"


class RunFolderError(ValueError):
    """The output folder cannot be used; the message names it."""


class RunWriteError(OSError):
    """A checkpoint, log or picture of the run could not be written (ENOSPC, EDQUOT, EIO, ...)."""

    def __init__(self, path, error):
        super().__init__(error.errno, f"cannot write {path}: {error.strerror or error}")
        self.path = path

    def __str__(self):
        return self.strerror


def new_run_folder(parent="runs"):
    """``parent/YYYYmmdd-HHMMSS`` (with ``-2``, ``-3``, ... if taken): a fresh run's default folder."""
    base = os.path.join(parent, time.strftime("%Y%m%d-%H%M%S"))
    out, n = base, 1
    while os.path.exists(out):
        n += 1
        out = f"{base}-{n}"
    return out


def prepare_run_folder(path, resumed_from=None):
    """Create ``path`` if needed and check it is writable; return its checkpoint path.

    A new run refuses a folder that already holds a checkpoint, and so does a resumed run
    writing anywhere but the folder of the checkpoint it resumes (``resumed_from``).
    """
    try:
        os.makedirs(path, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=path, prefix=".write-test-")
        os.close(fd)
        os.remove(probe)
    except OSError as e:
        raise RunFolderError(f"{path}: cannot write the run folder: {e.strerror or e}") from None
    checkpoint = os.path.join(path, CHECKPOINT_NAME)
    own = resumed_from is not None and os.path.exists(checkpoint) and os.path.samefile(checkpoint, resumed_from)
    if os.path.exists(checkpoint) and not own:
        raise RunFolderError(f"{checkpoint}: already exists; resume it with --resume or choose another --out")
    return checkpoint


class CsvLog:
    """Rows appended to a CSV file, flushed on request; reopened rows after ``keep_until_step`` dropped."""

    def __init__(self, path, columns, keep_until_step=None):
        self.path, self.columns = path, list(columns)
        self._rows = []
        try:
            if keep_until_step is not None and os.path.exists(path):
                self._cut(keep_until_step)
            else:
                atomic_write_text(path, ",".join(self.columns) + "\n")
            self._whole = os.path.getsize(path)  # bytes of whole rows on disk
        except OSError as e:
            raise RunWriteError(path, e) from None

    def _cut(self, step):
        with open(self.path, newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
        if not rows or rows[0] != self.columns:
            raise RunFolderError(f"{self.path}: expected the columns {self.columns}, got {rows[:1]}")
        at = self.columns.index("step")
        kept = [rows[0]] + [r for r in rows[1:] if len(r) == len(self.columns) and _step(r[at]) <= step]
        atomic_write_text(self.path, "".join(",".join(r) + "\n" for r in kept))

    def write(self, *values):
        self._rows.append(",".join(_format(v) for v in values) + "\n")

    def flush(self):
        """Append the rows written since the last flush. On any failure, a signal's exception
        included, the file is cut back to the rows flushed before, which stay in memory: the
        next flush writes each of them once."""
        if not self._rows:
            return
        data = "".join(self._rows).encode("utf-8")
        try:
            with open(self.path, "ab") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        except BaseException as e:
            try:
                os.truncate(self.path, self._whole)
            except OSError:
                pass
            if isinstance(e, OSError):
                raise RunWriteError(self.path, e) from None
            raise
        self._rows = []
        self._whole += len(data)

    def close(self):
        self.flush()


def _step(text):
    try:
        return int(text)
    except ValueError:
        return float("inf")  # a damaged row: dropped


def _format(v):
    return repr(v) if isinstance(v, float) else str(v)


def read_csv(path):
    """The rows of a log as dicts of floats (for the plots)."""
    with open(path, newline="", encoding="utf-8") as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]
