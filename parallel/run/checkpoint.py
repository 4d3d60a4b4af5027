"""A run's checkpoint: the model, the run's config, and the trainer's state (step, data order,
optimizer), so that ``DataParallelTrainer.resume`` continues bit for bit with any worker count.

    {"format": "minigrad-checkpoint", "version": 1, "model": ..., "parameters": ...,
     "config": {...},                                # what the caller passed as fit(config=...)
     "step": 300, "epoch": 0, "parameters_sha256": "...",
     "trainer": {"step": 300, "data_order": {...}, "optimizer": {...}}}
"""
import os

from minigrad import checkpoint
from minigrad.checkpoint import CheckpointError

from ..signals import deferred_signals
from .files import RunWriteError


def save_run_checkpoint(path, trainer, config):
    """Write ``path`` atomically (a signal waits for ``os.replace``); a failed write raises RunWriteError."""
    state = trainer.state_dict()
    order = state["data_order"]
    try:
        with deferred_signals():
            checkpoint.save(path, trainer.model, config=config, step=trainer.step,
                            epoch=order["epoch"] if order else 0, trainer=state,
                            parameters_sha256=trainer.parameters_sha256())
    except OSError as e:
        raise RunWriteError(path, e) from None
    trainer.record_checkpoint(path)


def read_run_checkpoint(path):
    """A training checkpoint (one ``fit(out=...)`` wrote), read and checked; CheckpointError otherwise."""
    ckpt = checkpoint.read(path)
    if "trainer" not in ckpt:
        raise CheckpointError(f"{ckpt.path}: expected a training checkpoint (with a 'trainer' field), "
                              f"got a model-only checkpoint")
    return ckpt


def restore(trainer, ckpt):
    """Parameters, optimizer state, step and data order from ``ckpt`` (a path or ``read_run_checkpoint``'s)."""
    if not isinstance(ckpt, dict):
        ckpt = read_run_checkpoint(ckpt)
    checkpoint.load_into(trainer.model, ckpt)
    try:
        trainer.load_state_dict(ckpt["trainer"])
    except ValueError as e:
        raise CheckpointError(f"{ckpt.path}: {e}") from None
    trainer.record_checkpoint(os.path.abspath(ckpt.path))
    return ckpt


def last_checkpoint_note(trainer):
    """Where the run can be resumed from, for the line that reports a failure."""
    if trainer.last_checkpoint is None:
        return "no checkpoint was written"
    return "the last checkpoint ({}, step {}) is unchanged".format(*trainer.last_checkpoint)
