"""The progress line: samples/s, loss, learning rate, ETA and the memory of every process.

tqdm counts samples, so its rate is samples/s and its ETA covers the whole run. Memory
(resident set size, by psutil) is read at most once a second: parent + workers.
"""
import sys
import time


def rss_bytes(pid=None):
    import psutil
    try:
        return psutil.Process(pid).memory_info().rss
    except psutil.Error:
        return 0


def format_memory(parent, workers):
    mb = 1024 * 1024
    if not workers:
        return f"{parent / mb:.0f}MB"
    return f"{parent / mb:.0f}+{len(workers)}x{max(workers) / mb:.0f}MB"


class Progress:
    """A tqdm bar over the run's samples (or nothing when ``quiet``); ``write`` prints above it."""

    def __init__(self, total_samples, done_samples, memory_fn, quiet=False, every=1.0):
        self.memory_fn, self.every = memory_fn, every
        self.quiet = quiet
        self._last = 0.0
        self._loss = None
        self.bar = None
        if not quiet:
            from tqdm import tqdm
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
            parent, workers = self.memory_fn()
            self.bar.set_postfix_str(f"loss {self._loss:.4f} lr {report.lr:.3g} epoch {report.epoch + 1} "
                                     f"mem {format_memory(parent, workers)}", refresh=False)

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
