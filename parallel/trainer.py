"""DataParallelTrainer: the parent's side of data-parallel training.

The parent owns the model, the optimizer and the data order. Each step it sends the
parameters and the batch's sample indices to the backend, gets one ``SampleResult``
per sample back, sums the gradients *in the order of the batch* (floating-point
addition is not associative, so any grouping that depended on the worker count would
change the bits), averages, and applies the optimizer. Hence the same seed gives
bit-identical parameters with workers=0, 1, 2, ... or any backend.
"""
import math
import os
import time

import numpy as np

from minigrad import checkpoint as checkpoint_module
from minigrad.checks import int_at_least, positive_int
from minigrad.portable_math import fold_sum
from minigrad.schedule import SCHEDULES, lr_at

from . import arguments
from .backend import Backend, InProcessBackend, Results
from .data_order import DataOrder
from .errors import NonFiniteError
from .flat_optimizer import FlatAdam, FlatSGD, parameter_order
from .process_pool import ProcessBackend, available_cpus
from .replica import Payload, TensorLayout, get_sample, tensor_order_parameters
from .signals import deferred_signals

def _dask_backend(workers, scheduler=None, log=None, sample_timeout=None, max_crashes=3, tls=None,
                  **_process_options):
    from .dask_backend import DaskBackend  # dask is optional: pip install "minigrad[distributed]"
    return DaskBackend(workers, scheduler=scheduler, log=log, sample_timeout=sample_timeout,
                       max_crashes=max_crashes, tls=tls)


BACKENDS = {"process": ProcessBackend, "dask": _dask_backend}


class StepReport:
    """What one completed step did: mean loss, learning rate, whether it ended an epoch, and timing:
    ``seconds`` of wall time, ``engine_seconds`` the busiest worker spent computing samples,
    ``sample_seconds`` all workers spent on them, ``phases`` the parent's seconds in each part of
    the step (prepare, hand_out, wait, reduce, optimizer: they add up to ``seconds``, which began at
    ``started`` on the ``time.perf_counter`` clock), and ``samples_timing`` one
    ``(worker, index, started, seconds, loss)`` per sample."""

    __slots__ = ("step", "epoch", "loss", "lr", "indices", "seconds", "engine_seconds", "sample_seconds",
                 "epoch_end", "phases", "samples_timing", "started")

    def __init__(self, **fields):
        for k, v in fields.items():
            setattr(self, k, v)

    @property
    def samples(self):
        return len(self.indices)

    def __repr__(self):
        return f"StepReport(step={self.step}, epoch={self.epoch}, loss={self.loss:.6g}, lr={self.lr:.6g})"


class Evaluation:
    """Mean loss, accuracy, per-sample predictions and, for class labels, the confusion matrix
    (``confusion[true][predicted]``)."""

    __slots__ = ("loss", "accuracy", "n", "predictions", "labels", "confusion", "seconds")

    def __init__(self, losses, predictions, labels, seconds):
        self.n = len(losses)
        self.loss = fold_sum(losses) / self.n
        self.predictions, self.labels, self.seconds = predictions, labels, seconds
        self.accuracy = sum(p == y for p, y in zip(predictions, labels)) / self.n
        self.confusion = _confusion(predictions, labels)

    def as_dict(self):
        return {"loss": self.loss, "accuracy": self.accuracy, "n": self.n, "confusion": self.confusion}


def _confusion(predictions, labels):
    classes = set(predictions) | set(labels)
    if not all(isinstance(c, int) and c >= 0 for c in classes):
        return None  # not class indices (e.g. regression targets)
    size = 1 + max(classes)
    matrix = [[0] * size for _ in range(size)]
    for p, y in zip(predictions, labels):
        matrix[y][p] += 1
    return matrix


def make_backend(backend, workers, start_method=None, max_crashes=3, log=None, scheduler=None,
                 sample_timeout=None, tls=None):
    """workers=0: in-process; otherwise the named backend (``BACKENDS``) or a Backend instance.

    ``scheduler`` (a "tcp://host:port" or "tls://host:port" address or a ``distributed.Client``)
    goes with backend="dask"; without it the Dask backend starts a LocalCluster of ``workers``
    processes. ``tls=(ca_file, cert_file, key_file)`` (backend="dask") connects with mutual TLS.
    ``sample_timeout`` (seconds; None: the larger of 30 s and 100x the median sample; 0: off)
    is how long a sample may run before its worker is taken for hung and replaced.
    """
    if isinstance(backend, Backend):
        return backend
    int_at_least("workers", workers, 0)
    if backend not in BACKENDS:
        raise ValueError(f"Expected a backend in {sorted(BACKENDS)}, got {backend!r}")
    if scheduler is not None and backend != "dask":
        raise ValueError(f"Expected backend 'dask' with a scheduler, got {backend!r}")
    if tls is not None and backend != "dask":
        raise ValueError(f"Expected backend 'dask' with tls, got {backend!r}")
    if workers == 0 and scheduler is None:
        return InProcessBackend()
    options = {"start_method": start_method, "max_crashes": max_crashes, "log": log,
               "sample_timeout": sample_timeout}
    if scheduler is not None:
        options["scheduler"] = scheduler
    if tls is not None:
        options["tls"] = tls
    return BACKENDS[backend](workers, **options)


class DataParallelTrainer:
    """Train ``model_fn()`` with ``loss_fn(outputs, target)`` over a pool of model replicas.

    ``optimizer`` is "sgd" (with ``momentum``, ``weight_decay``), "adam" (``weight_decay``),
    or a function ``parameters -> optimizer`` (then ``lr`` is its ``.lr``). ``lr_schedule``
    is "constant", "cosine" (to 0 at the last step) or "step" (x0.1 after each third of
    the steps), applied per step. ``workers=0`` computes in this process; ``None`` means
    one per CPU. ``seed`` fixes the data order (the model's initial values are
    ``model_fn``'s business).
    """

    def __init__(self, model_fn, loss_fn, optimizer="sgd", lr=0.05, momentum=0.0, weight_decay=0.0,
                 lr_schedule="constant", workers=None, backend="process", seed=0, predict_fn=None,
                 start_method=None, max_crashes=3, log=None, scheduler=None, sample_timeout=None,
                 augment_fn=None, tls=None):
        if lr_schedule not in SCHEDULES and not callable(lr_schedule):
            raise ValueError(f"Expected lr_schedule in {sorted(SCHEDULES)} or a function, got {lr_schedule!r}")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"Expected seed to be an integer, got {seed!r}")
        arguments.callable_taking("model_fn", model_fn, 0, "model_fn()")
        arguments.callable_taking("loss_fn", loss_fn, 2, "loss_fn(outputs, target)")
        arguments.optional_callable("predict_fn", predict_fn, 1, "predict_fn(outputs)")
        arguments.optional_callable("augment_fn", augment_fn, 2, "augment_fn(input, rng)")
        arguments.optional_callable("log", log, 1, "log(line)")
        if not callable(optimizer):
            arguments.learning_rate(lr)
        if workers is not None and not isinstance(backend, Backend):
            int_at_least("workers", workers, 0)
        self.payload = Payload(model_fn, loss_fn, predict_fn, augment_fn, seed)
        self._model = arguments.built_model(model_fn)
        self._params = tensor_order_parameters(self._model)
        self._flat = np.array([p.v for p in self._params], dtype=np.float64)  # the master parameters
        self._values_stale = False  # the model's Values lag behind the flat parameters
        self._flat_stale = False    # someone had the model: its Values may have been changed
        self.optimizer = self._make_optimizer(optimizer, lr, momentum, weight_decay)
        self.base_lr = self.optimizer.lr
        self.lr_schedule = lr_schedule
        self.seed = seed
        self.workers = available_cpus() if workers is None else workers
        self.backend = make_backend(backend, self.workers, start_method, max_crashes, log, scheduler,
                                    sample_timeout, tls)
        self.layout = TensorLayout(self._model)
        self.step = 0
        self.data_order = None
        self.last_checkpoint = None  # (path, step) of the run's latest model.json, once written or resumed
        self._datasets = []  # (dataset, key), matched by identity
        self._started = False
        self._pending_state = None
        self.last_report = None  # the StepReport of the last completed step

    def _make_optimizer(self, optimizer, lr, momentum, weight_decay):
        """SGD and Adam step the flat parameters (``parallel.flat_optimizer``: the same bits as
        ``minigrad.optimizer``); a user's function gets the model's Values and steps them."""
        self.flat = not callable(optimizer)
        if callable(optimizer):
            return optimizer(self._model.parameters())
        order = parameter_order(self._model)
        if optimizer == "sgd":
            return FlatSGD(self._flat, lr=lr, momentum=momentum, weight_decay=weight_decay, order=order)
        if optimizer == "adam":
            if momentum:
                raise ValueError(f"Expected no momentum with Adam (it has betas), got {momentum!r}")
            return FlatAdam(self._flat, lr=lr, weight_decay=weight_decay, order=order)
        raise ValueError(f"Expected optimizer 'sgd', 'adam' or a function, got {optimizer!r}")

    # ---- the model, written from the flat parameters only when someone looks ----

    @property
    def model(self):
        """The model with the current parameters (its Values may be read and changed)."""
        self._write_values()
        self._flat_stale = True
        return self._model

    def _write_values(self):
        if self._values_stale:
            for p, v in zip(self._params, self._flat.tolist()):
                p.v = v
            self._values_stale = False

    def _parameters(self):
        """The flat parameters, first taking in any change made through ``model``."""
        if self._flat_stale:
            self._flat[:] = [p.v for p in self._params]
            self._flat_stale = False
        return self._flat

    # ---- the pool and the datasets it holds ----

    def _key(self, dataset):
        for known, key in self._datasets:
            if known is dataset:
                return key
        if not self._started:
            self.backend.start(self.payload)
            self._started = True
        key = f"dataset-{len(self._datasets)}"
        self.backend.add_dataset(key, dataset)  # sent to each worker once
        self._datasets.append((dataset, key))
        return key

    def add_event_listener(self, fn):
        """Have ``fn(name, **fields)`` hear the backend's events (a worker's timeout, death and
        replacement, a recomputed sample: see ``ProcessBackend``). Returns False for a backend that
        reports none."""
        if not self.backend.reports_events:
            return False
        previous = self.backend.on_event
        listeners = previous if isinstance(previous, _Listeners) else _Listeners(previous)
        listeners.listeners.append(fn)
        self.backend.on_event = listeners
        return True

    def start(self, *datasets):
        """Start the workers now and send them ``datasets`` (otherwise the first use does)."""
        for dataset in datasets:
            self._key(dataset)
        if not self._started:
            self.backend.start(self.payload)
            self._started = True
        return self

    def close(self):
        self._write_values()
        self.backend.close()
        self._started = False
        self._datasets = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    # ---- training ----

    def total_steps(self, n, epochs, batch_size, max_steps=None):
        """Steps of a run: ``epochs`` passes over ``n`` samples, or ``max_steps`` if fewer."""
        total = positive_int("epochs", epochs) * -(-n // positive_int("batch_size", batch_size))
        if max_steps is not None:
            total = min(total, positive_int("max_steps", max_steps))
        return total

    def lr_at(self, step, total_steps):
        if callable(self.lr_schedule):
            return self.lr_schedule(step, total_steps)
        options = {"step_size": max(1, total_steps // 3)} if self.lr_schedule == "step" else {}
        return lr_at(self.lr_schedule, self.base_lr, step, total_steps, **options)

    def train_steps(self, train, epochs, batch_size, max_steps=None):
        """Train, yielding a ``StepReport`` after each completed step (the run can stop between).

        Continues from ``self.step`` (and the data order of ``load_state_dict``) until the
        run's ``total_steps``. A NaN or infinite loss or gradient raises ``NonFiniteError``
        before that step changes anything.
        """
        total = self.total_steps(len(arguments.dataset("train", train)), epochs, batch_size, max_steps)
        self.prepare_data_order(len(train), batch_size)
        key = self._key(train)
        try:
            while self.step < total:
                yield self._train_step(key, total)
        finally:
            self._write_values()  # a reference to the model kept from before sees the result

    def prepare_data_order(self, n, batch_size):
        """The data order for ``n`` samples in batches of ``batch_size``, continuing a resumed one
        (checked now: ValueError if it does not fit)."""
        if self.data_order is None or (self.data_order.n, self.data_order.batch_size) != (n, batch_size):
            self.data_order = DataOrder(n, batch_size, self.seed)
        if self._pending_state is not None:
            self.data_order.load_state_dict(self._pending_state)
            self._pending_state = None
        return self.data_order

    def _train_step(self, key, total):
        clock = _StepClock(self.backend)
        step, order = self.step, self.data_order
        indices = order.next_batch()
        lr = self.lr_at(step, total)
        params = self._parameters()
        clock.lap("prepare")
        results = Results.of(self.backend.run("train", params, key, indices, order.epoch))
        clock.lap("run")
        grad, loss = self._reduce(results, step + 1)
        clock.lap("reduce")
        # a signal now would leave a half-updated model, or a step done with no report of it
        with deferred_signals():
            self._apply(grad, lr)
            self.step, epoch = step + 1, order.epoch
            epoch_end = order.advance()
            clock.lap("optimizer")
            self.last_report = StepReport(
                step=self.step, epoch=epoch, loss=loss, lr=lr, indices=indices, seconds=clock.seconds,
                engine_seconds=_engine_seconds(results), sample_seconds=sum(results.seconds), epoch_end=epoch_end,
                phases=clock.phases(), samples_timing=_timing(results), started=clock.start)
        return self.last_report

    def _apply(self, grad, lr):
        """One optimizer step with the batch's mean gradient ``grad`` at learning rate ``lr``."""
        self.optimizer.lr = lr
        if self.flat:
            self.optimizer.step(grad)
            self._values_stale = True
        else:
            for p, g in zip(self._params, grad.tolist()):
                p.grad = g
            self.optimizer.step()
            self._flat[:] = [p.v for p in self._params]

    def record_checkpoint(self, path):
        """``path`` holds the model at the current step: ``last_checkpoint`` says so."""
        self.last_checkpoint = (path, self.step)

    def _reduce(self, results, step):
        """Mean gradient and loss of the batch, summed in batch order; non-finite values raise.

        The rows are summed with ``np.add.reduce`` along the first axis from 0.0, which adds
        them one after another exactly as a loop of ``+=`` does (tested), in a few numpy calls
        per step rather than a few per sample (each costs on PyPy). A sum of floats is finite
        only if every term is, so the rows are searched for the culprit only when a sum is not.
        """
        grads = results.grads
        loss = 0.0
        for sample_loss in results.losses:
            loss += sample_loss
        total = sum_rows(grads)
        if not (math.isfinite(loss) and np.isfinite(total).all()):
            _raise_non_finite(results, grads, step)
        n = len(results)
        total /= n
        if not np.isfinite(total).all():
            raise NonFiniteError(step, None, "mean gradient")
        return total, loss / n

    def fit(self, train, epochs=1, batch_size=8, test=None, max_steps=None, on_step=None, on_epoch=None,
            out=None, checkpoint_every=100, progress=False, config=None, trace=None, trace_steps=200):
        """Train and return the history ``{"train": [(step, loss)], "test": [(epochs done, Evaluation)]}``.

        ``on_step(report)`` runs after every step, ``on_epoch(epochs_done, evaluation)`` after
        every epoch (evaluation is None without ``test``). ``progress=True`` shows a tqdm bar
        (``tqdm.auto``: it renders in Jupyter too) and one line per epoch. SIGINT/SIGTERM raise
        ``TrainingInterrupted`` with the model at the last completed step.

        With ``out`` (a folder) the run is kept there: ``model.json`` every ``checkpoint_every``
        steps, at the end and on SIGINT/SIGTERM (model, ``config``, optimizer state, step, data
        order: ``resume(out + "/model.json")`` continues it bit for bit with any worker count),
        ``train_stats.csv``, ``test_stats.csv``, and with matplotlib ``training.png`` and
        ``filters.png``; the history then also holds ``out``, ``memory`` (a summary of the
        processes' RSS) and ``pictures`` (the names drawn: also timeline.png, the first steps of
        each worker and of the parent, and for a test set of images mistakes.png and
        confusion.png). ``trace`` (a path) gets the first ``trace_steps`` steps as Chrome Trace
        Event JSON (open it in ui.perfetto.dev or chrome://tracing). A file that cannot be
        written raises ``RunWriteError``; the previous ``model.json`` stays whole.
        """
        from .run.loop import Run
        arguments.dataset("train", train)
        if test is not None:
            arguments.dataset("test", test)
        self.total_steps(len(train), epochs, batch_size, max_steps)  # epochs, batch_size, max_steps
        arguments.optional_callable("on_step", on_step, 1, "on_step(report)")
        arguments.optional_callable("on_epoch", on_epoch, 2, "on_epoch(epochs_done, evaluation)")
        arguments.flag("progress", progress)
        arguments.json_config(config)
        for name, path in (("out", out), ("trace", trace)):
            if path is not None and not isinstance(path, (str, os.PathLike)):
                raise ValueError(f"Expected {name} to be a path or None, got {type(path).__name__}")
        if out is not None:
            positive_int("checkpoint_every", checkpoint_every)
        run = Run(self, train, epochs, batch_size, test=test, max_steps=max_steps, out=out,
                  checkpoint_every=checkpoint_every, progress=progress, config=config, on_step=on_step,
                  on_epoch=on_epoch, trace=trace, trace_steps=positive_int("trace_steps", trace_steps))
        return run.fit()

    def resume(self, checkpoint):
        """Continue the run saved in ``checkpoint`` (a ``model.json`` path, or one read by
        ``parallel.run.read_run_checkpoint``): parameters, optimizer state, step and data order.
        Then ``fit`` with the same datasets, epochs, batch size and max_steps (they set the data
        order and the schedule) and ``out`` its folder. Returns the checkpoint, whose ``"config"``
        is the ``config`` the run was given."""
        from .run.checkpoint import restore
        return restore(self, checkpoint)

    def evaluate(self, dataset):
        """Loss, accuracy and confusion matrix over ``dataset`` (forward only, no graph)."""
        start = time.perf_counter()
        key = self._key(arguments.dataset("dataset", dataset))
        indices = list(range(len(dataset)))
        results = Results.of(self.backend.run("eval", self._parameters(), key, indices))
        labels = _labels(dataset)
        return Evaluation(list(results.losses), list(results.predictions), labels, time.perf_counter() - start)

    # ---- state ----

    def state_dict(self):
        """Step, data order and optimizer state (JSON-able); the model's parameters are separate."""
        return {"step": self.step, "data_order": self.data_order.state_dict() if self.data_order else None,
                "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state):
        """Continue from ``state_dict()`` (load the parameters into ``self.model`` separately)."""
        if not isinstance(state, dict) or sorted(state) != ["data_order", "optimizer", "step"]:
            got = sorted(state) if isinstance(state, dict) else type(state).__name__
            raise ValueError(f"Expected trainer state keys ['data_order', 'optimizer', 'step'], got {got}")
        step = int_at_least("trainer step", state["step"], 0)
        self.optimizer.load_state_dict(state["optimizer"])
        self.step = step
        self._pending_state = state["data_order"]

    def parameters_sha256(self):
        return checkpoint_module.parameters_sha256(self.model)


class _Listeners:
    """Calls each of ``listeners`` in turn: what a backend's ``on_event`` becomes with listeners added."""

    def __init__(self, first):
        self.listeners = [first] if first is not None else []

    def __call__(self, name, **fields):
        for fn in self.listeners:
            fn(name, **fields)


def _labels(dataset):
    """Every sample's target, numpy scalars made plain (read in the parent, for accuracy)."""
    labels = getattr(dataset, "labels", None)
    if labels is not None:
        return labels.tolist() if hasattr(labels, "tolist") else list(labels)
    return [get_sample(dataset, i)[1] for i in range(len(dataset))]


def _raise_non_finite(results, grads, step):
    """The first sample, in batch order, whose loss or gradient is not finite."""
    finite = np.isfinite(grads).all(axis=1).tolist()
    for r, ok in zip(results, finite):
        if not math.isfinite(r.loss):
            raise NonFiniteError(step, r.index, "loss")
        if not ok:
            raise NonFiniteError(step, r.index, "gradient")
    raise NonFiniteError(step, None, "mean loss" if all(finite) else "mean gradient")


def sum_rows(rows):
    """The rows of a 2-D array added one after another, from 0.0: ``total = 0; total += row`` for
    each row in order, in one numpy call.

    numpy adds along an axis that is not the array's innermost one element by element, row after
    row; along the innermost it sums pairwise, so a single column (a model of one parameter) is
    added up in a loop."""
    if rows.shape[1] == 1:
        total = np.zeros(1)
        for row in rows:
            total += row
        return total
    return np.add.reduce(rows, axis=0, initial=0.0)


class _StepClock:
    """The phases of one step, from one clock: ``lap(name)`` ends the phase ``name``. The "run"
    phase is split into the time blocked waiting for workers (the backend's own ``wait_seconds``,
    when it measures it) and the rest, handing the step out."""

    def __init__(self, backend):
        self.backend, self.waited = backend, backend.wait_seconds
        self.start = self.last = time.perf_counter()
        self.laps = {}

    def lap(self, name):
        now = time.perf_counter()
        self.laps[name], self.last = now - self.last, now

    @property
    def seconds(self):
        return self.last - self.start

    def phases(self):
        run = self.laps["run"]
        wait = run if self.waited is None else self.backend.wait_seconds - self.waited
        return {"prepare": self.laps["prepare"], "hand_out": run - wait, "wait": wait,
                "reduce": self.laps["reduce"], "optimizer": self.laps["optimizer"]}


def _timing(results):
    return list(zip(results.workers, results.indices, results.started, results.seconds, results.losses))


def _engine_seconds(results):
    """The busiest worker's engine time: the part of a step the engine itself needs."""
    per_worker = {}
    for worker, seconds in zip(results.workers, results.seconds):
        per_worker[worker] = per_worker.get(worker, 0.0) + seconds
    return max(per_worker.values())
