"""ProcessBackend: persistent worker processes that take a step's samples themselves.

Built by hand rather than on ``multiprocessing.Pool`` (hangs when a worker dies) or
``concurrent.futures.ProcessPoolExecutor`` (marks itself broken, and on PyPy fails at
submit() under spawn/forkserver), and without a message per sample: a message costs the
parent a wake-up, and the parent is one process however many workers there are. How a
step flows::

    parent                                                |  worker k (one process each)
                                                          |
    params block  <- the parameters, once per step        |  (shared memory, mapped by all)
    board  <- the job, under the board's lock: indices,   |
              n, parameter version, claimed = 0           |
    wake-up semaphore, released once per idle worker -----+--> wakes; under the lock: mark
                                                          |    its last position done, claim
                                                          |    the next (a requeued one first);
                                                          |    heartbeat slot <- (position, now)
                                                          |    copy the params block into the
                                                          |    model if the version is new;
                                                          |    forward, loss, backward;
    gradient slab <---------------------------------------+--- gradient -> slab row ``position``
    records <---------------------------------------------+--- loss, prediction, seconds, worker
                                                          |    ... claims again; with none left,
                                                          |    sleeps on the semaphore
    wait(pipes + process sentinels, until a deadline) <---+--- StepDone from whoever finished
      StepDone -> the job is done: read the records       |    the last position
      sentinel -> worker died: replace it; under the      |
                  lock, requeue what it had claimed       |
                  (``board.recover``)                     |
      deadline -> a heartbeat older than sample_timeout:  |
                  SIGKILL that worker, as above           |
      Failed(traceback) -> WorkerError, stop all          |
    the trainer sums slab rows 0..n-1 in batch order      |

A worker holds one sample at a time and claims the next only when it is done, so a slow
or oversubscribed worker never holds samples the others could take, and whoever computes
a sample, its gradient lands in the row of its position in the batch: the reduction, and
so every bit, is the same for any number of workers. The parent wakes once per step
(plus once per death), whatever the batch size. The pipes carry the payload, datasets,
block handles and the end of each job. A sample that kills or hangs ``max_crashes``
workers in a row raises ``SampleCrashError`` / ``SampleTimeoutError``; an exception in a
worker raises ``WorkerError`` with the worker's traceback. Either way, and on Ctrl-C,
every worker is stopped before the error leaves ``run``.

The parent owns the shared blocks (board, parameters, slab, datasets placed by
``add_dataset``) and removes them on every way out (see ``parallel.shared_blocks``).
"""
import math
import multiprocessing
import os
import select
import signal
import sys
import time
import warnings
from multiprocessing.reduction import ForkingPickler


from minigrad.checks import positive_int

from . import board, pickling
from .backend import Backend, Results, SampleCrashes, SampleTimeout
from .errors import LossTypeError, SampleCrashError, SampleTimeoutError, WorkerError
from .protocol import AddDataset, Failed, LoadPayload, Prediction, Ready, StepDone, UseBlocks
from .rss import rss_bytes
from .shared_blocks import SharedBlock, SharedDataset
from .worker import worker_main

WAIT_SECONDS = 0.5
LOCK_RETRY_SECONDS = 0.001
FORKSERVER_PRELOAD = ["parallel.worker", "parallel.board", "parallel.replica", "parallel.shared_blocks", "minigrad",
                      "minigrad.nn", "numpy", "cloudpickle"]


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


def _release(process):
    """Free a finished process's sentinel and pipe descriptors now rather than at garbage collection."""
    try:
        process.close()
    except ValueError:  # still running (a kill that did not take): leave it to the OS
        pass


class _Slot:
    """One worker process and its pipe; its heartbeat is slot ``worker_id`` of the board's header."""

    def __init__(self, worker_id, process, conn):
        self.worker_id, self.process, self.conn = worker_id, process, conn
        self.pid = process.pid
        self.ready = False
        self.dead = False
        self.timed_out = None  # the timeout (seconds) it was killed for

    def rss(self):
        return rss_bytes(self.pid)


class _Job:
    """One ``run``: the samples, and the predictions that came through the pipes."""

    def __init__(self, number, mode, key, indices, epoch, version, limit):
        self.number, self.mode, self.key, self.indices = number, mode, key, indices
        self.epoch, self.version = epoch, version
        self.limit = limit  # seconds a sample may run, fixed when the job starts (None: no watchdog)
        self.predictions = {}  # position -> a prediction that is not a number
        self.finished = False  # every position done: StepDone came (or a death's repair found so)


class ProcessBackend(Backend):
    """``workers`` persistent processes, each holding one replica of the model.

    ``sample_timeout``: seconds a sample may run before its worker is taken for hung,
    killed and replaced (None: the larger of 30 s and 100 times the median of recent
    samples; 0: never). ``on_event(name, **fields)`` hears of every death, timeout,
    replacement and recomputed sample (for a timeline).
    """

    reports_events = True

    def __init__(self, workers, start_method=None, max_crashes=3, log=None, sample_timeout=None, on_event=None):
        positive_int("workers", workers)
        self.crashes = SampleCrashes(max_crashes)  # checks max_crashes
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
        self.wakeups = 0  # times the parent woke while waiting for a job
        self._ctx = multiprocessing.get_context(method)
        if method == "forkserver":
            self._ctx.set_forkserver_preload(FORKSERVER_PRELOAD)
        self._slots = []
        self._poller = None  # select.poll of every worker's pipe and sentinel, made again when a worker changes
        self._polled = {}  # file descriptor -> (slot, is the pipe)
        self._payload = None
        self._datasets = {}  # key -> (number, blob, SharedDataset or None)
        self._header = self._records = self._params = self._slab = None
        self._wake = None
        self._version = 0
        self._job = 0
        self._start_failures = 0

    # ---- lifecycle ----

    def start(self, payload):
        self._payload = pickling.dumps(payload)
        self._datasets = {}
        self._start_all()

    def _start_all(self):
        self._header = board.Header.create(self.workers)
        self._wake = self._ctx.Semaphore(0)
        for i in range(self.workers):  # all start before any is fed; close() sees each one at once
            self._slots.append(self._launch(i))
        for slot in self._slots:
            self._introduce(slot)

    def _launch(self, worker_id):
        self._header.reset_slot(worker_id)
        parent_conn, child_conn = self._ctx.Pipe(duplex=True)
        process = self._ctx.Process(target=worker_main, daemon=True, name=f"minigrad-worker-{worker_id}",
                                    args=(child_conn, worker_id, self._header.block.handle, self.workers, self._wake))
        process.start()
        child_conn.close()
        return _Slot(worker_id, process, parent_conn)

    def _introduce(self, slot):
        messages = [LoadPayload(self._payload)]
        messages += [AddDataset(key, number, blob) for key, (number, blob, _) in self._datasets.items()]
        if self._params is not None:
            messages.append(self._blocks_message())
        for msg in messages:
            self._send(slot, msg)
        return slot

    def _send(self, slot, msg):
        data = ForkingPickler.dumps(msg)  # what Connection.send does, counted
        self.bytes_sent += len(data)
        words = self._header.words
        words[self._header.slot(slot.worker_id, board.MESSAGES)] += 1  # counted first: the worker waits for it
        try:
            slot.conn.send_bytes(data)
        except OSError:
            slot.dead = True  # noticed and handled by the next wait

    def add_dataset(self, key, dataset):
        """Send ``dataset`` to every worker once; a ``minigrad.data.Dataset`` goes into shared memory."""
        from minigrad.data import Dataset
        shared = SharedDataset.of(dataset) if type(dataset) is Dataset else None
        blob = pickling.dumps(shared if shared is not None else dataset, "the dataset")
        self._forget_dataset(key)
        number = 1 + max((n for n, _, _ in self._datasets.values()), default=-1)
        self._datasets[key] = (number, blob, shared)
        for slot in self._slots:
            self._send(slot, AddDataset(key, number, blob))

    def _forget_dataset(self, key):
        _, _, shared = self._datasets.pop(key, (None, None, None))
        if shared is not None:
            shared.release()

    def close(self, grace=1.0):
        """Stop every worker and remove every shared block (the datasets too)."""
        self._stop_workers(grace)
        for key in list(self._datasets):
            self._forget_dataset(key)
        self._payload = None

    def _stop_workers(self, grace=1.0):
        """Stop every worker and remove the board, the parameter block and the slab; the payload
        and the datasets stay, so the next ``run`` starts a fresh pool (after an error or a signal)."""
        slots, self._slots = self._slots, []
        self._poller = None
        if self._header is not None:
            self._header.words[board.SHUTDOWN] = 1
            for _ in slots:
                self._wake.release()  # an idle worker wakes, reads the shutdown word and exits
        for slot in slots:
            slot.conn.close()  # EOF: a worker waiting to be stopped exits at once
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
        for block in (self._header, self._records, self._params, self._slab):
            if block is not None:
                block.release()
        self._header = self._records = self._params = self._slab = None
        self._wake = None

    def memory(self):
        return [slot.rss() for slot in self._slots]

    def pids(self):
        return [slot.pid for slot in self._slots]

    # ---- the shared blocks ----

    def _blocks_message(self):
        return UseBlocks(self._params.handle, self._slab.handle if self._slab is not None else None,
                         self._records.block.handle)

    def _prepare_blocks(self, params, rows, n):
        """Write ``params`` into the parameter block; grow the blocks (and tell the workers) when needed."""
        import numpy as np
        values = params if isinstance(params, np.ndarray) else np.frombuffer(params, dtype=np.float64)
        size = len(values)
        grow_params = self._params is None or self._params.array.shape != (size,)
        grow_slab = rows and (self._slab is None or self._slab.array.shape[0] < rows or
                              self._slab.array.shape[1] != size)
        grow_records = self._records is None or self._records.capacity < n
        if grow_params or grow_slab or grow_records:
            old = [b for b, grow in ((self._params, grow_params), (self._slab, grow_slab),
                                     (self._records, grow_records)) if grow and b is not None]
            if grow_params:
                self._params = SharedBlock.create((size,))
            if grow_slab:
                self._slab = SharedBlock.create((rows, size))
            if grow_records:
                self._records = board.Records.create(max(n, 64))
            for slot in self._slots:
                self._send(slot, self._blocks_message())
            for block in old:
                block.release()  # workers map the new ones before they claim again
        self._params.array[:] = values
        self._version += 1

    # ---- one job ----

    def run(self, mode, params, key, indices, epoch=0):
        indices = list(indices)
        if not indices:
            return Results()
        if self._payload is None:
            raise RuntimeError("ProcessBackend.run before start")
        try:
            if not self._slots:
                self._start_all()  # stopped after an error or an interruption: a fresh pool
            n = len(indices)
            self._prepare_blocks(params, n if mode == "train" else 0, n)
            self._job += 1
            job = _Job(self._job, mode, key, indices, epoch, self._version, self.timeout(mode))
            self._lock_board(job)
            try:
                wake = board.publish(self._header, self._records, job.number, mode, self._datasets[key][0], indices,
                                     epoch, job.version)
            finally:
                self._header.unlock()
            for _ in range(wake):
                self._wake.release()
            while not job.finished or len(job.predictions) < self._other_predictions(n):
                self._wait_once(job)
        except BaseException:
            self._stop_workers(grace=0.2)
            raise
        self.crashes.completed(key, indices)
        return self._results(job)

    def _other_predictions(self, n):
        if self._records is None:
            return 0
        return board.read_ints(self._records.prediction_kind, n).count(board.PREDICTION_OTHER)

    def _results(self, job):
        records, n = self._records, len(job.indices)
        loss, started, seconds = (board.read_floats(a, n) for a in (records.loss, records.started, records.seconds))
        workers, kinds, ints = (board.read_ints(a, n) for a in (records.worker, records.prediction_kind,
                                                              records.prediction_int))
        if kinds.count(board.PREDICTION_INT) == n:
            predictions = ints
        else:
            floats = board.read_floats(records.prediction_float, n)
            predictions = [ints[p] if kind == board.PREDICTION_INT else floats[p] if kind == board.PREDICTION_FLOAT
                           else bool(ints[p]) if kind == board.PREDICTION_BOOL else job.predictions[p]
                           for p, kind in enumerate(kinds)]
        self.watchdog.record_all(job.mode, seconds)
        grads = self._slab.array[:n] if job.mode == "train" else None
        return Results(job.indices, loss, predictions, grads, seconds, workers, started)

    def _wait_once(self, job):
        """Handle whatever is ready (the end of the job, errors, deaths, overdue samples)."""
        if self._poller is None:
            self._poller = select.poll()
            self._polled = {}
            for slot in self._slots:
                for fd, is_pipe in ((slot.conn.fileno(), True), (slot.process.sentinel, False)):
                    self._poller.register(fd, select.POLLIN)
                    self._polled[fd] = (slot, is_pipe)
        started = time.perf_counter()
        ready = self._poller.poll(math.ceil(1000 * self._seconds_to_deadline(job)))
        self.wait_seconds += time.perf_counter() - started
        self.wakeups += 1
        for fd, _ in ready:
            slot, is_pipe = self._polled[fd]
            if slot not in self._slots:
                continue  # already replaced in this round
            if is_pipe:
                self._receive(slot, job)  # one message; poll reports the pipe again if there is more
            else:  # the process ended: take what it sent before it died
                self._drain(slot, job)
                slot.dead = True
        self._kill_overdue(job)
        if any(slot.dead for slot in self._slots):  # a failed send marks a slot without waking poll
            self._recover(job)

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
        if isinstance(msg, StepDone):
            if job is not None and msg.job == job.number:
                job.finished = True
        elif isinstance(msg, Prediction):
            if job is not None and msg.job == job.number:
                job.predictions[msg.position] = msg.value
        elif isinstance(msg, Ready):
            slot.ready = True
            self._start_failures = 0
        elif isinstance(msg, Failed):
            if msg.mistake:
                raise LossTypeError(msg.mistake)
            where = f" at sample {msg.index}" if msg.index is not None else " while loading the payload"
            raise WorkerError(f"Worker {slot.worker_id} (pid {slot.pid}) raised an exception{where}",
                              msg.traceback)
        else:
            raise RuntimeError(f"Unknown message {type(msg).__name__} from worker {slot.worker_id}")

    # ---- the board's lock, for the parent ----

    def _lock_board(self, job):
        """Take the board's lock without ever blocking on it: a worker stopped while holding it
        is found by the watchdog (its heartbeat says it is claiming) and killed."""
        while not self._header.try_lock():
            time.sleep(LOCK_RETRY_SECONDS)
            if job is not None:
                self._kill_overdue(job)
            for slot in self._slots:
                if not slot.dead and not slot.process.is_alive():
                    slot.dead = True

    # ---- the watchdog ----

    def timeout(self, mode):
        """Seconds a ``mode`` sample may run (``SampleTimeout``); None when off."""
        return self.watchdog.limit(mode)

    def _heartbeats(self):
        """``(slot, state, since)`` of every live worker that is computing or claiming."""
        header = self._header
        words, since = header.words, header.since
        for slot in self._slots:
            state = words[header.slot(slot.worker_id, board.STATE)]
            if not slot.dead and state in (board.RUNNING, board.CLAIMING):
                yield slot, state, since[slot.worker_id]

    def _seconds_to_deadline(self, job):
        limit = job.limit
        if limit is None:
            return WAIT_SECONDS
        started = [since for _, _, since in self._heartbeats()]
        if not started:
            return WAIT_SECONDS
        return min(WAIT_SECONDS, max(0.0, min(started) + limit - time.monotonic()))

    def _kill_overdue(self, job):
        limit = job.limit
        if limit is None:
            return
        now = time.monotonic()
        for slot, state, since in list(self._heartbeats()):
            if now - since <= limit or slot.dead:
                continue
            if state == board.CLAIMING:  # waiting for the board's lock longer than a sample may run
                holder = board.lock_holder(self._header.fd)
                stuck = next((s for s in self._slots if s.pid == holder), None)
                if stuck is None and now - since <= 2 * limit:
                    continue  # a free lock (its holder was just killed?) is taken at once; else the claimer is stuck
                stuck = stuck or slot
                if not stuck.dead:
                    self._kill(stuck, limit, None, now - since)
            else:
                position = self._header.words[self._header.slot(slot.worker_id, board.POSITION)]
                self._kill(slot, limit, job.indices[position] if 0 <= position < len(job.indices) else None,
                           now - since)

    def _kill(self, slot, limit, index, seconds):
        self._event("timeout", worker=slot.worker_id, pid=slot.pid, index=index, seconds=seconds)
        slot.timed_out = limit
        try:
            os.kill(slot.pid, signal.SIGKILL)  # works on a stopped process too
        except ProcessLookupError:
            pass
        slot.dead = True

    # ---- deaths ----

    def _recover(self, job):
        """Replace every dead worker; under the board's lock, put back what they had claimed."""
        for slot in self._slots:
            if slot.dead:
                slot.process.join(1.0)
                if slot.process.is_alive():  # a broken pipe, but the process lives on: end it
                    slot.process.kill()
                    slot.process.join(1.0)
        header, lost, wake = self._header, [], 0
        if job is not None:
            self._lock_board(job)
            try:
                live = [slot.worker_id for slot in self._slots if not slot.dead]
                lost = board.recover(header, self._records, live, self._wake.get_value())
                for position in lost:  # before any worker can take it again
                    self._event("recompute", index=job.indices[position], position=position)
                wake = board.wakes(header.words, len(lost))
                job.finished = header.words[board.FINISHED] == header.words[board.N]  # its ringer may be the dead
            finally:
                header.unlock()
        for slot in [s for s in self._slots if s.dead]:
            position = None
            if header.words[header.slot(slot.worker_id, board.STATE)] == board.RUNNING:
                position = header.words[header.slot(slot.worker_id, board.POSITION)]
            self._replace(slot, job, position if position in lost else None)
        for _ in range(wake):
            self._wake.release()

    def _replace(self, slot, job, position):
        """Start a new worker in ``slot``'s place; ``position`` is the sample it was computing."""
        exitcode = slot.process.exitcode
        slot.conn.close()
        where = ""
        if slot.timed_out is None and not slot.ready:  # it died loading the payload: no sample is to blame
            self._start_failures += 1
            if self._start_failures >= self.max_crashes:
                raise WorkerError(f"Worker {slot.worker_id} died before it was ready "
                                  f"{self._start_failures} times in a row (last exit code {exitcode})")
        elif position is not None:
            index = job.indices[position]
            crashes = self.crashes.crashed(job.key, index)
            if self.crashes.limit_reached(crashes):
                if slot.timed_out is not None:
                    raise SampleTimeoutError(index, crashes, slot.timed_out)
                raise SampleCrashError(index, crashes, exitcode)
            where = f" at sample {index}"
        how = (f"ran past the {slot.timed_out:g} s sample timeout{where} and was killed" if slot.timed_out is not None
               else f"died with exit code {exitcode}{where}")
        self.log(f"worker {slot.worker_id} (pid {slot.pid}) {how}; restarting it"
                 + (" and recomputing that sample" if position is not None else ""))
        self._event("death", worker=slot.worker_id, pid=slot.pid, exitcode=exitcode,
                    timeout=slot.timed_out is not None)
        self.restarts += 1
        new = self._launch(slot.worker_id)
        self._slots[self._slots.index(slot)] = new
        self._poller = None
        _release(slot.process)
        self._introduce(new)
        self._event("replacement", worker=new.worker_id, pid=new.pid)

    def _event(self, name, **fields):
        if self.on_event is not None:
            self.on_event(name, **fields)
