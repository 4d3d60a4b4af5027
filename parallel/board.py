"""The board: the shared memory through which pool workers take a job's samples themselves.

The parent writes a job on the board (the sample indices, how many, which dataset and
parameter version) and wakes the idle workers once. Each worker then claims the next
position itself, computes it, writes the results into that position's record and claims
the next, until none is left; the one that finishes the last position tells the parent.
So a step costs the parent O(1) wake-ups, whatever the batch size.

Two blocks of shared memory, both created and removed by the parent:

- the header (fixed size): the job's fields, and one heartbeat slot per worker (its state,
  the position it computes and since when, how many messages the parent has sent it);
- the records (grown with the largest job): per position the sample index, a done flag,
  the loss, the prediction, the worker, when it started and how long it took; and the
  stack of positions to compute again.

Every change to the claim state (``claimed``, ``finished``, the done flags, the requeue
stack, a worker's position) is made holding an ``flock`` on the header's file. The kernel
releases that lock when its holder dies, however it dies, so a worker killed in the middle
of a claim cannot block the others, and the parent can repair what it left half-written
(``recover``): a position claimed but neither done nor held by a live worker goes back on
the stack. Writes in the locked sections are ordered so that every half-written state is
one ``recover`` can read.
"""
import fcntl
import time
from array import array

from .shared_blocks import SharedBlock

# the header: int64 words, then one float64 per worker
SHUTDOWN, JOB, N, CLAIMED, FINISHED, REQUEUED, VERSION, EPOCH, MODE, KEY, WORKERS, SLEEPERS, WAKING = range(13)
FIELDS = 14
SLOT_WORDS = 4
STATE, POSITION, MESSAGES, PID = range(SLOT_WORDS)
IDLE, CLAIMING, RUNNING, SLEEPING = range(4)
MODES = ("train", "eval")
FAN_OUT = 2  # sleeping workers woken by each claim while positions are left (the parent's too)

# a prediction's type, kept beside its value
PREDICTION_INT, PREDICTION_FLOAT, PREDICTION_BOOL, PREDICTION_OTHER = range(4)

# the records: int64 arrays, then float64 arrays, each ``capacity`` long
INT_ARRAYS = ("index", "done", "requeue", "prediction_kind", "prediction_int", "worker")
FLOAT_ARRAYS = ("loss", "prediction_float", "started", "seconds")


class Header:
    """The header block as int64 words (``words``) and float64 heartbeat times (``since``)."""

    def __init__(self, block, workers):
        self.block = block
        self.workers = workers
        ints = FIELDS + SLOT_WORDS * workers
        self.words = block.memory.buf[:8 * ints].cast("q")
        self.since = block.memory.buf[8 * ints:8 * (ints + workers)].cast("d")
        self.fd = block.memory._fd  # the lock: an flock on the block's own file

    @classmethod
    def create(cls, workers):
        block = SharedBlock.create((FIELDS + (SLOT_WORDS + 1) * workers,), "int64")
        header = cls(block, workers)
        header.words[WORKERS] = workers
        for k in range(workers):
            header.reset_slot(k)
        return header

    @classmethod
    def attach(cls, handle, workers):
        return cls(SharedBlock.attach(handle), workers)

    def slot(self, k, field):
        return FIELDS + SLOT_WORDS * k + field

    def reset_slot(self, k):
        for field in range(SLOT_WORDS):
            self.words[self.slot(k, field)] = 0
        self.words[self.slot(k, POSITION)] = -1
        self.since[k] = 0.0

    def lock(self):
        fcntl.flock(self.fd, fcntl.LOCK_EX)

    def try_lock(self):
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            return False

    def unlock(self):
        fcntl.flock(self.fd, fcntl.LOCK_UN)

    def release(self):
        for view in (self.words, self.since):
            view.release()
        self.block.release()


class Records:
    """The per-position records, as one memoryview per array (``records.loss[p]``, ...)."""

    def __init__(self, block):
        self.block = block
        self.capacity = capacity = block.handle.shape[0] // (len(INT_ARRAYS) + len(FLOAT_ARRAYS))
        buf = block.memory.buf
        offset = 0
        for name in INT_ARRAYS:
            setattr(self, name, buf[offset:offset + 8 * capacity].cast("q"))
            offset += 8 * capacity
        for name in FLOAT_ARRAYS:
            setattr(self, name, buf[offset:offset + 8 * capacity].cast("d"))
            offset += 8 * capacity

    @classmethod
    def create(cls, capacity):
        return cls(SharedBlock.create(((len(INT_ARRAYS) + len(FLOAT_ARRAYS)) * capacity,), "int64"))

    @classmethod
    def attach(cls, handle):
        return cls(SharedBlock.attach(handle))

    def release(self):
        for name in INT_ARRAYS + FLOAT_ARRAYS:
            getattr(self, name).release()
        self.block.release()


def read_floats(view, n):
    """The first ``n`` values of a float64 memoryview as an ``array("d")`` (PyPy's fast way across)."""
    values = array("d")
    values.frombytes(view[:n].cast("B"))
    return values


def read_ints(view, n):
    values = array("q")
    values.frombytes(view[:n].cast("B"))
    return values


# ---- the parent's side ----

def publish(header, records, job, mode, key, indices, epoch, version):
    """Write a job on the board (the caller holds the lock; no job is under way). Returns how many
    sleeping workers to wake: each of them wakes more as it claims (``wakes``)."""
    n = len(indices)
    words = header.words
    records.index[:n] = array("q", indices)
    records.done[:n] = array("q", bytes(8 * n))
    words[JOB], words[MODE], words[KEY], words[EPOCH], words[VERSION] = job, MODES.index(mode), key, epoch, version
    words[N], words[CLAIMED], words[FINISHED], words[REQUEUED] = n, 0, 0, 0
    return wakes(words, n)


def wakes(words, left):
    """How many sleeping workers to wake for ``left`` positions still to claim, at most ``FAN_OUT``
    (counted in ``WAKING`` until each wakes), so a job reaches N sleepers in log2(N) wake-ups
    rather than N from one process (the caller holds the lock)."""
    count = max(0, min(left, words[SLEEPERS] - words[WAKING], FAN_OUT))
    words[WAKING] += count
    return count


def recover(header, records, live, tokens):
    """After a worker died (the caller holds the lock): count the done flags and the sleepers again,
    and put back on the stack every position claimed but neither done nor held by one of the
    ``live`` workers. ``tokens`` is the wake-up semaphore's value. Returns those positions."""
    words = header.words
    words[SLEEPERS] = sum(words[header.slot(k, STATE)] == SLEEPING for k in live)
    words[WAKING] = tokens
    n, claimed, pending = words[N], words[CLAIMED], words[REQUEUED]
    done = read_ints(records.done, n)
    words[FINISHED] = sum(done)
    held = {words[header.slot(k, POSITION)] for k in live}
    held.update(records.requeue[:pending].tolist())
    lost = [p for p in range(claimed) if not done[p] and p not in held]
    for p in reversed(lost):  # the stack pops the lowest position first
        records.requeue[words[REQUEUED]] = p
        words[REQUEUED] += 1
    return lost


def lock_holder(fd):
    """The pid holding an flock on ``fd``'s file, from /proc/locks (None if none or unknown)."""
    import os
    st = os.fstat(fd)
    inode = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    try:
        with open("/proc/locks") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    for line in lines:
        fields = line.split()
        if "->" in fields or len(fields) < 6 or fields[1] != "FLOCK":
            continue  # a waiter, or another kind of lock
        if fields[5] == inode:
            return int(fields[4])
    return None


# ---- the worker's side ----

class Claims:
    """A worker's hand on the board: mark its position done and claim the next, in one locked section."""

    def __init__(self, header, worker_id):
        self.header, self.k = header, worker_id
        self.words, self.since = header.words, header.since
        self.state = header.slot(worker_id, STATE)
        self.position = header.slot(worker_id, POSITION)
        self.messages = header.slot(worker_id, MESSAGES)
        self.asleep = False  # counted in SLEEPERS
        self.woken = False   # took a wake-up token (counted in WAKING) since the last claim

    def next(self, records, done, received):
        """Mark position ``done`` (or None) finished and claim the next position.

        Returns ``(position, last, wake)``. ``position`` is None when nothing is left to claim
        (the worker is then counted as sleeping, and should sleep), -1 when the parent has sent
        messages this worker has not read yet (``received`` of them): it reads them and claims
        again. ``last`` is the job's number when ``done`` was its last position, else None.
        ``wake`` is how many sleeping workers to wake, for the positions still left.
        """
        words, since = self.words, self.since
        words[self.state] = CLAIMING
        since[self.k] = time.monotonic()
        fd = self.header.fd
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            last, wake = None, 0
            if self.asleep:
                words[SLEEPERS] -= 1
                self.asleep = False
            if self.woken:
                words[WAKING] -= 1
                self.woken = False
            if done is not None:
                if not records.done[done]:
                    records.done[done] = 1
                    finished = words[FINISHED] + 1
                    words[FINISHED] = finished
                    if finished == words[N]:
                        last = words[JOB]
                words[self.position] = -1
            if words[self.messages] != received:
                position = -1
            elif words[REQUEUED]:
                position = records.requeue[words[REQUEUED] - 1]
                words[REQUEUED] -= 1
            elif words[CLAIMED] < words[N]:
                position = words[CLAIMED]
                words[CLAIMED] = position + 1
            else:
                position = None
            if position is not None and position >= 0:
                words[self.position] = position
                since[self.k] = time.monotonic()
                words[self.state] = RUNNING
                wake = wakes(words, words[N] - words[CLAIMED] + words[REQUEUED])
            elif position is None:
                words[SLEEPERS] += 1
                self.asleep = True
                words[self.state] = SLEEPING
            else:
                words[self.state] = IDLE
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
        return position, last, wake
