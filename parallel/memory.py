"""Resident set size (RSS) of the parent and of every worker, read by psutil at most once a second.

The first and the latest readings show whether a long run keeps its memory flat; the
training script prints both and logs the readings in train_stats.csv.
"""
import time

MB = 1024 * 1024


def rss_bytes(pid=None):
    import psutil
    try:
        return psutil.Process(pid).memory_info().rss
    except psutil.Error:
        return 0


def format_memory(parent, workers):
    if not workers:
        return f"{parent / MB:.0f}MB"
    return f"{parent / MB:.0f}+{len(workers)}x{max(workers) / MB:.0f}MB"


class MemoryMonitor:
    """``read()`` returns ``(parent bytes, [worker bytes])``, re-measured every ``every`` seconds."""

    def __init__(self, backend, every=1.0):
        self.backend, self.every = backend, every
        self.first = self.latest = None
        self._when = None

    def read(self, force=False):
        now = time.monotonic()
        if force or self._when is None or now - self._when >= self.every:
            self._when = now
            self.latest = (rss_bytes(), self.backend.memory())
            if self.first is None:
                self.first = self.latest
        return self.latest

    def summary(self):
        if self.first is None:
            return "memory: no steps run"
        return (f"memory (RSS, parent+workers x largest): first step {format_memory(*self.first)}, "
                f"end {format_memory(*self.latest)}")
