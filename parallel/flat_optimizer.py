"""SGD and Adam over one flat float64 array: ``minigrad.optimizer``'s updates, vectorized.

The trainer keeps the parameters as one numpy array in tensor order (``TensorLayout``) and the
averaged gradient as another. ``FlatSGD`` and ``FlatAdam`` step that array in place with the
same float operations, in the same order, as ``minigrad.optimizer.SGD`` and ``Adam`` step a
list of Values, so the parameters come out the same bits (each numpy ufunc rounds every
element exactly as the Python float operation does)::

    params = np.array([p.v for p in tensor_order_parameters(model)])
    opt = FlatAdam(params, lr=1e-3, order=parameter_order(model))
    opt.lr = lr_at(...)   # the lr may change every step
    opt.step(grad)        # grad: float64, tensor order; params is updated in place

``state_dict()`` is the one ``minigrad.optimizer`` writes for the same model (state lists in
``model.parameters()`` order, which ``order`` maps to), so checkpoints keep their format, and
``load_state_dict`` (or ``flat_optimizer_from_state``) resumes from either kind.
"""
import math
from abc import ABC, abstractmethod

import numpy as np

from minigrad.core import Value
from minigrad.optimizer import SGD, Adam, _check_real
from minigrad.portable_math import power

from .replica import tensor_order_parameters


def parameter_order(model):
    """``order`` with ``flat[order]`` = the tensor-order array ``flat`` in ``model.parameters()`` order."""
    position = {id(p): i for i, p in enumerate(tensor_order_parameters(model))}
    return np.array([position[id(p)] for p in model.parameters()], dtype=np.intp)


class FlatOptimizer(ABC):
    """The flat parameter array, its order map, the step count and the ``state_dict`` round trip.

    ``params`` is a 1-D float64 numpy array (it may live in shared memory) that ``step`` updates
    in place; ``order`` is ``parameter_order(model)`` (None: the array is already in parameter order).
    """

    reference = None  # the minigrad.optimizer class whose arithmetic and state format this one has
    state_names = ()

    def __init__(self, params, lr, order=None, **hyperparameters):
        if not isinstance(params, np.ndarray) or params.dtype != np.float64 or params.ndim != 1:
            got = f"{params.dtype} array of shape {params.shape}" if isinstance(params, np.ndarray) \
                else type(params).__name__
            raise ValueError(f"Expected params to be a 1-D float64 numpy array, got {got}")
        self.params = params
        self.order = _checked_order(order, params.size)
        checked = self.reference([Value(0.0)], lr, **hyperparameters)  # validates the hyperparameters
        self._adopt(checked)
        self.lr = lr
        self.step_count = 0

    def step(self, grad):
        """Update ``params`` in place from ``grad`` (float64, same order and length as ``params``)."""
        _check_real("lr", self.lr)
        grad = np.asarray(grad, dtype=np.float64)
        if grad.shape != self.params.shape:
            raise ValueError(f"Expected a gradient of shape {self.params.shape}, got {grad.shape}")
        self.step_count += 1
        self._update(grad)

    def state_dict(self):
        """Exactly ``minigrad.optimizer``'s ``state_dict()`` for the same model and history."""
        state = {}
        for name in self.state_names:
            values = getattr(self, name)
            state[name] = None if values is None else self._to_parameter_order(values).tolist()
        return {"type": self.reference.__name__, "hyperparameters": self.hyperparameters(),
                "step": self.step_count, "state": state}

    def load_state_dict(self, state_dict):
        """Resume from a ``state_dict()`` of this class or of ``minigrad.optimizer``; all or nothing."""
        placeholders = [Value(0.0) for _ in range(self.params.size)]
        checked = self.reference(placeholders, lr=0.0)
        checked.load_state_dict(state_dict)  # raises ValueError, expected vs got, on any mismatch
        self._adopt(checked)
        self.lr = checked.lr
        for name in self.state_names:
            values = getattr(checked, name)
            setattr(self, name, None if values is None else self._from_parameter_order(values))
        self.step_count = checked.step_count

    def hyperparameters(self):
        return self.reference.hyperparameters(self)

    def _to_parameter_order(self, values):
        return values if self.order is None else values[self.order]

    def _from_parameter_order(self, values):
        values = np.array(values, dtype=np.float64)
        if self.order is None:
            return values
        flat = np.empty_like(values)
        flat[self.order] = values
        return flat

    @abstractmethod
    def _adopt(self, checked):
        """Take the hyperparameters of a validated ``reference`` optimizer."""

    @abstractmethod
    def _update(self, grad):
        """Apply one update to ``params``; ``self.step_count`` already counts it."""


class FlatSGD(FlatOptimizer):
    """``minigrad.optimizer.SGD``: weight decay, then momentum (dampening, nesterov)."""

    reference = SGD
    state_names = ("momentum_buffer",)

    def __init__(self, params, lr, momentum=0.0, weight_decay=0.0, nesterov=False, dampening=0.0, order=None):
        self.momentum_buffer = None
        super().__init__(params, lr, order, momentum=momentum, weight_decay=weight_decay,
                         nesterov=nesterov, dampening=dampening)

    def _adopt(self, checked):
        self.momentum, self.weight_decay = checked.momentum, checked.weight_decay
        self.nesterov, self.dampening = checked.nesterov, checked.dampening

    def _update(self, grad):
        params, wd, mu = self.params, self.weight_decay, self.momentum
        if wd:
            grad = grad + wd * params
        if mu:
            buf = self.momentum_buffer
            if buf is None:
                buf = grad.copy()  # never an alias of the caller's gradient
            else:
                buf *= mu
                buf += (1 - self.dampening) * grad
            self.momentum_buffer = buf
            grad = grad + mu * buf if self.nesterov else buf
        params += -self.lr * grad


class FlatAdam(FlatOptimizer):
    """``minigrad.optimizer.Adam`` (torch's update, L2 weight decay added to the gradient)."""

    reference = Adam
    state_names = ("exp_avg", "exp_avg_sq")

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, order=None):
        self.exp_avg = self.exp_avg_sq = None
        super().__init__(params, lr, order, betas=betas, eps=eps, weight_decay=weight_decay)

    def _adopt(self, checked):
        self.betas, self.eps, self.weight_decay = checked.betas, checked.eps, checked.weight_decay

    def _update(self, grad):
        params, wd = self.params, self.weight_decay
        beta1, beta2 = self.betas
        if wd:
            grad = grad + wd * params
        if self.exp_avg is None:
            self.exp_avg, self.exp_avg_sq = np.zeros_like(params), np.zeros_like(params)
        m, v = self.exp_avg, self.exp_avg_sq
        w = 1 - beta1
        if w < 0.5:  # m + w*(g - m)
            m += w * (grad - m)
        else:        # g - (g - m)*(1 - w)
            np.subtract(grad, (grad - m) * (1 - w), out=m)
        v *= beta2
        v += (1 - beta2) * grad * grad
        t = self.step_count
        neg_step_size = -(self.lr / (1 - power(beta1, t)))
        bias_correction2_sqrt = math.sqrt(1 - power(beta2, t))
        denominator = np.sqrt(v)
        denominator /= bias_correction2_sqrt
        denominator += self.eps
        params += neg_step_size * m / denominator


FLAT_OPTIMIZERS = {cls.reference.__name__: cls for cls in (FlatSGD, FlatAdam)}


def flat_optimizer_from_state(params, state_dict, order=None):
    """The flat optimizer continuing ``state_dict`` (from a flat or a ``minigrad.optimizer``)."""
    kind = state_dict.get("type") if isinstance(state_dict, dict) else None
    if not isinstance(kind, str) or kind not in FLAT_OPTIMIZERS:
        raise ValueError(f"Expected an optimizer state with a type in {sorted(FLAT_OPTIMIZERS)}, got {kind!r}")
    opt = FLAT_OPTIMIZERS[kind](params, lr=0.0, order=order)
    opt.load_state_dict(state_dict)
    return opt


def _checked_order(order, n):
    if order is None:
        return None
    order = np.asarray(order)
    if order.shape != (n,) or order.dtype.kind not in "iu" or not np.array_equal(np.sort(order), np.arange(n)):
        raise ValueError(f"Expected order to be a permutation of range({n}) (parameter_order(model)), "
                         f"got {order.dtype} array of shape {order.shape}")
    return order.astype(np.intp, copy=False)
