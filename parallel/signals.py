"""Turn SIGINT/SIGTERM into ``TrainingInterrupted`` at a point where the state is whole.

Inside ``stop_on_signals()`` the first SIGINT or SIGTERM raises ``TrainingInterrupted``
in the main thread, except inside a ``deferred_signals()`` block (a parameter update,
a checkpoint's ``os.replace``), where it is remembered and raised when the block ends.
Outside ``stop_on_signals()`` both helpers change nothing.
"""
import contextlib
import signal
import threading

from .errors import TrainingInterrupted

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class _State:
    installed = False
    depth = 0       # nesting of deferred_signals blocks
    pending = None  # a signal that arrived inside one
    ignore = False  # shutting down: further signals change nothing


def _handler(signum, frame):
    if _State.ignore:
        return
    if _State.depth:
        if _State.pending is None:
            _State.pending = signum
        return
    raise TrainingInterrupted(signum)


@contextlib.contextmanager
def stop_on_signals():
    """Install the handlers (main thread only; elsewhere this does nothing)."""
    if _State.installed or threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, _handler) for s in STOP_SIGNALS}
    _State.installed, _State.pending, _State.ignore = True, None, False
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        _State.installed, _State.pending, _State.ignore = False, None, False


@contextlib.contextmanager
def deferred_signals():
    """A block that a stop signal does not cut in half; the signal is raised after it."""
    _State.depth += 1
    try:
        yield
    finally:
        _State.depth -= 1
    if _State.depth == 0 and _State.pending is not None and not _State.ignore:
        signum, _State.pending = _State.pending, None
        raise TrainingInterrupted(signum)


@contextlib.contextmanager
def ignored_signals():
    """Shutting down after a stop (the final checkpoint): more Ctrl-C's are ignored."""
    _State.ignore = True
    try:
        yield
    finally:
        _State.ignore = False


def pending_signal():
    """The stop signal waiting for the current deferred block to end, or None."""
    return _State.pending
