"""Optimizers: SGD and Adam with exactly torch.optim's update rules, in float64.

An optimizer holds the list of parameter Values and, for its state, plain lists of floats in
the same order (Adam's ``exp_avg[i]`` belongs to ``parameters[i]``): one pass over a list is
the fastest loop Python has, and the lists go straight into a JSON checkpoint.

    opt = SGD(model.parameters(), lr=0.1, momentum=0.9)
    for step in range(n):
        opt.zero_grad()
        loss = ...; loss.backward()
        opt.lr = lr_at("cosine", 0.1, step, n)   # lr is a plain attribute
        opt.step()

Every parameter takes part in every step: a gradient is always a float in ``p.grad`` (0.0 when
nothing reached it), unlike torch, which skips parameters whose ``grad`` is None. A Value
gradient, left by ``backward(create_graph=True)``, is read as its float.
"""
import math
from abc import ABC, abstractmethod

from .checks import int_at_least, is_finite_real
from .core import Value
from .portable_math import power
from .schedule import lr_at  # noqa: F401  (re-exported: schedules go with optimizers)


class Optimizer(ABC):
    """The parameter list, the step count, ``zero_grad`` and the shape of ``state_dict``."""

    def __init__(self, parameters, lr):
        self.params = _parameter_list(parameters)
        _check_real("lr", lr)
        self.lr = lr
        self.step_count = 0

    def zero_grad(self):
        for p in self.params:
            p.grad = 0.0

    def step(self):
        """Update every parameter once from its current gradient."""
        _check_real("lr", self.lr)
        grads = list(map(float, [p.grad for p in self.params]))
        self.step_count += 1
        self._update(grads)

    @abstractmethod
    def _update(self, grads):
        """Apply one update; ``self.step_count`` already counts it."""

    @abstractmethod
    def hyperparameters(self):
        """The constructor's keyword arguments, JSON-able."""

    @abstractmethod
    def _state(self):
        """``{name: list of floats in parameter order, or None before it exists}``."""

    @abstractmethod
    def _set(self, hyperparameters, state):
        """Adopt checked hyperparameters and state."""

    def state_dict(self):
        """A JSON-able snapshot: type, hyperparameters, step count, per-parameter state lists."""
        state = {k: None if v is None else list(v) for k, v in self._state().items()}
        return {"type": type(self).__name__, "hyperparameters": self.hyperparameters(),
                "step": self.step_count, "state": state}

    def load_state_dict(self, state_dict):
        """Resume from ``state_dict()`` output (hyperparameters included); all or nothing."""
        hyper, step, state = self._checked(state_dict)
        self._set(hyper, state)
        self.step_count = step

    def _checked(self, sd):
        kind = type(self).__name__
        if not isinstance(sd, dict):
            raise ValueError(f"Expected an optimizer state dict, got {type(sd).__name__}")
        if sd.get("type") != kind:
            raise ValueError(f"Expected optimizer state of type {kind!r}, got {sd.get('type')!r}")
        _check_keys("optimizer state", sd, ["type", "hyperparameters", "step", "state"])
        step = int_at_least("step", sd["step"], 0)
        hyper = sd["hyperparameters"]
        _check_keys("hyperparameters", hyper, list(self.hyperparameters()))
        type(self)(self.params, **hyper)  # the constructor validates them
        state = sd["state"]
        _check_keys("state", state, list(self._state()))
        lists = {k: self._checked_list(k, v) for k, v in state.items()}
        return hyper, step, lists

    def _checked_list(self, name, values):
        if values is None:
            return None
        n = len(self.params)
        if not isinstance(values, list) or len(values) != n:
            got = f"{len(values)} values" if isinstance(values, list) else type(values).__name__
            raise ValueError(f"Expected state {name} to hold {n} values, got {got}")
        for i, x in enumerate(values):
            if not is_finite_real(x):
                raise ValueError(f"Expected state {name}[{i}] to be a finite number, got {x!r}")
        return [float(x) for x in values]


class SGD(Optimizer):
    """torch.optim.SGD: weight decay, then momentum (buffer starts as the first gradient), nesterov."""

    def __init__(self, parameters, lr, momentum=0.0, weight_decay=0.0, nesterov=False, dampening=0.0):
        super().__init__(parameters, lr)
        _check_real("momentum", momentum)
        _check_real("weight_decay", weight_decay)
        _check_real("dampening", dampening, upper=1.0)
        if not isinstance(nesterov, bool):
            raise ValueError(f"Expected nesterov to be True or False, got {nesterov!r}")
        if nesterov and (momentum == 0 or dampening != 0):
            raise ValueError(f"Expected momentum > 0 and dampening == 0 with nesterov, "
                             f"got momentum={momentum!r}, dampening={dampening!r}")
        self.momentum, self.weight_decay = float(momentum), float(weight_decay)
        self.nesterov, self.dampening = nesterov, float(dampening)
        self.momentum_buffer = None

    def _update(self, grads):
        params, wd, mu = self.params, self.weight_decay, self.momentum
        if wd:
            grads = [g + wd * p.v for g, p in zip(grads, params)]
        if mu:
            buf = self.momentum_buffer
            if buf is None:
                buf = grads
            else:
                keep = 1 - self.dampening
                buf = [b * mu + keep * g for b, g in zip(buf, grads)]
            self.momentum_buffer = buf
            grads = [g + mu * b for g, b in zip(grads, buf)] if self.nesterov else buf
        neg_lr = -self.lr
        for p, g in zip(params, grads):
            p.v = p.v + neg_lr * g

    def hyperparameters(self):
        return {"lr": self.lr, "momentum": self.momentum, "weight_decay": self.weight_decay,
                "nesterov": self.nesterov, "dampening": self.dampening}

    def _state(self):
        return {"momentum_buffer": self.momentum_buffer}

    def _checked(self, sd):
        hyper, step, state = super()._checked(sd)
        has_buffer = hyper["momentum"] != 0 and step > 0
        if (state["momentum_buffer"] is not None) != has_buffer:
            raise ValueError(f"Expected {'a' if has_buffer else 'no'} momentum_buffer with momentum "
                             f"{hyper['momentum']!r} after {step} steps, got "
                             f"{'none' if state['momentum_buffer'] is None else 'one'}")
        return hyper, step, state

    def _set(self, hyper, state):
        self.lr, self.momentum = float(hyper["lr"]), float(hyper["momentum"])
        self.weight_decay, self.dampening = float(hyper["weight_decay"]), float(hyper["dampening"])
        self.nesterov = hyper["nesterov"]
        self.momentum_buffer = state["momentum_buffer"]


class Adam(Optimizer):
    """torch.optim.Adam (not amsgrad), with L2 weight decay added to the gradient as torch does."""

    def __init__(self, parameters, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        super().__init__(parameters, lr)
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise ValueError(f"Expected betas to be a pair of numbers, got {betas!r}")
        _check_real("betas[0]", betas[0], upper=1.0, upper_open=True)
        _check_real("betas[1]", betas[1], upper=1.0, upper_open=True)
        _check_real("eps", eps)
        _check_real("weight_decay", weight_decay)
        self.betas = (float(betas[0]), float(betas[1]))
        self.eps, self.weight_decay = float(eps), float(weight_decay)
        self.exp_avg = self.exp_avg_sq = None

    def _update(self, grads):
        params, wd = self.params, self.weight_decay
        beta1, beta2 = self.betas
        if wd:
            grads = [g + wd * p.v for g, p in zip(grads, params)]
        m, v = self.exp_avg, self.exp_avg_sq
        if m is None:
            m = v = [0.0] * len(params)
        # torch's lerp_(grad, w): m + w*(g - m) for w < 0.5, else g - (g - m)*(1 - w)
        w = 1 - beta1
        if w < 0.5:
            m = [a + w * (g - a) for a, g in zip(m, grads)]
        else:
            m = [g - (g - a) * (1 - w) for a, g in zip(m, grads)]
        c = 1 - beta2
        v = [b * beta2 + c * g * g for b, g in zip(v, grads)]
        self.exp_avg, self.exp_avg_sq = m, v
        t = self.step_count
        neg_step_size = -(self.lr / (1 - power(beta1, t)))
        bias_correction2_sqrt = math.sqrt(1 - power(beta2, t))
        eps, sqrt = self.eps, math.sqrt
        for p, a, b in zip(params, m, v):
            p.v = p.v + neg_step_size * a / (sqrt(b) / bias_correction2_sqrt + eps)

    def hyperparameters(self):
        return {"lr": self.lr, "betas": list(self.betas), "eps": self.eps,
                "weight_decay": self.weight_decay}

    def _state(self):
        return {"exp_avg": self.exp_avg, "exp_avg_sq": self.exp_avg_sq}

    def _checked(self, sd):
        hyper, step, state = super()._checked(sd)
        for name, values in state.items():
            if (values is not None) != (step > 0):
                raise ValueError(f"Expected {'a list' if step else 'null'} for {name} after {step} "
                                 f"steps, got {'null' if values is None else 'a list'}")
        return hyper, step, state

    def _set(self, hyper, state):
        self.lr, self.eps = float(hyper["lr"]), float(hyper["eps"])
        self.betas = (float(hyper["betas"][0]), float(hyper["betas"][1]))
        self.weight_decay = float(hyper["weight_decay"])
        self.exp_avg, self.exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]


OPTIMIZERS = {"SGD": SGD, "Adam": Adam}


def optimizer_from_state(parameters, state_dict):
    """The optimizer ``state_dict`` was taken from, over ``parameters``, ready to continue."""
    kind = state_dict.get("type") if isinstance(state_dict, dict) else None
    if not isinstance(kind, str) or kind not in OPTIMIZERS:
        raise ValueError(f"Expected an optimizer state with a type in {sorted(OPTIMIZERS)}, got {kind!r}")
    opt = OPTIMIZERS[kind](parameters, lr=0.0)  # hyperparameters come from the state
    opt.load_state_dict(state_dict)
    return opt


def _parameter_list(parameters):
    if hasattr(parameters, "forward"):
        raise ValueError(f"Expected a list of parameter Values (model.parameters()), "
                         f"got the module {type(parameters).__name__}")
    params = list(parameters)
    if not params:
        raise ValueError("Expected at least one parameter, got none")
    for i, p in enumerate(params):
        if not isinstance(p, Value):
            raise ValueError(f"Expected parameter {i} to be a Value, got {type(p).__name__}")
    if len({id(p) for p in params}) != len(params):
        raise ValueError("Expected each parameter once, got duplicates")
    return params


def _check_real(name, x, upper=None, upper_open=False):
    """``x`` is a finite real number >= 0 (and <= upper, or < upper when upper_open)."""
    if not is_finite_real(x):
        raise ValueError(f"Expected {name} to be a finite number, got {x!r}")
    if x < 0:
        raise ValueError(f"Expected {name} >= 0, got {x!r}")
    if upper is not None and (x >= upper if upper_open else x > upper):
        raise ValueError(f"Expected {name} {'<' if upper_open else '<='} {upper}, got {x!r}")


def _check_keys(what, d, expected):
    if not isinstance(d, dict):
        raise ValueError(f"Expected {what} to be a dict, got {type(d).__name__}")
    if sorted(d) != sorted(expected):
        raise ValueError(f"Expected {what} keys {sorted(expected)}, got {sorted(d)}")
