"""The per-sample work, identical in every backend: (parameters, sample index) -> SampleResult.

A ``Replica`` is one copy of the model with the loss and the datasets, built once from
a ``Payload``. Each step it receives the parameters as one float64 buffer and computes
one sample at a time with the pure-Python engine. Parameters and gradients travel in
*tensor order*: the tensors of ``model.named_tensors()`` one after another, each
row-major (torch's layout), so ``TensorLayout.split`` turns a buffer into
``{"conv.0.weight": [...], "conv.0.bias": [...], ...}``.
"""
import random
import time
from array import array
from operator import attrgetter

from minigrad import no_grad
from minigrad.core import Value
from minigrad.nested import flatten

from .errors import LossTypeError


class Payload:
    """Everything a worker needs once, at start: how to build the model, the loss, the prediction.

    ``model_fn()`` builds the model (its initial values do not matter: the parameters
    arrive with every step). ``loss_fn(outputs, target)`` returns a scalar Value.
    ``predict_fn(outputs)`` returns the predicted class (default: the index of the
    largest output). ``augment_fn(input, rng)`` returns a training input's augmented copy,
    drawing only from ``rng`` (``sample_rng(seed, epoch, index)``), so an augmented sample
    is the same wherever and whenever it is computed. All travel through cloudpickle, so
    lambdas and closures work (where cloudpickle cannot send code, ``parallel.pickling`` says so).
    """

    __slots__ = ("model_fn", "loss_fn", "predict_fn", "augment_fn", "seed")

    def __init__(self, model_fn, loss_fn, predict_fn=None, augment_fn=None, seed=0):
        for name, fn in (("model_fn", model_fn), ("loss_fn", loss_fn)):
            if not callable(fn):
                raise ValueError(f"Expected {name} to be callable, got {type(fn).__name__}")
        for name, fn in (("predict_fn", predict_fn), ("augment_fn", augment_fn)):
            if fn is not None and not callable(fn):
                raise ValueError(f"Expected {name} to be callable or None, got {type(fn).__name__}")
        self.model_fn, self.loss_fn, self.predict_fn = model_fn, loss_fn, predict_fn
        self.augment_fn, self.seed = augment_fn, seed

    def __getstate__(self):
        return (self.model_fn, self.loss_fn, self.predict_fn, self.augment_fn, self.seed)

    def __setstate__(self, state):
        self.model_fn, self.loss_fn, self.predict_fn, self.augment_fn, self.seed = state


def sample_rng(seed, epoch, index):
    """The random numbers of one training sample's augmentation: a function of the run's seed,
    the epoch and the sample (a string seed is hashed with SHA-512, the same on every Python)."""
    return random.Random(f"minigrad-augment:{seed}:{epoch}:{index}")


class SampleResult:
    """One sample's loss, prediction, gradient (a float64 buffer in tensor order: an
    ``array("d")``, bytes, or a row of the pool's gradient slab; None when evaluating),
    engine time (``started`` on the ``time.perf_counter`` clock, which all processes of
    a machine share on Linux, and ``seconds``) and the worker that computed it."""

    __slots__ = ("index", "loss", "prediction", "grad", "seconds", "worker", "started")

    def __init__(self, index, loss, prediction, grad, seconds, worker=0, started=None):
        self.index, self.loss, self.prediction = index, loss, prediction
        self.grad, self.seconds, self.worker, self.started = grad, seconds, worker, started

    def as_tuple(self):
        return (self.index, self.loss, self.prediction, self.grad, self.seconds, self.worker, self.started)


class TensorLayout:
    """Names, shapes and offsets of a model's tensors inside a flat tensor-order buffer."""

    def __init__(self, model):
        self.names, self.shapes, self.offsets = [], [], [0]
        for name, shape, values in model.named_tensors():
            self.names.append(name)
            self.shapes.append(tuple(shape))
            self.offsets.append(self.offsets[-1] + len(values))
        self.size = self.offsets[-1]

    def split(self, flat):
        """``{tensor name: slice of flat}`` (numpy views when ``flat`` is an array)."""
        return {name: flat[self.offsets[i]:self.offsets[i + 1]] for i, name in enumerate(self.names)}


def tensor_order_parameters(model):
    """The model's parameter Values in tensor order."""
    return [p for _, _, values in model.named_tensors() for p in values]


def pack(values):
    """Floats -> float64 bytes (native order; parent and workers share the machine)."""
    return array("d", values).tobytes()


def unpack(buffer):
    """A float64 buffer (bytes, memoryview, array, numpy array) -> ``array("d")``, through
    ``frombytes``: on PyPy the fast way across (``memoryview.tolist`` costs as much as a sample)."""
    if isinstance(buffer, array):
        return buffer
    values = array("d")
    values.frombytes(memoryview(buffer).cast("B"))
    return values


def _checked(loss):
    """``loss`` if it is a Value, else the user's mistake in one line."""
    if not isinstance(loss, Value):
        got = f"{type(loss).__name__} {loss!r}" if isinstance(loss, (int, float)) else type(loss).__name__
        raise LossTypeError(f"Expected loss_fn(outputs, target) to return a minigrad Value, got {got}")
    return loss


def get_sample(dataset, index):
    """``(input, target)`` of one example: a ``minigrad.data.Dataset`` or anything with ``[i]``."""
    images, labels = getattr(dataset, "images", None), getattr(dataset, "labels", None)
    if images is not None and labels is not None:
        x, y = images[index], labels[index]
    else:
        x, y = dataset[index]
    if hasattr(x, "tolist"):
        x = x.tolist()  # nested lists of floats: the layers' fastest input
    if hasattr(y, "tolist"):
        y = y.tolist()  # a numpy scalar becomes an int or float
    return x, y


def argmax(outputs):
    """Index of the largest output (the first one on ties, as torch.argmax)."""
    values = [o.v if isinstance(o, Value) else float(o) for o in flatten(outputs)]
    return max(range(len(values)), key=values.__getitem__)


class Replica:
    """A model copy in one worker (or in the parent when workers=0)."""

    def __init__(self, payload):
        self.model = payload.model_fn()
        self.loss_fn = payload.loss_fn
        self.predict_fn = payload.predict_fn or argmax
        self.augment_fn, self.seed = payload.augment_fn, payload.seed
        self.params = tensor_order_parameters(self.model)
        self.datasets = {}

    def add_dataset(self, key, dataset):
        self.datasets[key] = dataset

    def set_parameters(self, buffer):
        values = unpack(buffer)
        if len(values) != len(self.params):
            raise ValueError(f"Expected {len(self.params)} parameters, got {len(values)}")
        for p, v in zip(self.params, values):
            p.v = v

    def compute(self, mode, key, index, worker=0, epoch=0):
        """Loss, prediction and (when training) the gradient of one sample, as a ``SampleResult``."""
        loss, prediction, started, seconds = self.run_sample(mode, key, index, epoch)
        grad = self.gradient() if mode == "train" else None
        return SampleResult(index, loss, prediction, grad, seconds, worker, started)

    def run_sample(self, mode, key, index, epoch=0):
        """``(loss, prediction, started, seconds)`` of one sample; when training, its gradient is
        left in the parameters' ``.grad`` (``gradient()``, ``write_gradient(row)``). A training
        sample is augmented with ``augment_fn`` from ``sample_rng(seed, epoch, index)``."""
        start = time.perf_counter()  # reading and augmenting the sample is the worker's work too
        x, y = get_sample(self.datasets[key], index)
        if mode == "train" and self.augment_fn is not None:
            x = self.augment_fn(x, sample_rng(self.seed, epoch, index))
        if mode == "eval":
            with no_grad():
                outputs = self.model(x)
                loss = _checked(self.loss_fn(outputs, y))
        else:
            for p in self.params:
                p.grad = 0.0
            outputs = self.model(x)
            loss = _checked(self.loss_fn(outputs, y))
            loss.backward()
        prediction = self.predict_fn(outputs)
        loss = loss.v
        del outputs  # frees the graph: engine work, timed with it
        return loss, prediction, start, time.perf_counter() - start

    def gradient(self):
        """The last training sample's gradient, in tensor order."""
        return array("d", map(_grad, self.params))

    def write_gradient(self, row):
        """The last training sample's gradient into ``row`` (a float64 memoryview of the slab)."""
        row[:] = array("d", map(_grad, self.params))


_grad = attrgetter("grad")
