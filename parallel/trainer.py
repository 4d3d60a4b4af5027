"""DataParallelTrainer: the parent's side of data-parallel training.

The parent owns the model, the optimizer and the data order. Each step it sends the
parameters and the batch's sample indices to the backend, gets one ``SampleResult``
per sample back, sums the gradients *in the order of the batch* (floating-point
addition is not associative, so any grouping that depended on the worker count would
change the bits), averages, and applies the optimizer. Hence the same seed gives
bit-identical parameters with workers=0, 1, 2, ... or any backend.
"""
import math
import time

import numpy as np

from minigrad import checkpoint as checkpoint_module
from minigrad.optimizer import SGD, Adam
from minigrad.schedule import lr_at

from .backend import Backend, InProcessBackend
from .data_order import DataOrder
from .errors import NonFiniteError
from .process_pool import ProcessBackend, available_cpus
from .replica import Payload, TensorLayout, get_sample, pack, tensor_order_parameters
from .signals import deferred_signals, stop_on_signals

def _dask_backend(workers, scheduler=None, log=None, sample_timeout=None, max_crashes=3, tls=None,
                  **_process_options):
    from .dask_backend import DaskBackend  # dask is optional: pip install "minigrad[distributed]"
    return DaskBackend(workers, scheduler=scheduler, log=log, sample_timeout=sample_timeout,
                       max_crashes=max_crashes, tls=tls)


BACKENDS = {"process": ProcessBackend, "dask": _dask_backend}
OPTIMIZERS = {"sgd": SGD, "adam": Adam}
SCHEDULES = ("constant", "cosine", "step")


class StepReport:
    """What one completed step did: mean loss, learning rate, whether it ended an epoch, and timing:
    ``seconds`` of wall time, ``engine_seconds`` the busiest worker spent computing samples,
    ``sample_seconds`` all workers spent on them."""

    __slots__ = ("step", "epoch", "loss", "lr", "indices", "seconds", "engine_seconds", "sample_seconds",
                 "epoch_end")

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
        self.loss = sum(losses) / self.n
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
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
        raise ValueError(f"Expected workers to be an integer >= 0, got {workers!r}")
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
            raise ValueError(f"Expected lr_schedule in {list(SCHEDULES)} or a function, got {lr_schedule!r}")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"Expected seed to be an integer, got {seed!r}")
        self.payload = Payload(model_fn, loss_fn, predict_fn, augment_fn, seed)
        self.model = model_fn()
        self.optimizer = self._make_optimizer(optimizer, lr, momentum, weight_decay)
        self.base_lr = self.optimizer.lr
        self.lr_schedule = lr_schedule
        self.seed = seed
        self.workers = available_cpus() if workers is None else workers
        self.backend = make_backend(backend, self.workers, start_method, max_crashes, log, scheduler,
                                    sample_timeout, tls)
        self.layout = TensorLayout(self.model)
        self.step = 0
        self.data_order = None
        self._params = tensor_order_parameters(self.model)
        self._datasets = []  # (dataset, key), matched by identity
        self._started = False
        self._pending_state = None

    def _make_optimizer(self, optimizer, lr, momentum, weight_decay):
        params = self.model.parameters()
        if callable(optimizer):
            return optimizer(params)
        if optimizer == "sgd":
            return SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
        if optimizer == "adam":
            if momentum:
                raise ValueError(f"Expected no momentum with Adam (it has betas), got {momentum!r}")
            return Adam(params, lr=lr, weight_decay=weight_decay)
        raise ValueError(f"Expected optimizer in {sorted(OPTIMIZERS)} or a function, got {optimizer!r}")

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

    def start(self, *datasets):
        """Start the workers now and send them ``datasets`` (otherwise the first use does)."""
        for dataset in datasets:
            self._key(dataset)
        if not self._started:
            self.backend.start(self.payload)
            self._started = True
        return self

    def close(self):
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
        for name, v in (("epochs", epochs), ("batch_size", batch_size)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"Expected {name} to be a positive integer, got {v!r}")
        total = epochs * -(-n // batch_size)
        if max_steps is not None:
            if isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < 1:
                raise ValueError(f"Expected max_steps to be a positive integer, got {max_steps!r}")
            total = min(total, max_steps)
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
        n = len(train)
        total = self.total_steps(n, epochs, batch_size, max_steps)
        if self.data_order is None or (self.data_order.n, self.data_order.batch_size) != (n, batch_size):
            self.data_order = DataOrder(n, batch_size, self.seed)
        if self._pending_state is not None:
            self.data_order.load_state_dict(self._pending_state)
            self._pending_state = None
        key = self._key(train)
        while self.step < total:
            yield self._train_step(key, total)

    def _train_step(self, key, total):
        start = time.perf_counter()
        step, order = self.step, self.data_order
        indices = order.next_batch()
        lr = self.lr_at(step, total)
        results = self.backend.run("train", pack([p.v for p in self._params]), key, indices, order.epoch)
        grad, loss = self._reduce(results, step + 1)
        with deferred_signals():  # a signal now would leave a half-updated model
            for p, g in zip(self._params, grad.tolist()):
                p.grad = g
            self.optimizer.lr = lr
            self.optimizer.step()
            self.step = step + 1
            epoch = order.epoch
            epoch_end = order.advance()
        return StepReport(step=self.step, epoch=epoch, loss=loss, lr=lr, indices=indices,
                          seconds=time.perf_counter() - start, engine_seconds=_engine_seconds(results),
                          sample_seconds=sum(r.seconds for r in results), epoch_end=epoch_end)

    def _reduce(self, results, step):
        """Mean gradient and loss of the batch, summed in batch order; non-finite values raise."""
        total = np.zeros(self.layout.size)
        loss = 0.0
        for r in results:
            if not math.isfinite(r.loss):
                raise NonFiniteError(step, r.index, "loss")
            g = np.frombuffer(r.grad, dtype=np.float64)
            if not np.isfinite(g).all():
                raise NonFiniteError(step, r.index, "gradient")
            total += g
            loss += r.loss
        n = len(results)
        total /= n
        if not np.isfinite(total).all():
            raise NonFiniteError(step, None, "mean gradient")
        return total, loss / n

    def fit(self, train, epochs=1, batch_size=8, test=None, max_steps=None, on_step=None, on_epoch=None):
        """Train and return the history ``{"train": [(step, loss)], "test": [(epochs done, Evaluation)]}``.

        ``on_step(report)`` runs after every step, ``on_epoch(epochs_done, evaluation)`` after
        every epoch (evaluation is None without ``test``). SIGINT/SIGTERM raise
        ``TrainingInterrupted`` with the model at the last completed step.
        """
        history = {"train": [], "test": []}
        with stop_on_signals():
            if test is not None:
                self._key(test)  # both datasets reach the workers at start
            for report in self.train_steps(train, epochs, batch_size, max_steps):
                history["train"].append((report.step, report.loss))
                if on_step:
                    on_step(report)
                if report.epoch_end:
                    evaluation = self.evaluate(test) if test is not None else None
                    history["test"].append((report.epoch + 1, evaluation))
                    if on_epoch:
                        on_epoch(report.epoch + 1, evaluation)
        return history

    def evaluate(self, dataset):
        """Loss, accuracy and confusion matrix over ``dataset`` (forward only, no graph)."""
        start = time.perf_counter()
        if len(dataset) == 0:
            raise ValueError("Expected a dataset with at least one sample, got an empty one")
        key = self._key(dataset)
        indices = list(range(len(dataset)))
        results = self.backend.run("eval", pack([p.v for p in self._params]), key, indices)
        labels = _labels(dataset)
        return Evaluation([r.loss for r in results], [r.prediction for r in results], labels,
                          time.perf_counter() - start)

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
        step = state["step"]
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise ValueError(f"Expected trainer step >= 0, got {step!r}")
        self.optimizer.load_state_dict(state["optimizer"])
        self.step = step
        self._pending_state = state["data_order"]

    def parameters_sha256(self):
        return checkpoint_module.parameters_sha256(self.model)


def _labels(dataset):
    """Every sample's target, numpy scalars made plain (read in the parent, for accuracy)."""
    labels = getattr(dataset, "labels", None)
    if labels is not None:
        return labels.tolist() if hasattr(labels, "tolist") else list(labels)
    return [get_sample(dataset, i)[1] for i in range(len(dataset))]


def _engine_seconds(results):
    """The busiest worker's engine time: the part of a step the engine itself needs."""
    per_worker = {}
    for r in results:
        per_worker[r.worker] = per_worker.get(r.worker, 0.0) + r.seconds
    return max(per_worker.values())
