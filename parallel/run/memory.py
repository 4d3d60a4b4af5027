"""Resident set size (RSS) of the parent and of every worker, read at most once a second.

The first and the latest readings show whether a long run keeps its memory flat; a run
prints both at the end and logs the readings in train_stats.csv.
"""
import time

from ..rss import rss_bytes

MB = 1024 * 1024


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
