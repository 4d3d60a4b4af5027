"""The messages between the parent and a pool worker, one named type each (as CPython's
``_CallItem`` and ``_ResultItem``), so a reader of ``msg.index`` knows what it holds.

The samples themselves do not travel as messages: a worker claims them on the board
(``parallel.board``) and writes its results there. The pipes carry what happens once per
worker or once per step.

Parent to worker, on the worker's pipe (each one counted in the worker's heartbeat slot, so
a worker reads what was sent before it claims another sample)::

    LoadPayload(blob)                   cloudpickled Payload; answered by Ready
    AddDataset(key, number, blob)       cloudpickled dataset (or a SharedDataset: names only);
                                        the board names it by ``number``
    UseBlocks(params, slab, records)    SharedBlock handles of the parameters, the gradient
                                        slab and the board's records

Worker to parent::

    Ready(pid)
    StepDone(job)                       from the worker that finished the job's last position
    Prediction(job, position, value)    a prediction that is not a number (before it is done)
    Failed(job, index, traceback, mistake)  an exception in user code; the worker waits to be stopped
"""
from typing import NamedTuple, Optional


class LoadPayload(NamedTuple):
    blob: bytes


class AddDataset(NamedTuple):
    key: str
    number: int
    blob: bytes


class UseBlocks(NamedTuple):
    params: object
    slab: object
    records: object


class Ready(NamedTuple):
    pid: int


class StepDone(NamedTuple):
    job: int


class Prediction(NamedTuple):
    job: int
    position: int
    value: object


class Failed(NamedTuple):
    job: Optional[int]
    index: Optional[int]
    traceback: str
    mistake: str = ""  # a LossTypeError's one line: the parent raises it as it is
