"""ProcessBackend: persistent worker processes on multiprocessing Process + Pipe + shared memory.

Built by hand rather than on ``multiprocessing.Pool`` (hangs when a worker dies) or
``concurrent.futures.ProcessPoolExecutor`` (marks itself broken, and on PyPy fails at
submit() under spawn/forkserver). How a step flows::

    parent                                                 |  worker k (one process each)
                                                           |
    params block  <- the parameters, once per step         |  (shared memory, mapped by all)
    queue of positions 0..n-1 of the batch                 |
    each idle worker: Compute(index, position, version) ---+--> copy the params block into the
                                                           |    model if version changed; forward,
                                                           |    loss, backward; gradient ->
    gradient slab <----------------------------------------+--- slab row ``position``
    wait(pipes + process sentinels, until a deadline) <----+--- Computed(position, loss, ...)
      Computed -> results[position]; that worker takes     |
                  the next position from the queue         |
      sentinel -> worker died: replace it, requeue the     |
                  one sample it owed                       |
      deadline -> a sample ran past sample_timeout: kill   |
                  its worker (SIGKILL), replace, requeue   |
      Failed(traceback) -> WorkerError, stop all           |
    the trainer sums slab rows 0..n-1 in batch order       |

A worker takes one sample at a time and the next as soon as it answers, so a slow or
oversubscribed worker never leaves the others idle, and whoever computes a sample, its
gradient lands in the row of its position in the batch: the reduction, and so every
bit, is the same for any number of workers. The pipes carry only indices, positions,
losses, predictions and timings. A sample that kills or hangs ``max_crashes`` workers in
a row raises ``SampleCrashError`` / ``SampleTimeoutError``; an exception in a worker
raises ``WorkerError`` with the worker's traceback. Either way, and on Ctrl-C, every
worker is stopped before the error leaves ``run``.

The parent owns the shared blocks (parameters, slab, datasets placed by
``add_dataset``) and removes them on every way out (see ``parallel.shared_blocks``).
"""
import collections
import multiprocessing
import os
import signal
import sys
import time
import warnings
from multiprocessing.connection import wait
from multiprocessing.reduction import ForkingPickler

import cloudpickle

from minigrad.checks import positive_int

from .backend import Backend, SampleTimeout
from .errors import SampleCrashError, SampleTimeoutError, WorkerError
from .protocol import AddDataset, Compute, Computed, Failed, LoadPayload, Ready, UseBlocks
from .replica import SampleResult
from .shared_blocks import SharedBlock, SharedDataset
from .rss import rss_bytes
from .worker import worker_main

WAIT_SECONDS = 0.5
FORKSERVER_PRELOAD = ["parallel.worker", "parallel.replica", "parallel.shared_blocks", "minigrad", "minigrad.nn",
                      "numpy", "cloudpickle"]


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
    """One worker process, its pipe, and the sample it is computing (a position in the batch)."""

    def __init__(self, worker_id, process, conn):
        self.worker_id, self.process, self.conn = worker_id, process, conn
        self.pid = process.pid
        self.position = None  # the sample it owes, or None when idle
        self.given_at = None  # when it started on that sample (None until it is ready)
        self.ready = False
        self.dead = False
        self.timed_out = None  # the timeout (seconds) it was killed for

    def rss(self):
        return rss_bytes(self.pid)


class _Job:
    """One ``run``: the samples, the positions still to hand out, and the results so far."""

    def __init__(self, number, mode, key, indices, epoch, version, limit):
        self.number, self.mode, self.key, self.indices = number, mode, key, indices
        self.epoch, self.version = epoch, version
        self.limit = limit  # seconds a sample may run, fixed when the job starts (None: no watchdog)
        self.queue = collections.deque(range(len(indices)))
        self.results = [None] * len(indices)
        self.remaining = len(indices)

    def task(self, position):
        return Compute(self.number, self.mode, self.key, self.indices[position], position, self.epoch, self.version)


class ProcessBackend(Backend):
    """``workers`` persistent processes, each holding one replica of the model.

    ``sample_timeout``: seconds a sample may run before its worker is taken for hung,
    killed and replaced (None: the larger of 30 s and 100 times the median of recent
    samples; 0: never). ``on_event(name, **fields)`` hears of every death, timeout,
    replacement and recomputed sample (for a timeline).
    """

    def __init__(self, workers, start_method=None, max_crashes=3, log=None, sample_timeout=None, on_event=None):
        positive_int("workers", workers)
        positive_int("max_crashes", max_crashes)
        self.watchdog = SampleTimeout(sample_timeout)
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
        self.log = log or (lambda line: print(line, file=sys.stderr, flush=True))
        self.on_event = on_event
        self.restarts = 0
        self.bytes_sent = self.bytes_received = 0  # through the pipes, pickled
        self.wait_seconds = 0.0  # blocked waiting for workers
        self._ctx = multiprocessing.get_context(method)
        if method == "forkserver":
            self._ctx.set_forkserver_preload(FORKSERVER_PRELOAD)
        self._slots = []
        self._payload = None
        self._datasets = {}  # key -> (blob, SharedDataset or None)
        self._params = self._slab = None
        self._version = 0
        self._job = 0
        self._crashes = {}
        self._start_failures = 0

    # ---- lifecycle ----

    def start(self, payload):
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
        messages = [LoadPayload(self._payload)] + [AddDataset(key, blob) for key, (blob, _) in self._datasets.items()]
        if self._params is not None:
            messages.append(self._blocks_message())
        for msg in messages:
            self._send(slot, msg)
        return slot

    def _send(self, slot, msg):
        data = ForkingPickler.dumps(msg)  # what Connection.send does, counted
        self.bytes_sent += len(data)
        try:
            slot.conn.send_bytes(data)
        except OSError:
            slot.dead = True  # noticed and handled by the next wait

    def add_dataset(self, key, dataset):
        """Send ``dataset`` to every worker once; a ``minigrad.data.Dataset`` goes into shared memory."""
        from minigrad.data import Dataset
        shared = SharedDataset.of(dataset) if type(dataset) is Dataset else None
        blob = cloudpickle.dumps(shared if shared is not None else dataset)
        self._forget_dataset(key)
        self._datasets[key] = (blob, shared)
        for slot in self._slots:
            self._send(slot, AddDataset(key, blob))

    def _forget_dataset(self, key):
        _, shared = self._datasets.pop(key, (None, None))
        if shared is not None:
            shared.release()

    def close(self, grace=1.0):
        """Stop every worker and remove every shared block (the datasets too)."""
        self._stop_workers(grace)
        for key in list(self._datasets):
            self._forget_dataset(key)
        self._payload = None

    def _stop_workers(self, grace=1.0):
        """Stop every worker and remove the parameter block and the slab; the payload and the
        datasets stay, so the next ``run`` starts a fresh pool (after an error or a signal)."""
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
        for block in (self._params, self._slab):
            if block is not None:
                block.release()
        self._params = self._slab = None

    def memory(self):
        return [slot.rss() for slot in self._slots]

    def pids(self):
        return [slot.pid for slot in self._slots]

    # ---- the shared blocks ----

    def _blocks_message(self):
        return UseBlocks(self._params.handle, self._slab.handle if self._slab is not None else None)

    def _prepare_blocks(self, params, rows):
        """Write ``params`` into the parameter block; grow the blocks (and tell the workers) when needed."""
        import numpy as np
        values = params if isinstance(params, np.ndarray) else np.frombuffer(params, dtype=np.float64)
        size = len(values)
        grow_params = self._params is None or self._params.array.shape != (size,)
        grow_slab = rows and (self._slab is None or self._slab.array.shape[0] < rows or
                              self._slab.array.shape[1] != size)
        if grow_params or grow_slab:
            old = [b for b in ((self._params if grow_params else None), (self._slab if grow_slab else None)) if b]
            if grow_params:
                self._params = SharedBlock.create((size,))
            if grow_slab:
                self._slab = SharedBlock.create((rows, size))
            for slot in self._slots:
                self._send(slot, self._blocks_message())
            for block in old:
                block.release()  # workers map the new ones before their next sample
        self._params.array[:] = values
        self._version += 1

    # ---- one job ----

    def run(self, mode, params, key, indices, epoch=0):
        indices = list(indices)
        if not indices:
            return []
        if self._payload is None:
            raise RuntimeError("ProcessBackend.run before start")
        try:
            if not self._slots:
                self._start_all()  # stopped after an error or an interruption: a fresh pool
            self._prepare_blocks(params, len(indices) if mode == "train" else 0)
            self._job += 1
            job = _Job(self._job, mode, key, indices, epoch, self._version, self.timeout(mode))
            self._replace_dead_idle(job)
            for slot in self._slots:
                self._give_next(slot, job)
            while job.remaining:
                self._wait_once(job)
        except BaseException:
            self._stop_workers(grace=0.2)
            raise
        return job.results

    def _give_next(self, slot, job):
        if slot.position is not None or not job.queue or slot.dead:
            return
        slot.position = job.queue.popleft()
        slot.given_at = time.monotonic() if slot.ready else None
        self._send(slot, job.task(slot.position))

    def _wait_once(self, job):
        """Handle whatever is ready (results, errors, deaths, overdue samples)."""
        owner = {}
        for slot in self._slots:
            owner[slot.conn] = slot
            owner[slot.process.sentinel] = slot
        started = time.perf_counter()
        ready = wait(list(owner), timeout=self._seconds_to_deadline(job))
        self.wait_seconds += time.perf_counter() - started
        for obj in ready:
            slot = owner[obj]
            if slot not in self._slots:
                continue  # already replaced in this round
            if obj is slot.conn:
                self._receive(slot, job)  # one message; wait() reports the pipe again if there is more
            else:  # the process ended: take what it sent before it died, then replace it
                self._drain(slot, job)
                slot.dead = True
            if slot.dead:
                self._replace(slot, job)
        self._kill_overdue(job)
        for slot in list(self._slots):
            if slot.dead:  # a failed send marks a slot without waking wait()
                self._replace(slot, job)

    def _receive(self, slot, job):
        try:
            data = slot.conn.recv_bytes()
        except (EOFError, OSError):
            slot.dead = True
            return
        self.bytes_received += len(data)
        self._handle(slot, ForkingPickler.loads(data), job)

    def _drain(self, slot, job):
        """Every message still in ``slot``'s pipe."""
        while not slot.dead:
            try:
                if not slot.conn.poll():
                    break
            except (EOFError, OSError):
                slot.dead = True
                break
            self._receive(slot, job)

    def _handle(self, slot, msg, job):
        if isinstance(msg, Computed):
            if job is None or msg.job != job.number:
                return  # a late answer to an abandoned job
            if msg.position != slot.position or job.indices[msg.position] != msg.index:
                raise RuntimeError(f"Worker {slot.worker_id} answered sample {msg.index} at position "
                                   f"{msg.position}, expected position {slot.position}")
            grad = self._slab.array[msg.position] if job.mode == "train" else None
            job.results[msg.position] = SampleResult(msg.index, msg.loss, msg.prediction, grad, msg.seconds,
                                                     slot.worker_id, msg.started)
            job.remaining -= 1
            self.watchdog.record(job.mode, msg.seconds)
            self._crashes.pop((job.key, msg.index), None)
            slot.position = slot.given_at = None
            self._give_next(slot, job)
        elif isinstance(msg, Ready):
            slot.ready = True
            self._start_failures = 0
            if slot.position is not None:
                slot.given_at = time.monotonic()  # its clock starts now that the payload is loaded
        elif isinstance(msg, Failed):
            where = f" at sample {msg.index}" if msg.index is not None else " while loading the payload"
            raise WorkerError(f"Worker {slot.worker_id} (pid {slot.pid}) raised an exception{where}",
                              msg.traceback)
        else:
            raise RuntimeError(f"Unknown message {type(msg).__name__} from worker {slot.worker_id}")

    # ---- the watchdog ----

    def timeout(self, mode):
        """Seconds a ``mode`` sample may run (``SampleTimeout``); None when off."""
        return self.watchdog.limit(mode)

    def _seconds_to_deadline(self, job):
        limit = job.limit
        started = [s.given_at for s in self._slots if s.given_at is not None]
        if limit is None or not started:
            return WAIT_SECONDS
        return min(WAIT_SECONDS, max(0.0, min(started) + limit - time.monotonic()))

    def _kill_overdue(self, job):
        limit = job.limit
        if limit is None:
            return
        now = time.monotonic()
        for slot in list(self._slots):
            if slot.given_at is not None and now - slot.given_at > limit and slot in self._slots:
                self._event("timeout", worker=slot.worker_id, pid=slot.pid, index=job.indices[slot.position],
                            seconds=now - slot.given_at)
                slot.timed_out = limit
                try:
                    os.kill(slot.pid, signal.SIGKILL)  # works on a stopped process too
                except ProcessLookupError:
                    pass
                self._replace(slot, job)

    # ---- deaths ----

    def _replace_dead_idle(self, job):
        for slot in list(self._slots):
            if slot.dead or not slot.process.is_alive():
                self._drain(slot, None)
                self._replace(slot, job)

    def _replace(self, slot, job):
        """Start a new worker in ``slot``'s place and requeue the sample the old one owed."""
        slot.process.join(1.0)
        exitcode = slot.process.exitcode
        slot.conn.close()
        position, slot.position, slot.given_at = slot.position, None, None
        where = ""
        if slot.timed_out is None and not slot.ready:  # it died loading the payload: no sample is to blame
            self._start_failures += 1
            if self._start_failures >= self.max_crashes:
                raise WorkerError(f"Worker {slot.worker_id} died before it was ready "
                                  f"{self._start_failures} times in a row (last exit code {exitcode})")
        elif position is not None:
            index = job.indices[position]
            crashes = self._crashes[(job.key, index)] = self._crashes.get((job.key, index), 0) + 1
            if crashes >= self.max_crashes:
                if slot.timed_out is not None:
                    raise SampleTimeoutError(index, crashes, slot.timed_out)
                raise SampleCrashError(index, crashes, exitcode)
            where = f" at sample {index}"
            job.queue.appendleft(position)
        how = (f"ran past the {slot.timed_out:g} s sample timeout{where} and was killed" if slot.timed_out is not None
               else f"died with exit code {exitcode}{where}")
        self.log(f"worker {slot.worker_id} (pid {slot.pid}) {how}; restarting it"
                 + (" and recomputing that sample" if position is not None else ""))
        self._event("death", worker=slot.worker_id, pid=slot.pid, exitcode=exitcode,
                    timeout=slot.timed_out is not None)
        if position is not None:
            self._event("recompute", index=job.indices[position], position=position)
        self.restarts += 1
        new = self._launch(slot.worker_id)
        self._slots[self._slots.index(slot)] = new
        _release(slot.process)
        self._introduce(new)
        self._event("replacement", worker=new.worker_id, pid=new.pid)
        if job is not None:
            for idle in self._slots:
                self._give_next(idle, job)

    def _event(self, name, **fields):
        if self.on_event is not None:
            self.on_event(name, **fields)
