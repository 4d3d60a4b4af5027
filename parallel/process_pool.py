"""ProcessBackend: persistent worker processes on multiprocessing Process + Pipe.

Built by hand rather than on ``multiprocessing.Pool`` (hangs when a worker dies) or
``concurrent.futures.ProcessPoolExecutor`` (marks itself broken, and on PyPy fails at
submit() under spawn/forkserver). The parent waits with
``multiprocessing.connection.wait`` on every worker's pipe *and* process sentinel, so a
result and a death are noticed the moment they happen.

Each ``run`` splits the indices into contiguous chunks, one per worker, and sends each
worker the parameter buffer with its chunk. Workers answer sample by sample, so the
parent always knows which sample a worker was computing when it died: that one is
counted against the sample, the worker is replaced, and only its unanswered samples are
sent to the replacement. A sample that kills ``max_crashes`` workers in a row raises
``SampleCrashError``; an exception in a worker raises ``WorkerError`` with the worker's
traceback. Either way, and on Ctrl-C, every worker is stopped before the error leaves
``run``.
"""
import collections
import multiprocessing
import os
import platform
import sys
import time
import warnings
from multiprocessing.connection import wait

import cloudpickle

from .backend import Backend
from .errors import SampleCrashError, WorkerError
from .replica import SampleResult
from .rss import rss_bytes
from .worker import worker_main

WAIT_SECONDS = 0.5
FORKSERVER_PRELOAD = ["parallel.worker", "parallel.replica", "minigrad", "minigrad.nn", "numpy", "cloudpickle"]


def available_cpus():
    """CPUs this process may run on, by psutil (the affinity mask when the OS has one)."""
    import psutil
    try:
        return len(psutil.Process().cpu_affinity())
    except (AttributeError, NotImplementedError, OSError):
        return psutil.cpu_count() or 1


def default_start_method():
    """forkserver where it exists (fast restarts, no fork-only state), else spawn."""
    methods = multiprocessing.get_all_start_methods()
    return "forkserver" if "forkserver" in methods else "spawn"


def _size_pypy_nursery():
    """Give PyPy workers an 8 MB young generation unless PYPY_GC_NURSERY says otherwise.

    PyPy sizes the nursery from the cache size the CPU reports; some virtual CPUs report
    hundreds of MB, and a worker then grows past 1 GB before its first major collection
    (measured: 1.4 GB, against 133 MB and 25% faster with 8 MB). Workers (and the
    forkserver they fork from) read it when they start; this process is unaffected.
    """
    if platform.python_implementation() == "PyPy":
        os.environ.setdefault("PYPY_GC_NURSERY", "8MB")


def split_contiguous(n, parts):
    """``range(n)`` cut into ``parts`` contiguous ranges whose sizes differ by at most one."""
    base, extra = divmod(n, parts)
    out, start = [], 0
    for i in range(parts):
        size = base + (1 if i < extra else 0)
        out.append(range(start, start + size))
        start += size
    return out


def _release(process):
    """Free a finished process's sentinel and pipe descriptors now rather than at garbage collection."""
    try:
        process.close()
    except ValueError:  # still running (a kill that did not take): leave it to the OS
        pass


class _Slot:
    """One worker process, its pipe, and the positions of the current job it still owes."""

    def __init__(self, worker_id, process, conn):
        self.worker_id, self.process, self.conn = worker_id, process, conn
        self.pid = process.pid
        self.pending = collections.deque()
        self.ready = False
        self.dead = False

    def rss(self):
        return rss_bytes(self.pid)


class ProcessBackend(Backend):
    """``workers`` persistent processes, each holding one replica of the model."""

    def __init__(self, workers, start_method=None, max_crashes=3, log=None, sample_timeout=None):
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise ValueError(f"Expected workers to be a positive integer, got {workers!r}")
        if isinstance(max_crashes, bool) or not isinstance(max_crashes, int) or max_crashes < 1:
            raise ValueError(f"Expected max_crashes to be a positive integer, got {max_crashes!r}")
        cpus = available_cpus()
        if workers > cpus:
            warnings.warn(f"{workers} workers on {cpus} CPUs: they will share the CPUs", RuntimeWarning,
                          stacklevel=2)
        method = start_method or default_start_method()
        if method not in multiprocessing.get_all_start_methods():
            raise ValueError(f"Expected a start method in {multiprocessing.get_all_start_methods()}, got {method!r}")
        self.workers = workers
        self.start_method = method
        self.max_crashes = max_crashes
        self.sample_timeout = sample_timeout
        self.log = log or (lambda line: print(line, file=sys.stderr, flush=True))
        self.restarts = 0
        self._ctx = multiprocessing.get_context(method)
        if method == "forkserver":
            self._ctx.set_forkserver_preload(FORKSERVER_PRELOAD)
        self._slots = []
        self._payload = None
        self._datasets = {}
        self._job = 0
        self._current = None
        self._crashes = {}
        self._start_failures = 0

    # ---- lifecycle ----

    def start(self, payload):
        _size_pypy_nursery()
        self._payload = cloudpickle.dumps(payload)
        self._datasets = {}
        self._start_all()

    def _start_all(self):
        for i in range(self.workers):  # all start before any is fed; close() sees each one at once
            self._slots.append(self._launch(i))
        for slot in self._slots:
            self._introduce(slot)

    def _launch(self, worker_id):
        parent_conn, child_conn = self._ctx.Pipe(duplex=True)
        process = self._ctx.Process(target=worker_main, args=(child_conn, worker_id), daemon=True,
                                    name=f"minigrad-worker-{worker_id}")
        process.start()
        child_conn.close()
        return _Slot(worker_id, process, parent_conn)

    def _introduce(self, slot):
        try:
            slot.conn.send(("payload", self._payload))
            for key, blob in self._datasets.items():
                slot.conn.send(("dataset", key, blob))
        except OSError:
            slot.dead = True  # noticed and handled by the next wait
        return slot

    def add_dataset(self, key, dataset):
        blob = cloudpickle.dumps(dataset)
        self._datasets[key] = blob
        for slot in self._slots:
            try:
                slot.conn.send(("dataset", key, blob))
            except OSError:
                slot.dead = True

    def close(self, grace=1.0):
        slots, self._slots = self._slots, []
        for slot in slots:
            slot.conn.close()  # EOF: an idle worker exits at once
        deadline = time.monotonic() + grace
        for slot in slots:
            slot.process.join(max(0.0, deadline - time.monotonic()))
        for slot in slots:
            if slot.process.is_alive():
                slot.process.terminate()
        for slot in slots:
            slot.process.join(1.0)
            if slot.process.is_alive():
                slot.process.kill()
                slot.process.join(1.0)
            _release(slot.process)

    def memory(self):
        return [slot.rss() for slot in self._slots]

    def pids(self):
        return [slot.pid for slot in self._slots]

    # ---- one job ----

    def run(self, mode, params, key, indices, epoch=0):
        indices = list(indices)
        if not indices:
            return []
        if self._payload is None:
            raise RuntimeError("ProcessBackend.run before start")
        if not self._slots:
            self._start_all()  # closed after an error or an interruption: a fresh pool
        self._job += 1
        self._current = (self._job, mode, params, key, indices, epoch)
        results = [None] * len(indices)
        try:
            self._replace_dead_idle()
            for slot, positions in zip(self._slots, split_contiguous(len(indices), len(self._slots))):
                if positions:
                    self._assign(slot, positions)
            remaining = len(indices)
            while remaining:
                remaining -= self._wait_once(results)
        except BaseException:
            self.close(grace=0.2)
            raise
        return results

    def _assign(self, slot, positions):
        job, mode, params, key, indices, epoch = self._current
        slot.pending = collections.deque(positions)
        try:
            slot.conn.send(("run", job, mode, params, key, [indices[p] for p in positions], epoch))
        except OSError:
            slot.dead = True

    def _wait_once(self, results):
        """Handle whatever is ready (results, errors, deaths); return how many samples finished."""
        owner = {}
        for slot in self._slots:
            owner[slot.conn] = slot
            owner[slot.process.sentinel] = slot
        done = 0
        for obj in wait(list(owner), timeout=WAIT_SECONDS):
            slot = owner[obj]
            if slot not in self._slots:
                continue  # already replaced in this round
            done += self._drain(slot, results)
            if slot.dead or not slot.process.is_alive():
                self._replace(slot)
        for slot in list(self._slots):
            if slot.dead:  # a failed send marks a slot without waking wait()
                self._replace(slot)
        return done

    def _drain(self, slot, results):
        done = 0
        while not slot.dead:
            try:
                if not slot.conn.poll():
                    break
                msg = slot.conn.recv()
            except (EOFError, OSError):
                slot.dead = True
                break
            done += self._handle(slot, msg, results)
        return done

    def _handle(self, slot, msg, results):
        kind = msg[0]
        if kind == "sample":
            if msg[1] != self._current[0]:
                return 0  # a late answer to an abandoned job
            result = SampleResult(*msg[2:])
            position = slot.pending.popleft()
            key, indices = self._current[3], self._current[4]
            if indices[position] != result.index:
                raise RuntimeError(f"Worker {slot.worker_id} answered sample {result.index}, "
                                   f"expected {indices[position]}")
            results[position] = result
            self._crashes.pop((key, result.index), None)
            return 1
        if kind == "ready":
            slot.ready = True
            self._start_failures = 0
            return 0
        if kind == "error":
            _, job, index, remote = msg
            where = f" at sample {index}" if index is not None else " while loading the payload"
            raise WorkerError(f"Worker {slot.worker_id} (pid {slot.pid}) raised an exception{where}",
                              remote)
        raise RuntimeError(f"Unknown message {kind!r} from worker {slot.worker_id}")

    def _replace_dead_idle(self):
        for slot in list(self._slots):
            if slot.dead or not slot.process.is_alive():
                self._drain(slot, [])
                self._replace(slot)

    def _replace(self, slot):
        """Start a new worker in ``slot``'s place and give it the samples the dead one owed."""
        slot.process.join(1.0)
        exitcode = slot.process.exitcode
        slot.conn.close()
        lost = list(slot.pending)
        where = ""
        if not slot.ready:  # it died loading the payload: no sample is to blame
            self._start_failures += 1
            if self._start_failures >= self.max_crashes:
                raise WorkerError(f"Worker {slot.worker_id} died before it was ready "
                                  f"{self._start_failures} times in a row (last exit code {exitcode})")
        elif lost:
            key, indices = self._current[3], self._current[4]
            index = indices[lost[0]]
            crashes = self._crashes[(key, index)] = self._crashes.get((key, index), 0) + 1
            if crashes >= self.max_crashes:
                raise SampleCrashError(index, crashes, exitcode)
            where = f" at sample {index}"
        self.log(f"worker {slot.worker_id} (pid {slot.pid}) died with exit code {exitcode}{where}; "
                 f"restarting it" + (f" and recomputing {len(lost)} samples" if lost else ""))
        self.restarts += 1
        new = self._launch(slot.worker_id)
        self._slots[self._slots.index(slot)] = new
        _release(slot.process)
        self._introduce(new)
        if lost:
            self._assign(new, lost)
