"""Arrays in shared memory: the parent creates and removes them, workers map them.

Ownership follows ``multiprocessing.shared_memory``'s rules: the parent creates each
block (``SharedBlock.create``) and is the only process that unlinks it (``release``),
on every way out: normal end, an exception, a signal, and garbage collection or
interpreter exit through a finalizer. Workers ``attach`` by name and only close their
mapping. Workers started by forkserver or spawn share the parent's resource tracker, so
their attachments add nothing to it, and if the parent is killed outright the tracker
unlinks whatever the parent had not removed. Block names start with ``minigrad-<pid>-``,
so a test can tell a run's leftovers in ``/dev/shm`` from anyone else's.
"""
import os
import secrets
import weakref
from multiprocessing import shared_memory
from typing import NamedTuple

PREFIX = "minigrad-"


class BlockHandle(NamedTuple):
    """What a worker needs to map a block: its name, shape and dtype (pickled in a message)."""
    name: str
    shape: tuple
    dtype: str


def _release(memory):
    try:
        memory.close()
    except BufferError:  # a view is still alive somewhere: the mapping goes when it does
        pass
    try:
        memory.unlink()
    except FileNotFoundError:
        pass


class SharedBlock:
    """One numpy array in a shared memory block (``.array``), with its ``handle``."""

    def __init__(self, memory, handle, owner):
        import numpy as np
        self.memory, self.handle, self.owner = memory, handle, owner
        self.array = np.ndarray(handle.shape, dtype=handle.dtype, buffer=memory.buf)
        self._finalizer = weakref.finalize(self, _release, memory) if owner else None

    @classmethod
    def create(cls, shape, dtype="float64"):
        import numpy as np
        shape = tuple(int(n) for n in shape)
        size = max(1, int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize)
        name = f"{PREFIX}{os.getpid()}-{secrets.token_hex(6)}"
        memory = shared_memory.SharedMemory(name=name, create=True, size=size)
        return cls(memory, BlockHandle(name, shape, np.dtype(dtype).str), owner=True)

    @classmethod
    def attach(cls, handle):
        return cls(shared_memory.SharedMemory(name=handle.name), handle, owner=False)

    @classmethod
    def holding(cls, array):
        """A new block holding a copy of ``array``."""
        block = cls.create(array.shape, array.dtype)
        block.array[...] = array
        return block

    def release(self):
        """Owner: unmap and remove the block. Worker: unmap it. Safe to call twice."""
        self.array = None
        if self._finalizer is not None:
            self._finalizer()
        else:
            try:
                self.memory.close()
            except BufferError:
                pass


class SharedDataset:
    """A ``minigrad.data.Dataset`` whose arrays live in shared memory, mapped read-only.

    Pickles as the blocks' handles only, so each worker maps the one copy the parent
    made instead of unpickling its own: 60,000 digits are in memory once, not once per
    process. ``images``, ``labels``, ``name`` and ``len()`` are the Dataset's.
    """

    def __init__(self, images, labels, name):
        self.name = name
        self._blocks = (images, labels)
        self.images, self.labels = images.array, labels.array
        if not images.owner:
            self.images.flags.writeable = False
            self.labels.flags.writeable = False

    @classmethod
    def of(cls, dataset):
        return cls(SharedBlock.holding(dataset.images), SharedBlock.holding(dataset.labels), dataset.name)

    def __len__(self):
        return len(self.labels)

    def __getstate__(self):
        return (self._blocks[0].handle, self._blocks[1].handle, self.name)

    def __setstate__(self, state):
        images, labels, name = state
        self.__init__(SharedBlock.attach(images), SharedBlock.attach(labels), name)

    def release(self):
        self.images = self.labels = None
        for block in self._blocks:
            block.release()
