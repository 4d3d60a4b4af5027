"""The small interface every way of running the per-sample work implements.

A backend is started once with a ``Payload`` (model factory, loss, prediction) and
receives each dataset once under a key. After that the per-step work is a pure
function of ``(parameters, sample indices)``: ``run`` returns one ``SampleResult``
per index, in the order of ``indices`` whatever order they were computed in. The
trainer never sees processes, so another backend (e.g. Dask) is one more class.
"""
import collections
import math
import statistics
from abc import ABC, abstractmethod

from .replica import Replica


class SampleTimeout:
    """How long one sample may run before its worker counts as hung, the same for every backend.

    ``seconds`` when given (0: never); otherwise the larger of 30 s and 100 times the median of
    the last 64 samples of the same mode (training and evaluation samples take different times).
    """

    FLOOR_SECONDS = 30.0
    MEDIANS = 100
    RECENT = 64

    def __init__(self, seconds=None):
        if seconds is not None and (isinstance(seconds, bool) or not isinstance(seconds, (int, float))
                                    or not 0 <= seconds < math.inf):
            raise ValueError(f"Expected sample_timeout to be seconds >= 0 or None, finite, got {seconds!r}")
        self.seconds = seconds
        self.recent = {}

    def record(self, mode, seconds):
        self.recent.setdefault(mode, collections.deque(maxlen=self.RECENT)).append(seconds)

    def median(self, mode):
        recent = self.recent.get(mode)
        return statistics.median(recent) if recent else 0.0

    def limit(self, mode):
        """Seconds a ``mode`` sample may run, or None when the watchdog is off."""
        if self.seconds is not None:
            return self.seconds or None
        return max(self.FLOOR_SECONDS, self.MEDIANS * self.median(mode))


class Results(list):
    """What ``run`` returns: one ``SampleResult`` per index, in the order of the indices; ``grads``
    is the gradients stacked as a 2-D array in that order, when the backend has them that way
    (the pool's slab), else None."""

    grads = None


class Backend(ABC):
    """Runs ``Replica.compute`` for many samples; ``with backend:`` closes it."""

    workers = 0

    @abstractmethod
    def start(self, payload):
        """Build the replicas from ``payload``; called once before anything else."""

    @abstractmethod
    def add_dataset(self, key, dataset):
        """Make ``dataset`` available to every replica under ``key`` (sent once)."""

    @abstractmethod
    def run(self, mode, params, key, indices, epoch=0):
        """``SampleResult``s for ``indices`` of dataset ``key``, in the order of ``indices``.

        ``mode`` is "train" (loss, prediction, gradient) or "eval" (no gradient);
        ``params`` is the float64 parameter buffer in tensor order; ``epoch`` seeds the
        training samples' augmentation. A result's ``grad`` is any float64 buffer
        (bytes, or a row of a shared-memory slab valid until the next ``run``).
        """

    def memory(self):
        """Resident set size in bytes of each worker (empty when there are none)."""
        return []

    @abstractmethod
    def close(self):
        """Stop every worker; safe to call twice."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


class InProcessBackend(Backend):
    """workers=0: the replica lives in the calling process; no pool, no pickling."""

    def __init__(self):
        self.replica = None

    def start(self, payload):
        self.replica = Replica(payload)

    def add_dataset(self, key, dataset):
        self.replica.add_dataset(key, dataset)

    def run(self, mode, params, key, indices, epoch=0):
        self.replica.set_parameters(params)
        return [self.replica.compute(mode, key, i, epoch=epoch) for i in indices]

    def close(self):
        self.replica = None
