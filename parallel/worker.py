"""The worker process: receive the payload once, then compute samples until told to stop.

Runs in a child started by ``ProcessBackend`` (forkserver or spawn: nothing here relies
on state inherited through fork). The messages it understands, all on one pipe:

    ("payload", bytes)                      cloudpickled Payload; answered ("ready", pid)
    ("dataset", key, bytes)                 cloudpickled dataset
    ("run", job, mode, params, key, indices) one ("sample", job, *result) per index, in order
    ("stop",)                               exit

An exception in user code is sent back as ("error", job, index, traceback text) and the
worker waits for the parent to stop it. MemoryError is treated as a crash: the process
exits and the parent recomputes the sample elsewhere. The worker ignores SIGINT (a
Ctrl-C reaches the whole process group; the parent decides), never writes files, and
exits on its own when the parent goes away (EOF on the pipe, or a new parent pid).
"""
import os
import signal
import sys
import traceback

PARENT_CHECK_SECONDS = 1.0
EXIT_MEMORY_ERROR = 86


def worker_main(conn, worker_id):
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    import faulthandler
    faulthandler.enable()  # a segfault leaves a Python traceback on stderr
    import cloudpickle

    from .replica import Replica

    parent = os.getppid()
    replica = None
    while True:
        if not conn.poll(PARENT_CHECK_SECONDS):
            if os.getppid() != parent:
                return
            continue
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        kind = msg[0]
        if kind == "stop":
            return
        job, index = None, None
        try:
            if kind == "payload":
                replica = Replica(cloudpickle.loads(msg[1]))
                conn.send(("ready", os.getpid()))
            elif kind == "dataset":
                replica.add_dataset(msg[1], cloudpickle.loads(msg[2]))
            elif kind == "run":
                job, mode, params, key, indices, epoch = msg[1:]
                if params is not None:
                    replica.set_parameters(params)
                for index in indices:
                    result = replica.compute(mode, key, index, worker_id, epoch)
                    conn.send(("sample", job) + result.as_tuple())
            else:
                raise ValueError(f"Unknown message {kind!r}")
        except MemoryError:
            sys.stderr.write(f"worker {worker_id}: MemoryError at sample {index}\n")
            os._exit(EXIT_MEMORY_ERROR)
        except (BrokenPipeError, ConnectionResetError):
            return  # the parent is gone
        except Exception:
            try:
                conn.send(("error", job, index, traceback.format_exc()))
            except OSError:
                return
