"""The messages between the parent and a pool worker, one named type each (as CPython's
``_CallItem`` and ``_ResultItem``), so a reader of ``msg.index`` knows what it holds.

Parent to worker, on the worker's pipe::

    LoadPayload(blob)                   cloudpickled Payload; answered by Ready
    AddDataset(key, blob)               cloudpickled dataset (or a SharedDataset: names only)
    UseBlocks(params, slab)             SharedBlock handles of the parameters and the gradient slab
    Compute(job, mode, key, index, position, epoch, version)
                                        one sample: answered by Computed or Failed

Worker to parent::

    Ready(pid)
    Computed(job, position, index, loss, prediction, started, seconds)
                                        the gradient is already in the slab's row ``position``
    Failed(job, index, traceback)       an exception in user code; the worker waits to be stopped

``version`` counts parameter updates: a worker copies the parameter block into its model
only when the version it last read differs, once per step however many samples it takes.
"""
from typing import NamedTuple, Optional


class LoadPayload(NamedTuple):
    blob: bytes


class AddDataset(NamedTuple):
    key: str
    blob: bytes


class UseBlocks(NamedTuple):
    params: object
    slab: object


class Compute(NamedTuple):
    job: int
    mode: str
    key: str
    index: int
    position: int
    epoch: int
    version: int


class Ready(NamedTuple):
    pid: int


class Computed(NamedTuple):
    job: int
    position: int
    index: int
    loss: float
    prediction: object
    started: float
    seconds: float


class Failed(NamedTuple):
    job: Optional[int]
    index: Optional[int]
    traceback: str
