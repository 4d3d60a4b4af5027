"""The worker process: receive the payload once, then take samples from the board until told to stop.

Runs in a child started by ``ProcessBackend`` (forkserver or spawn: nothing here relies
on state inherited through fork). Its pipe brings the payload, the datasets and the shared
blocks (``parallel.protocol``); the samples it finds on the board (``parallel.board``).
In a loop it marks its last position done and claims the next in one locked section,
copies the parameter block into the model when the job's parameter version is new,
computes the sample, writes the gradient into the slab's row ``position`` and the loss and
prediction into the position's record, and claims again. With nothing left to claim it
sleeps on the pool's one wake-up semaphore; the worker that finished a job's last
position tells the parent (``StepDone``).

An exception in user code is sent back as ``Failed`` with its traceback, and the worker
waits for the parent to stop it. MemoryError is treated as a crash: the process exits
and the parent recomputes the sample elsewhere. The worker ignores SIGINT (a Ctrl-C
reaches the whole process group; the parent decides), never writes files, and exits on
its own when the parent goes away (EOF on the pipe, or a new parent pid) or sets the
board's shutdown word.
"""
import os
import signal
import sys
import traceback
from multiprocessing.reduction import ForkingPickler

from . import board, pickling
from .errors import LossTypeError
from .protocol import AddDataset, Failed, LoadPayload, Prediction, Ready, StepDone, UseBlocks

PARENT_CHECK_SECONDS = 0.5
EXIT_MEMORY_ERROR = 86
INT64 = range(-2 ** 63, 2 ** 63)


class _ParentGone(Exception):
    pass


class _Failed(Exception):
    """User code raised; the parent has the traceback and will stop this worker."""


class _Worker:
    """A replica, the worker's mappings of the shared blocks, and its hand on the board."""

    def __init__(self, conn, worker_id, header, wake):
        self.conn, self.worker_id, self.header, self.wake = conn, worker_id, header, wake
        self.words = header.words
        self.claims = board.Claims(header, worker_id)
        self.replica = None
        self.params = self.slab = self.records = None
        self.slab_rows = None
        self.version = None
        self.keys = {}
        self.received = 0  # messages read from the pipe (the parent counts those it sent)

    # ---- messages ----

    def read_messages(self):
        """Every message the parent has sent so far (its count is in this worker's slot). A message
        superseded by a later one (shared blocks the parent has grown again, a dataset sent again
        under its key) is skipped: the parent may already have removed what it names."""
        sent = self.claims.messages
        while self.words[sent] != self.received:
            pending = []
            while self.words[sent] != self.received:
                try:
                    pending.append(self.conn.recv())
                except (EOFError, OSError):
                    raise _ParentGone from None
                self.received += 1
            for i, msg in enumerate(pending):
                if not any(_supersedes(later, msg) for later in pending[i + 1:]):
                    try:
                        self.handle(msg)
                    except FileNotFoundError:  # removed meanwhile: its successor is already counted
                        if not isinstance(msg, (UseBlocks, AddDataset)):
                            raise

    def read_first(self):
        """The payload: the parent sends it as soon as the worker starts."""
        try:
            msg = self.conn.recv()
        except (EOFError, OSError):
            raise _ParentGone from None
        self.received += 1
        self.handle(msg)

    def handle(self, msg):
        if isinstance(msg, LoadPayload):
            from .replica import Replica
            self.replica = Replica(pickling.loads(msg.blob))
            self.conn.send(Ready(os.getpid()))
        elif isinstance(msg, AddDataset):
            self.replica.add_dataset(msg.key, pickling.loads(msg.blob))
            self.keys[msg.number] = msg.key
        elif isinstance(msg, UseBlocks):
            self.use_blocks(msg)
        else:
            raise ValueError(f"Unknown message {type(msg).__name__}")

    def use_blocks(self, msg):
        from .shared_blocks import SharedBlock
        self.release_blocks()
        self.version = None
        params = SharedBlock.attach(msg.params)
        slab = SharedBlock.attach(msg.slab) if msg.slab is not None else None
        self.records = board.Records.attach(msg.records)
        self.params, self.slab = params, slab
        self.slab_rows = slab.memory.buf.cast("d") if slab is not None else None

    def release_blocks(self):
        if self.slab_rows is not None:
            self.slab_rows.release()
        for block in (self.params, self.slab, self.records):
            if block is not None:
                block.release()
        self.params = self.slab = self.records = self.slab_rows = None

    # ---- samples ----

    def serve(self, parent):
        """Claim and compute until there is nothing left, sleep, and again; returns when told to stop."""
        words, claims, done = self.words, self.claims, None
        while not words[board.SHUTDOWN]:
            if self.replica is not None and self.records is not None:
                position, last, wake = claims.next(self.records, done, self.received)
                done = None
                for _ in range(wake):
                    self.wake.release()
                if last is not None:
                    self.conn.send_bytes(ForkingPickler.dumps(StepDone(last)))
                if position is not None and position >= 0:
                    self.compute(position)
                    done = position
                    continue
            if words[claims.messages] != self.received:
                self.read_messages()
                continue
            if self.wake.acquire(timeout=PARENT_CHECK_SECONDS):
                claims.woken = True
            else:
                if os.getppid() != parent:
                    return
                if self.conn.poll(0) and words[self.claims.messages] == self.received:
                    return  # EOF: the parent counts a message before it writes it

    def compute(self, position):
        words, records, replica = self.words, self.records, self.replica
        index = records.index[position]
        mode = board.MODES[words[board.MODE]]
        try:
            if words[board.VERSION] != self.version:
                replica.set_parameters(self.params.memory.buf[:8 * len(replica.params)])
                self.version = words[board.VERSION]
            loss, prediction, started, seconds = replica.run_sample(mode, self.keys[words[board.KEY]], index,
                                                                    words[board.EPOCH])
            if mode == "train":
                size = len(replica.params)
                replica.write_gradient(self.slab_rows[position * size:(position + 1) * size])
        except MemoryError:
            raise
        except Exception as e:
            mistake = str(e) if isinstance(e, LossTypeError) else ""
            self.conn.send(Failed(words[board.JOB], index, traceback.format_exc(), mistake))
            raise _Failed from None
        records.loss[position] = loss
        records.started[position] = started
        records.seconds[position] = seconds
        records.worker[position] = self.worker_id
        self.record_prediction(position, prediction)

    def record_prediction(self, position, prediction):
        records = self.records
        kind = type(prediction)
        if kind is int and prediction in INT64:
            records.prediction_int[position] = prediction
            records.prediction_kind[position] = board.PREDICTION_INT
        elif kind is bool:
            records.prediction_int[position] = prediction
            records.prediction_kind[position] = board.PREDICTION_BOOL
        elif kind is float:
            records.prediction_float[position] = prediction
            records.prediction_kind[position] = board.PREDICTION_FLOAT
        else:  # anything else travels through the pipe, before the position is marked done
            self.conn.send(Prediction(self.words[board.JOB], position, prediction))
            records.prediction_kind[position] = board.PREDICTION_OTHER


def _supersedes(later, msg):
    if isinstance(msg, UseBlocks):
        return isinstance(later, UseBlocks)
    return isinstance(msg, AddDataset) and isinstance(later, AddDataset) and later.key == msg.key


def worker_main(conn, worker_id, header_handle, workers, wake):
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    import faulthandler
    faulthandler.enable()  # a segfault leaves a Python traceback on stderr

    parent = os.getppid()
    header = board.Header.attach(header_handle, workers)
    worker = _Worker(conn, worker_id, header, wake)
    try:
        worker.read_first()
        worker.serve(parent)
    except MemoryError:
        sys.stderr.write(f"worker {worker_id}: MemoryError\n")
        os._exit(EXIT_MEMORY_ERROR)
    except (_ParentGone, BrokenPipeError, ConnectionResetError):
        return
    except _Failed:
        _wait_to_be_stopped(conn)
    except Exception:  # a payload that fails to load, or a bug here: the parent reports it
        try:
            conn.send(Failed(None, None, traceback.format_exc()))
        except OSError:
            return
        _wait_to_be_stopped(conn)
    finally:
        worker.release_blocks()
        header.release()


def _wait_to_be_stopped(conn):
    try:
        while True:
            conn.recv()
    except (EOFError, OSError):
        return
