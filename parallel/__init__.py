"""Data-parallel training of minigrad models over persistent worker processes.

Library API
-----------
::

    from parallel import DataParallelTrainer
    from minigrad import nn
    from minigrad.data import load_mnist5k
    from minigrad.losses import mse_loss, one_hot_pm1

    if __name__ == "__main__":  # workers start by forkserver or spawn, which import this module
        trainer = DataParallelTrainer(
            model_fn=lambda: nn.CNN.reference(seed=0),      # built in the parent and once per worker
            loss_fn=lambda out, label: mse_loss(out, one_hot_pm1(label, 10)),
            optimizer="adam", lr=0.004, weight_decay=1e-3, lr_schedule="cosine", workers=2, seed=0)
        with trainer:
            history = trainer.fit(load_mnist5k("train"), epochs=3, batch_size=8, test=load_mnist5k("test"),
                                  out="runs/x", checkpoint_every=100, progress=True)
        with trainer:  # later, with any number of workers: the same bits as a run never stopped
            trainer.resume("runs/x/model.json")
            trainer.fit(load_mnist5k("train"), epochs=3, batch_size=8, test=load_mnist5k("test"), out="runs/x")

``DataParallelTrainer(model_fn, loss_fn, optimizer="sgd" | "adam" | fn(parameters),
lr=0.05, momentum=0.0, weight_decay=0.0, lr_schedule="constant" | "cosine" | "step" | fn(step, total),
workers=None (one per CPU; 0 = in this process), backend="process" | "dask" | Backend, seed=0,
predict_fn=None, start_method=None, max_crashes=3, log=None, scheduler=None, sample_timeout=None,
augment_fn=None, tls=None)``

* ``.fit(train, epochs=1, batch_size=8, test=None, max_steps=None, on_step=None, on_epoch=None,
  out=None, checkpoint_every=100, progress=False, config=None, trace=None, trace_steps=200)``: trains
  from ``.step`` until the run has done ``epochs`` epochs (or ``max_steps`` steps) in all; with
  ``out`` the run folder gets checkpoints (also on SIGINT/SIGTERM), CSV logs and pictures
  (``parallel.run``)
* ``.resume(path)``: continue the run saved in a ``model.json`` (then ``fit`` as before)
* ``.train_steps(train, epochs, batch_size, max_steps=None)``: a generator of ``StepReport``s,
  for a loop of one's own between steps
* ``.evaluate(dataset)`` -> ``Evaluation`` (``loss``, ``accuracy``, ``n``, ``predictions``, ``confusion``,
  the latter None when the targets are not class indices)
* ``.start(*datasets)``: start the workers and send them the datasets now (else the first use does)
* ``.state_dict()`` / ``.load_state_dict(state)``: step, data order and optimizer state for a checkpoint
* ``.model``, ``.optimizer``, ``.step``, ``.last_checkpoint`` ((path, step) or None),
  ``.parameters_sha256()``, ``.close()``

A dataset is a ``minigrad.data.Dataset`` (``.images``, ``.labels``) or any sized object whose
``dataset[i]`` is ``(input, target)``. Errors: ``WorkerError`` (an exception in a worker, with
its traceback), ``SampleCrashError`` (one sample killed workers ``max_crashes`` times in a row),
``SampleTimeoutError`` (one sample ran past ``sample_timeout`` that many times in a row),
``NonFiniteError`` (NaN/Inf loss or gradient; the step is not applied), ``TrainingInterrupted``
(SIGINT/SIGTERM; the model holds the last completed step), ``RunWriteError`` (a checkpoint, log
or picture could not be written; the last checkpoint stays whole).

How work flows
--------------
``parallel.process_pool`` draws a step of the process pool, where it runs: the parent writes
the parameters and the batch on a shared board (``parallel.board``) and wakes the idle workers;
each worker claims the next sample itself, writes its gradient into the row of the sample's batch
position in a shared slab, and the one that finishes the last sample wakes the parent, which sums
the rows in batch order and steps the optimizer. ``parallel.dask_backend`` draws the same for Dask.

Gradients and parameters are float64 buffers in *tensor order*: the tensors of
``model.named_tensors()`` one after another (``TensorLayout.split`` names the pieces:
``{"conv.0.weight": ..., "conv.0.bias": ..., ...}``). Workers ignore SIGINT, never write
files, and exit when their pipe reaches EOF, their parent changes or the board says stop. A
backend is
``start(payload)`` / ``add_dataset(key, dataset)`` / ``run(mode, params, key, indices, epoch)`` /
``close()`` (``parallel.backend.Backend``); ``InProcessBackend`` is workers=0 and
``ProcessBackend`` the pool, and ``parallel.dask_backend.DaskBackend`` runs the same work on
dask.distributed: ``backend="dask", scheduler="tcp://host:port"`` (or a ``distributed.Client``)
joins a running cluster, and ``backend="dask"`` alone starts a LocalCluster of ``workers``
processes on 127.0.0.1. The results are the same bits whichever backend computes them.
"""
from .backend import Backend, InProcessBackend
from .errors import (LossTypeError, NonFiniteError, SampleCrashError, SampleTimeoutError, TrainingInterrupted,
                     WorkerError)
from .process_pool import ProcessBackend, available_cpus
from .replica import Payload, Replica, SampleResult, TensorLayout
from .run.files import RunWriteError
from .trainer import BACKENDS, DataParallelTrainer, Evaluation, StepReport, make_backend

__all__ = ["DataParallelTrainer", "Evaluation", "StepReport", "Backend", "InProcessBackend",
           "ProcessBackend", "BACKENDS", "make_backend", "Payload", "Replica", "SampleResult",
           "TensorLayout", "WorkerError", "SampleCrashError", "SampleTimeoutError", "NonFiniteError",
           "TrainingInterrupted", "LossTypeError", "RunWriteError", "available_cpus"]
