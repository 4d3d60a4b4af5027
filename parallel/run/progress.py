"""The progress line: samples/s, loss, learning rate, ETA and the memory of every process.

tqdm counts samples, so its rate is samples/s and its ETA covers the whole run; the
memory (parent + workers) comes from a ``MemoryMonitor``. The bar is ``tqdm.auto``'s: a
text bar in a terminal, a widget in Jupyter.
"""
import sys
import time

from .memory import format_memory


def note(line):
    """A warning on stderr that does not tear a progress bar (tqdm.write knows the open bars)."""
    try:
        from tqdm import tqdm
    except ImportError:
        print(line, file=sys.stderr, flush=True)
        return
    tqdm.write(line, file=sys.stderr)


class Progress:
    """A tqdm bar over the run's samples (or nothing when ``quiet``); ``write`` prints above it."""

    def __init__(self, total_samples, done_samples, memory, quiet=False, every=1.0):
        self.memory, self.every, self.quiet = memory, every, quiet
        self._last = 0.0
        self._loss = None
        self.bar = None
        if not quiet:
            from tqdm.auto import tqdm
            self.bar = tqdm(total=total_samples, initial=done_samples, unit="sample", dynamic_ncols=True,
                            smoothing=0.1, file=sys.stderr)

    def update(self, report):
        self._loss = report.loss if self._loss is None else 0.9 * self._loss + 0.1 * report.loss
        if self.bar is None:
            return
        self.bar.update(report.samples)
        now = time.monotonic()
        if now - self._last >= self.every:
            self._last = now
            memory = f" mem {format_memory(*self.memory.read())}" if self.memory is not None else ""
            self.bar.set_postfix_str(f"loss {self._loss:.4f} lr {report.lr:.3g} epoch {report.epoch + 1}{memory}",
                                     refresh=False)

    def write(self, line):
        if self.quiet:
            return
        if self.bar is not None:
            self.bar.write(line, file=sys.stdout)
        else:
            print(line, flush=True)

    def close(self):
        if self.bar is not None:
            self.bar.close()
            self.bar = None
