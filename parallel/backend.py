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

from minigrad.checks import positive_int

from .replica import Replica, SampleResult


class SampleCrashes:
    """The rule every pool backend keeps: a sample that kills or hangs its worker ``max_crashes``
    times in a row stops the run. A count is per (dataset key, index), kept from step to step,
    and cleared when the sample completes."""

    def __init__(self, max_crashes=3):
        self.max_crashes = positive_int("max_crashes", max_crashes)
        self.counts = {}

    def crashed(self, key, index):
        """Count one more crash of sample ``index``; returns how many in a row, to compare with
        ``max_crashes`` (``limit_reached``)."""
        n = self.counts[key, index] = self.counts.get((key, index), 0) + 1
        return n

    def limit_reached(self, crashes):
        return crashes >= self.max_crashes

    def completed(self, key, indices):
        """These samples completed: they are no longer suspects."""
        if self.counts:
            for index in indices:
                self.counts.pop((key, index), None)


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

    def record_all(self, mode, seconds):
        """``record`` each of ``seconds``, in order."""
        self.recent.setdefault(mode, collections.deque(maxlen=self.RECENT)).extend(seconds)

    def median(self, mode):
        recent = self.recent.get(mode)
        return statistics.median(recent) if recent else 0.0

    def limit(self, mode):
        """Seconds a ``mode`` sample may run, or None when the watchdog is off."""
        if self.seconds is not None:
            return self.seconds or None
        return max(self.FLOOR_SECONDS, self.MEDIANS * self.median(mode))


class Results:
    """What ``run`` returns: the samples' results in the order of the indices, kept as columns
    (``indices``, ``losses``, ``predictions``, ``seconds``, ``workers``, ``started``; ``grads`` a
    2-D float64 array, one row per sample, or None when evaluating). It reads as a sequence of
    ``SampleResult``s, and ``Results.of`` makes one from such a list (what the in-process and
    Dask backends compute), so the trainer reads every backend's results the same way.
    """

    __slots__ = ("indices", "losses", "predictions", "grads", "seconds", "workers", "started")

    def __init__(self, indices=(), losses=(), predictions=(), grads=None, seconds=(), workers=(), started=()):
        self.indices, self.losses, self.predictions, self.grads = indices, losses, predictions, grads
        self.seconds, self.workers, self.started = seconds, workers, started

    @classmethod
    def of(cls, results):
        """``results`` (a list of ``SampleResult``s, or already ``Results``) as ``Results``."""
        if isinstance(results, Results):
            return results
        import numpy as np
        grads = None
        if results and results[0].grad is not None:
            grads = np.array([r.grad if isinstance(r.grad, np.ndarray) else np.frombuffer(r.grad, dtype=np.float64)
                              for r in results])
        return cls([r.index for r in results], [r.loss for r in results], [r.prediction for r in results], grads,
                   [r.seconds for r in results], [r.worker for r in results], [r.started for r in results])

    def __len__(self):
        return len(self.indices)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[k] for k in range(len(self))[i]]
        grads = self.grads
        return SampleResult(self.indices[i], self.losses[i], self.predictions[i],
                            grads[i] if grads is not None else None, self.seconds[i], self.workers[i], self.started[i])

    def __iter__(self):
        return map(self.__getitem__, range(len(self)))


class Backend(ABC):
    """Runs ``Replica.compute`` for many samples; ``with backend:`` closes it.

    Besides the methods, the trainer reads what each backend may offer, declared here with the
    defaults of a backend that offers none of it.
    """

    workers = 0
    wait_seconds = None   # seconds blocked waiting for workers, summed over runs (None: not measured)
    on_event = None       # on_event(name, **fields) hears of deaths, timeouts and recomputed samples
    reports_events = False  # whether this backend ever calls on_event

    def timeout(self, mode="train"):
        """Seconds a ``mode`` sample may run before its worker counts as hung; None: no watchdog."""
        return None

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
