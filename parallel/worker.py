"""The worker process: receive the payload once, then compute one sample per message.

Runs in a child started by ``ProcessBackend`` (forkserver or spawn: nothing here relies
on state inherited through fork). It reads ``parallel.protocol`` messages from its pipe:
the payload, datasets, the shared blocks, then ``Compute`` after ``Compute``. For each
it copies the parameter block into the model when the parameters changed since its last
sample, computes the sample, writes the gradient into the slab's row ``position`` (the
sample's place in the batch) and answers ``Computed`` with the loss and prediction.

An exception in user code is sent back as ``Failed`` with its traceback, and the worker
waits for the parent to stop it. MemoryError is treated as a crash: the process exits
and the parent recomputes the sample elsewhere. The worker ignores SIGINT (a Ctrl-C
reaches the whole process group; the parent decides), never writes files, and exits on
its own when the parent goes away (EOF on the pipe, or a new parent pid).
"""
import os
import signal
import sys
import traceback

from .protocol import AddDataset, Compute, Computed, Failed, LoadPayload, Ready, UseBlocks

PARENT_CHECK_SECONDS = 1.0
EXIT_MEMORY_ERROR = 86


class _Worker:
    """A replica and the worker's mappings of the parameter block and the gradient slab."""

    def __init__(self, conn, worker_id):
        self.conn, self.worker_id = conn, worker_id
        self.replica = None
        self.params = self.slab = None
        self.version = None

    def handle(self, msg):
        if isinstance(msg, Compute):
            self.compute(msg)
        elif isinstance(msg, LoadPayload):
            import cloudpickle

            from .replica import Replica
            self.replica = Replica(cloudpickle.loads(msg.blob))
            self.conn.send(Ready(os.getpid()))
        elif isinstance(msg, AddDataset):
            import cloudpickle
            self.replica.add_dataset(msg.key, cloudpickle.loads(msg.blob))
        elif isinstance(msg, UseBlocks):
            self.use_blocks(msg)
        else:
            raise ValueError(f"Unknown message {type(msg).__name__}")

    def use_blocks(self, msg):
        from .shared_blocks import SharedBlock
        for block in (self.params, self.slab):
            if block is not None:
                block.release()
        self.params = SharedBlock.attach(msg.params)
        self.slab = SharedBlock.attach(msg.slab) if msg.slab is not None else None
        self.version = None

    def compute(self, task):
        replica = self.replica
        if task.version != self.version:
            replica.set_parameters(self.params.memory.buf[:8 * len(replica.params)])
            self.version = task.version
        result = replica.compute(task.mode, task.key, task.index, self.worker_id, task.epoch)
        if result.grad is not None:
            size = len(result.grad)
            row = self.slab.memory.buf.cast("d")
            row[task.position * size:(task.position + 1) * size] = result.grad
            row.release()
        self.conn.send(Computed(task.job, task.position, task.index, result.loss, result.prediction,
                                result.started, result.seconds))


def worker_main(conn, worker_id):
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    import faulthandler
    faulthandler.enable()  # a segfault leaves a Python traceback on stderr

    parent = os.getppid()
    worker = _Worker(conn, worker_id)
    while True:
        if not conn.poll(PARENT_CHECK_SECONDS):
            if os.getppid() != parent:
                return
            continue
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        task = msg if isinstance(msg, Compute) else None  # (a NamedTuple's .index is a method)
        try:
            worker.handle(msg)
        except MemoryError:
            sys.stderr.write(f"worker {worker_id}: MemoryError at sample {task and task.index}\n")
            os._exit(EXIT_MEMORY_ERROR)
        except (BrokenPipeError, ConnectionResetError):
            return  # the parent is gone
        except Exception:
            try:
                conn.send(Failed(task and task.job, task and task.index, traceback.format_exc()))
            except OSError:
                return

