"""Turn SIGINT/SIGTERM into ``TrainingInterrupted`` at a point where the state is whole.

Inside ``stop_on_signals()`` the first SIGINT or SIGTERM raises ``TrainingInterrupted``
in the main thread, except inside a ``deferred_signals()`` block (a parameter update,
a checkpoint's ``os.replace``), where it is remembered and raised when the block ends;
signals after that first one find the run already stopping and are ignored. Outside
``stop_on_signals()`` both helpers change nothing. ``ignore_further_signals()`` is for
the way out: the final checkpoint and the exit code are no longer interruptible.
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
    raised = False  # one stop per stop_on_signals block: later signals find the run already stopping
    final = False   # shutting down: signals stay ignored


def _handler(signum, frame):
    if _State.raised:
        return
    if _State.depth:
        if _State.pending is None:
            _State.pending = signum
        return
    _State.raised = True
    raise TrainingInterrupted(signum)


@contextlib.contextmanager
def stop_on_signals():
    """Install the handlers (main thread only; elsewhere this does nothing)."""
    if _State.installed or threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, _handler) for s in STOP_SIGNALS}
    _State.installed, _State.pending, _State.raised = True, None, False
    try:
        yield
    finally:
        if not _State.final:
            for s, h in previous.items():
                signal.signal(s, h)
        _State.installed, _State.pending, _State.raised = False, None, False


@contextlib.contextmanager
def deferred_signals():
    """A block that a stop signal does not cut in half; the signal is raised after it."""
    _State.depth += 1
    try:
        yield
    finally:
        _State.depth -= 1
    if _State.depth == 0 and _State.pending is not None and not _State.final:
        signum, _State.pending = _State.pending, None
        _State.raised = True
        raise TrainingInterrupted(signum)


def ignore_further_signals():
    """Shutting down for good (saving the final checkpoint, then exiting): from now on SIGINT
    and SIGTERM are ignored, so an impatient second Ctrl-C cannot cut the save short or turn
    the exit into a KeyboardInterrupt. ``stop_on_signals`` then leaves them ignored."""
    _State.final = True
    if threading.current_thread() is threading.main_thread():
        for s in STOP_SIGNALS:
            signal.signal(s, signal.SIG_IGN)


def pending_signal():
    """The stop signal waiting for the current deferred block to end, or None."""
    return _State.pending
