"""Layers built from Values: Neuron, Linear, Conv2D, pooling, Sequential and the LeCun-style CNN.

Inputs are nested lists (a feature map is ``[channel][row][column]``) of Values or of plain
floats; numpy arrays are accepted and read as floats. Floats are constants: no gradient
is computed for them, which is what an input image wants.

Parameter names
---------------
``named_parameters()`` lists every parameter Value in ``get_parameters()`` order (layer by
layer, neuron by neuron, a neuron's weights then its bias) under a dotted name: the path of
the layer, then the tensor, then the index in PyTorch's layout. ``hidden.weight.3.17`` is
weight 17 of neuron 3 of the layer ``hidden`` (torch's ``hidden.weight[3, 17]``);
``conv.0.weight.2.0.4.1`` is output channel 2, input channel 0, kernel row 4, column 1;
``conv.0.bias.2`` its bias. ``state_dict()`` groups the same numbers by tensor, as nested
lists shaped like torch's (``{"conv.0.weight": [[[[...]]]], "conv.0.bias": [...], ...}``).

Fused or op by op
-----------------
By default a neuron's ``b + sum(w_i * x_i)`` is one node (``WeightedSumBackward``). With
``module.set_fused(False)`` (or ``fused=False`` to a layer) the same sum is built from one
multiply and one add per weight, the graph a learner draws by hand. Both compute the same
values bit for bit; their gradients agree to rounding (about 1e-12 relative), since the fused
layer adds a shared weight's contributions in another order. The fused one is many times faster.
"""
import functools
import math
import random
from abc import ABC, abstractmethod

from . import checkpoint
from .checks import is_finite_real, positive_int
from .core import Value, value_max, value_sum
from .fused import input_gathers, tuple_getter, weighted_sums
from .losses import cross_entropy, mse_loss  # noqa: F401  (re-exported: nn.mse_loss)
from .nested import as_value_array, flatten, nest

INIT_SCALE = 2.89  # LeCun 1989: weights uniform in +-2.89 / sqrt(fan_in) for tanh units
LAYER_TYPES = {}  # a config's "type" -> the Module subclass that builds it, filled as each class is defined


def _rng(seed):
    return seed if isinstance(seed, random.Random) else random.Random(seed)


class _model_or_class_method:
    """A method that receives the instance when called on one, the class when called on the class."""

    def __init__(self, fn):
        self.fn = fn
        self.__doc__ = fn.__doc__

    def __get__(self, obj, cls):
        return functools.partial(self.fn, cls if obj is None else obj)


class Module(ABC):
    """Base of every layer: parameters, gradients, state and calling convention."""

    fused = True

    @abstractmethod
    def forward(self, x):
        """The layer's output for one input."""

    def __call__(self, x):
        return self.forward(x)

    def children(self):
        """``(name, module)`` pairs of the sub-layers, in forward order."""
        return []

    def own_parameters(self):
        """``(name, Value)`` pairs of this layer's own parameters, in checkpoint order."""
        return []

    def own_parameter_values(self):
        """The Values of ``own_parameters()`` without their names (the fast path of ``parameters()``)."""
        return [p for _, p in self.own_parameters()]

    def own_tensors(self):
        """``(name, shape, values)`` of this layer's own parameter tensors, torch layout."""
        return []

    def named_parameters(self, prefix=""):
        named = [(prefix + name, p) for name, p in self.own_parameters()]
        for name, child in self.children():
            named.extend(child.named_parameters(f"{prefix}{name}."))
        return named

    def parameters(self):
        if type(self).get_parameters is not Module.get_parameters:
            return list(self.get_parameters())  # a model written for the original, which names its own
        return self._layer_parameters()

    def get_parameters(self):
        """``parameters()`` under the original minigrad's name."""
        return self._layer_parameters()

    def _layer_parameters(self):
        params = self.own_parameter_values()
        for _, child in self.children():
            params.extend(child.parameters())
        return params

    def named_tensors(self, prefix=""):
        tensors = [(prefix + name, shape, values) for name, shape, values in self.own_tensors()]
        for name, child in self.children():
            tensors.extend(child.named_tensors(f"{prefix}{name}."))
        return tensors

    def zero_grad(self):
        for p in self.parameters():
            p.grad = 0.0

    def set_fused(self, fused):
        """Switch every layer between the fused weighted-sum node and the op-by-op graph."""
        self.fused = bool(fused)
        for neuron in getattr(self, "neurons", ()):
            neuron.fused = self.fused
        for _, child in self.children():
            child.set_fused(fused)
        return self

    def config(self):
        """A JSON-able description from which ``module_from_config`` rebuilds the architecture."""
        raise NotImplementedError(f"{type(self).__name__} has no config")

    @classmethod
    def from_config(cls, config, rng):
        """A freshly initialised layer of ``config`` (its ``config()``), weights drawn from ``rng``."""
        raise NotImplementedError(f"{cls.__name__} cannot be built from a config")

    @classmethod
    def build_size(cls, config):
        """About how many Values and window indices ``from_config(config)`` would create, read from
        the config alone, before anything is built (a malformed field counts as 1: the constructor
        refuses it)."""
        return 0

    def __init_subclass__(cls, **kwargs):
        """A public subclass with a ``from_config`` is a layer type that ``module_from_config`` builds;
        a class of another module never takes the name of one of this module's layers."""
        super().__init_subclass__(**kwargs)
        if cls.__name__.startswith("_") or cls.from_config.__func__ is Module.from_config.__func__:
            return
        known = LAYER_TYPES.get(cls.__name__)
        if known is None or known.__module__ != __name__ or cls.__module__ == __name__:
            LAYER_TYPES[cls.__name__] = cls

    def state_dict(self):
        """``{tensor name: nested list of floats}``, shaped like the PyTorch equivalent."""
        return {name: nest([p.v for p in values], shape)
                for name, shape, values in self.named_tensors()}

    def load_state_dict(self, state):
        """Set every parameter from ``state``; on any mismatch raise and change nothing."""
        tensors = self.named_tensors()
        expected = [name for name, _, _ in tensors]
        if not isinstance(state, dict):
            raise ValueError(f"Expected a dict of tensors, got {type(state).__name__}")
        missing = [k for k in expected if k not in state]
        unexpected = [k for k in state if k not in set(expected)]
        if missing or unexpected:
            raise ValueError(f"State dict does not match the model: missing {missing}, unexpected {unexpected}")
        updates = []
        for name, shape, values in tensors:
            flat = _unnest(state[name], shape, name)
            updates.append((values, flat))
        for values, flat in updates:
            for p, v in zip(values, flat):
                p.v = v

    def parameter_values(self):
        return [p.v for p in self.parameters()]

    def load_parameter_values(self, values):
        """Set parameters from a flat sequence in ``get_parameters()`` order (all or nothing)."""
        params = self.parameters()
        values = list(values)
        if len(values) != len(params):
            raise ValueError(f"Expected {len(params)} parameter values, got {len(values)}")
        for i, v in enumerate(values):
            if not is_finite_real(v):
                raise ValueError(f"Expected finite numbers as parameter values, got {v!r} at index {i}")
        for p, v in zip(params, values):
            p.v = float(v)

    def save(self, path, /, **extra):
        """Write a JSON checkpoint (atomically): format version, config, named tensors, ``extra``."""
        checkpoint.save(path, self, **extra)

    @_model_or_class_method
    def load(self_or_cls, path):
        """Load a checkpoint (the project's JSON or the original flat array); all or nothing.

        ``model.load(path)`` sets this model's parameters and returns it; ``CNN.load(path)``
        builds a new model from the checkpoint's architecture (a flat array: the reference CNN).
        """
        ckpt = checkpoint.read(path)
        if not isinstance(self_or_cls, type):
            return checkpoint.load_into(self_or_cls, ckpt)
        model = module_from_checkpoint(ckpt)
        if not isinstance(model, self_or_cls):
            raise checkpoint.CheckpointError(
                f"{path}: expected a {self_or_cls.__name__} checkpoint, got a {type(model).__name__}")
        return model


def _unnest(nested, shape, name):
    """Flatten ``nested`` checking it has exactly ``shape`` and holds finite numbers."""
    def walk(x, depth, path):
        if depth == len(shape):
            if isinstance(x, bool) or not isinstance(x, (int, float)):
                raise ValueError(f"{name}{path}: expected a number, got {type(x).__name__}")
            if not is_finite_real(x):
                raise ValueError(f"{name}{path}: expected a finite number, got {x!r}")
            out.append(float(x))
            return
        if not isinstance(x, list) or len(x) != shape[depth]:
            got = len(x) if isinstance(x, list) else type(x).__name__
            raise ValueError(f"{name}{path}: expected a list of {shape[depth]}, got {got}")
        for i, item in enumerate(x):
            walk(item, depth + 1, f"{path}[{i}]")
    out = []
    walk(nested, 0, "")
    return out


# ---- activations ----

ACTIVATIONS = {
    "identity": None,
    "tanh": Value.tanh,
    "relu": Value.relu,
    "sigmoid": Value.sigmoid,
}


def activation_name(activation):
    """The name under which ``activation`` is stored in a config."""
    if activation is None:
        return "identity"
    if isinstance(activation, str):
        if activation not in ACTIVATIONS:
            raise ValueError(f"Expected an activation in {sorted(ACTIVATIONS)}, got {activation!r}")
        return activation
    name = getattr(activation, "__name__", None)
    if name in ACTIVATIONS:
        return name
    if isinstance(activation, Module) and type(activation).__name__.lower() in ACTIVATIONS:
        return type(activation).__name__.lower()
    raise ValueError(f"Expected an activation in {sorted(ACTIVATIONS)} or None, got {activation!r}")


def _activation_fn(activation):
    """The per-Value function for ``activation`` (a name, minigrad.tanh and friends, or None)."""
    return ACTIVATIONS[activation_name(activation)]


def _apply(fn, x):
    if isinstance(x, list):
        return [_apply(fn, item) for item in x]
    return fn(x)


class _Activation(Module):
    fn = None

    def forward(self, x):
        return _apply(self.fn, x)

    def config(self):
        return {"type": type(self).__name__}

    @classmethod
    def from_config(cls, config, rng):
        return cls()


class Tanh(_Activation):
    fn = staticmethod(Value.tanh)


class ReLU(_Activation):
    fn = staticmethod(Value.relu)


class Sigmoid(_Activation):
    fn = staticmethod(Value.sigmoid)


# ---- neurons and layers ----

def _as_floats_or_values(x):
    """A flat list, and its payloads: ``(values or None, floats)``; None when no item needs a gradient."""
    if hasattr(x, "tolist"):
        x = x.tolist()
    if len(x) and isinstance(x[0], Value):
        floats = [item.v for item in x]
        return (None if [item.grad for item in x].count(None) == len(x) else x), floats
    return None, [float(item) for item in x]


class Neuron(Module):
    """``activation(bias + sum(weight_i * x_i))`` for an input of ``in_dim`` numbers.

    ``weight`` (a list of ``in_dim`` Values) and ``bias`` (a Value) may be reassigned, with
    Values or plain numbers; the next forward, ``parameters()`` and checkpoints use what was
    assigned. ``w`` and ``b`` are the same attributes under micrograd's short names.
    """

    def __init__(self, in_dim, activation=None, seed=None, fused=True):
        positive_int("in_dim", in_dim)
        rng = _rng(seed)
        bound = INIT_SCALE / math.sqrt(in_dim)
        self.in_dim = in_dim
        self.weight = [Value(rng.uniform(-bound, bound)) for _ in range(in_dim)]
        self.bias = Value(0.0)
        self.activation = activation_name(activation)
        self._act = ACTIVATIONS[self.activation]
        self.fused = fused

    @property
    def weight(self):
        return self._weight

    @weight.setter
    def weight(self, values):
        values = list(values.tolist() if hasattr(values, "tolist") else values)
        if len(values) != self.in_dim:
            raise ValueError(f"Expected {self.in_dim} weights, got {len(values)}")
        self._weight = [x if isinstance(x, Value) else Value(x) for x in values]

    @property
    def bias(self):
        return self._bias

    @bias.setter
    def bias(self, value):
        self._bias = value if isinstance(value, Value) else Value(value)

    w, b = weight, bias

    def own_parameters(self):
        return [(f"weight.{i}", w) for i, w in enumerate(self.w)] + [("bias", self.b)]

    def own_parameter_values(self):
        return self._weight + [self._bias]

    def own_tensors(self):
        return [("weight", (self.in_dim,), self.w), ("bias", (1,), [self.b])]

    def forward(self, x):
        values, floats = _as_floats_or_values(x)
        if len(floats) != self.in_dim:
            raise ValueError(f"Expected {self.in_dim} inputs, got {len(floats)}")
        return _neuron_outputs([self], [floats], None if values is None else [values], self.fused)[0][0]

    def config(self):
        return {"type": "Neuron", "in_dim": self.in_dim, "activation": self.activation}

    @classmethod
    def from_config(cls, config, rng):
        return cls(config["in_dim"], config["activation"], rng)

    @classmethod
    def build_size(cls, config):
        return _dim(config, "in_dim") + 1


def _sum_op_by_op(weights, inputs, bias):
    """``b + w0*x0 + w1*x1 + ...`` with one node per multiply and per add, in that order."""
    s = bias
    for w, x in zip(weights, inputs):
        s = s + w * x
    return s


def _neuron_outputs(neurons, windows, window_values, fused, sources=None, gathers=None):
    """``activation(b + w . window)`` for each neuron (outer list) and window (inner list)."""
    act = neurons[0]._act
    if fused:  # one node per output, its activation included
        activation = None if act is None else neurons[0].activation
        return weighted_sums([n.w for n in neurons], [n.b for n in neurons], windows, window_values,
                             sources, leaf_weights=True, activation=activation, gathers=gathers)
    inputs = window_values if window_values is not None else windows
    sums = [[_sum_op_by_op(n.w, xs, n.b) for xs in inputs] for n in neurons]
    return sums if act is None else [[act(s) for s in row] for row in sums]


class Linear(Module):
    """``out_dim`` neurons reading the same ``in_dim`` inputs."""

    def __init__(self, in_dim, out_dim, activation=None, seed=None, fused=True):
        positive_int("out_dim", out_dim)
        rng = _rng(seed)
        self.in_dim, self.out_dim = in_dim, out_dim
        self.neurons = [Neuron(in_dim, activation, rng, fused) for _ in range(out_dim)]
        self.activation = self.neurons[0].activation
        self.fused = fused

    def own_parameters(self):
        named = []
        for o, n in enumerate(self.neurons):
            named.extend((f"weight.{o}.{i}", w) for i, w in enumerate(n.w))
            named.append((f"bias.{o}", n.b))
        return named

    def own_parameter_values(self):
        return [p for n in self.neurons for p in n.own_parameter_values()]

    def own_tensors(self):
        return [("weight", (self.out_dim, self.in_dim), [w for n in self.neurons for w in n.w]),
                ("bias", (self.out_dim,), [n.b for n in self.neurons])]

    def forward(self, x):
        values, floats = _as_floats_or_values(x)
        if len(floats) != self.in_dim:
            raise ValueError(f"Expected {self.in_dim} inputs, got {len(floats)}")
        outs = _neuron_outputs(self.neurons, [floats], None if values is None else [values], self.fused)
        return [row[0] for row in outs]

    def config(self):
        return {"type": "Linear", "in_dim": self.in_dim, "out_dim": self.out_dim,
                "activation": self.activation}

    @classmethod
    def from_config(cls, config, rng):
        return cls(config["in_dim"], config["out_dim"], config["activation"], rng)

    @classmethod
    def build_size(cls, config):
        return _dim(config, "out_dim") * (_dim(config, "in_dim") + 1)


def _check_feature_map(x, channels, height, width):
    if hasattr(x, "tolist"):
        x = x.tolist()
    if not isinstance(x, (list, tuple)) or len(x) != channels:
        got = len(x) if isinstance(x, (list, tuple)) else type(x).__name__
        raise ValueError(f"Expected {channels} input channels, got {got}")
    for c in x:
        if len(c) != height or any(len(row) != width for row in c):
            got = (len(c), len(c[0]) if len(c) else 0)
            raise ValueError(f"Expected {height}x{width} input maps, got {got[0]}x{got[1]}")
    return x


def _window_indices(channels, height, width, kernel, stride):
    """Per output position, the indices of its window in a flat [c][row][col] list."""
    out_h = (height - kernel) // stride + 1
    out_w = (width - kernel) // stride + 1
    return out_h, out_w, [[c * height * width + (i * stride + di) * width + j * stride + dj
                           for c in range(channels) for di in range(kernel) for dj in range(kernel)]
                          for i in range(out_h) for j in range(out_w)]


def _check_fit(name, size, kernel, stride):
    if kernel > size:
        raise ValueError(f"Expected kernel_size <= {name} {size}, got {kernel}")
    if (size - kernel) % stride != 0:
        raise ValueError(
            f"Expected ({name} - kernel_size) % stride == 0 (no padding), got ({size} - {kernel}) % {stride}"
            f" = {(size - kernel) % stride}")


def _positive_ints(**kwargs):
    for name, v in kwargs.items():
        positive_int(name, v)


class Conv2D(Module):
    """2-D convolution without padding: one neuron per output channel, slid over the input."""

    def __init__(self, width, height, kernel_size, stride, in_channels, out_channels,
                 activation=None, seed=None, fused=True):
        _positive_ints(width=width, height=height, kernel_size=kernel_size, stride=stride,
                       in_channels=in_channels, out_channels=out_channels)
        _check_fit("width", width, kernel_size, stride)
        _check_fit("height", height, kernel_size, stride)
        rng = _rng(seed)
        self.width, self.height = width, height
        self.kernel_size, self.stride = kernel_size, stride
        self.in_channels, self.out_channels = in_channels, out_channels
        # one neuron per output channel, as the original minigrad's ``conv.filters.neurons``
        self.filters = Linear(in_channels * kernel_size * kernel_size, out_channels, activation, rng, fused)
        self.activation = self.filters.activation
        self.out_height, self.out_width, self._windows = _window_indices(
            in_channels, height, width, kernel_size, stride)
        self._getters = [tuple_getter(idx) for idx in self._windows]
        self._gathers = None  # input_gathers of this geometry, built at the first forward that needs them
        self.output_size = out_channels * self.out_height * self.out_width
        self.fused = fused

    @property
    def neurons(self):
        return self.filters.neurons

    def set_fused(self, fused):
        self.filters.set_fused(fused)
        return super().set_fused(fused)

    def own_parameters(self):
        named = []
        k = self.kernel_size
        for o, n in enumerate(self.neurons):
            for i, w in enumerate(n.w):
                named.append((f"weight.{o}.{i // (k * k)}.{i // k % k}.{i % k}", w))
            named.append((f"bias.{o}", n.b))
        return named

    own_parameter_values = Linear.own_parameter_values

    def own_tensors(self):
        k = self.kernel_size
        return [("weight", (self.out_channels, self.in_channels, k, k), [w for n in self.neurons for w in n.w]),
                ("bias", (self.out_channels,), [n.b for n in self.neurons])]

    def output_shape(self):
        return (self.out_channels, self.out_height, self.out_width)

    def forward(self, x):
        x = _check_feature_map(x, self.in_channels, self.height, self.width)
        values, floats = _as_floats_or_values([item for channel in x for row in channel for item in row])
        windows = [get(floats) for get in self._getters]
        window_values = gathers = None
        if values is not None:
            window_values = [get(values) for get in self._getters]
            if self.fused and self._gathers is None:
                self._gathers = input_gathers(self._windows, len(values))
            gathers = self._gathers
        outs = _neuron_outputs(self.neurons, windows, window_values, self.fused, values, gathers)
        w = self.out_width
        return [[out[r * w:(r + 1) * w] for r in range(self.out_height)] for out in outs]

    def config(self):
        return {"type": "Conv2D", "width": self.width, "height": self.height,
                "kernel_size": self.kernel_size, "stride": self.stride,
                "in_channels": self.in_channels, "out_channels": self.out_channels,
                "activation": self.activation}

    @classmethod
    def from_config(cls, config, rng):
        return cls(config["width"], config["height"], config["kernel_size"], config["stride"],
                   config["in_channels"], config["out_channels"], config["activation"], rng)

    @classmethod
    def build_size(cls, config):
        return _conv_size(_dim(config, "in_channels"), _dim(config, "height"), _dim(config, "width"), config)[0]


class _Pool2D(Module):
    def __init__(self, kernel_size, stride=None):
        stride = kernel_size if stride is None else stride
        _positive_ints(kernel_size=kernel_size, stride=stride)
        self.kernel_size, self.stride = kernel_size, stride

    def forward(self, x):
        if hasattr(x, "tolist"):
            x = x.tolist()
        k, s = self.kernel_size, self.stride
        out = []
        for channel in x:
            h, w = len(channel), len(channel[0])
            if k > h or k > w:
                raise ValueError(f"Expected maps of at least {k}x{k} for pooling, got {h}x{w}")
            channel = [[v if isinstance(v, Value) else Value(v) for v in row] for row in channel]
            out.append([[self._reduce([channel[i + di][j + dj] for di in range(k) for dj in range(k)])
                         for j in range(0, w - k + 1, s)]
                        for i in range(0, h - k + 1, s)])
        return out

    def config(self):
        return {"type": type(self).__name__, "kernel_size": self.kernel_size, "stride": self.stride}

    @classmethod
    def from_config(cls, config, rng):
        return cls(config["kernel_size"], config["stride"])


class MaxPool2D(_Pool2D):
    """The largest value of each window (torch's ``max_pool2d``, no padding, floor mode)."""

    @staticmethod
    def _reduce(window):
        return value_max(window)


class AvgPool2D(_Pool2D):
    """The mean of each window (torch's ``avg_pool2d``, no padding, floor mode)."""

    @staticmethod
    def _reduce(window):
        return value_sum(window) / len(window)


class Flatten(Module):
    """Nested lists to one flat list, row-major (a feature map runs channel, row, column)."""

    def forward(self, x):
        if hasattr(x, "tolist"):
            x = x.tolist()
        return flatten(x)

    def config(self):
        return {"type": "Flatten"}

    @classmethod
    def from_config(cls, config, rng):
        return cls()


class Sequential(Module):
    """Layers applied one after another; named ``0``, ``1``, ... as in torch."""

    def __init__(self, *layers):
        if len(layers) == 1 and isinstance(layers[0], (list, tuple)):
            layers = tuple(layers[0])
        for i, layer in enumerate(layers):
            if not isinstance(layer, Module):
                raise TypeError(f"Expected a Module at position {i}, got {type(layer).__name__}")
        self.layers = list(layers)

    def children(self):
        return [(str(i), layer) for i, layer in enumerate(self.layers)]

    def __getitem__(self, i):
        return self.layers[i]

    def __len__(self):
        return len(self.layers)

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        return x

    def config(self):
        return {"type": "Sequential", "layers": [layer.config() for layer in self.layers]}

    @classmethod
    def from_config(cls, config, rng):
        return cls([module_from_config(layer, rng) for layer in config["layers"]])

    @classmethod
    def build_size(cls, config):
        return sum(config_size(layer) for layer in _list(config, "layers"))


class CNNLayerConfig:
    """One convolution of a ``CNN``: output channels, square kernel, stride, activation."""

    __slots__ = ("out_channels", "kernel_size", "stride", "activation")

    def __init__(self, out_channels, kernel_size, stride, activation=None):
        _positive_ints(out_channels=out_channels, kernel_size=kernel_size, stride=stride)
        self.out_channels, self.kernel_size, self.stride = out_channels, kernel_size, stride
        self.activation = activation_name(activation)

    def to_dict(self):
        return {"out_channels": self.out_channels, "kernel_size": self.kernel_size,
                "stride": self.stride, "activation": self.activation}

    def __repr__(self):
        return (f"CNNLayerConfig({self.out_channels}, {self.kernel_size}, {self.stride}, "
                f"{self.activation!r})")


class CNN(Module):
    """Convolutions, then ``Linear(flat, hidden_dim, tanh)``, then ``Linear(hidden_dim, n_classes, tanh)``.

    Sub-layers are named ``conv.0``, ``conv.1``, ..., ``hidden`` and ``output``.
    """

    def __init__(self, width, height, in_channels, layers, hidden_dim=30, n_classes=10,
                 seed=None, fused=True):
        _positive_ints(width=width, height=height, in_channels=in_channels,
                       hidden_dim=hidden_dim, n_classes=n_classes)
        if not layers:
            raise ValueError("Expected at least one CNNLayerConfig, got none")
        layers = [cfg if isinstance(cfg, CNNLayerConfig) else CNNLayerConfig(**cfg) for cfg in layers]
        rng = _rng(seed)
        self.width, self.height, self.in_channels = width, height, in_channels
        self.layer_configs = layers
        self.hidden_dim, self.n_classes = hidden_dim, n_classes
        self.seed = seed if isinstance(seed, int) else None
        self.convs = []
        c, h, w = in_channels, height, width
        for cfg in layers:
            conv = Conv2D(w, h, cfg.kernel_size, cfg.stride, c, cfg.out_channels, cfg.activation, rng, fused)
            self.convs.append(conv)
            c, h, w = conv.output_shape()
        self.flat_dim = c * h * w
        self.hidden = Linear(self.flat_dim, hidden_dim, "tanh", rng, fused)
        self.output = Linear(hidden_dim, n_classes, "tanh", rng, fused)
        self.fused = fused

    @classmethod
    def reference(cls, seed=None, fused=True):
        """The network of the original project: 15x15 input, 5,357 parameters."""
        return cls(15, 15, 1, [CNNLayerConfig(15, 5, 2, "tanh"), CNNLayerConfig(12, 4, 2, "tanh")],
                   hidden_dim=35, n_classes=10, seed=seed, fused=fused)

    def children(self):
        return [(f"conv.{i}", conv) for i, conv in enumerate(self.convs)] + [
            ("hidden", self.hidden), ("output", self.output)]

    def forward(self, x):
        for conv in self.convs:
            x = conv(x)
        return self.output(self.hidden(flatten(x)))

    def config(self):
        return {"type": "CNN", "width": self.width, "height": self.height,
                "in_channels": self.in_channels,
                "layers": [cfg.to_dict() for cfg in self.layer_configs],
                "hidden_dim": self.hidden_dim, "n_classes": self.n_classes}

    @classmethod
    def from_config(cls, config, rng):
        return cls(config["width"], config["height"], config["in_channels"],
                   [CNNLayerConfig(**layer) for layer in config["layers"]],
                   config["hidden_dim"], config["n_classes"], rng)

    @classmethod
    def build_size(cls, config):
        total, c, h, w = 0, _dim(config, "in_channels"), _dim(config, "height"), _dim(config, "width")
        for layer in _list(config, "layers"):
            size, c, h, w = _conv_size(c, h, w, layer)
            total += size
        hidden = _dim(config, "hidden_dim")
        return total + hidden * (c * h * w + 1) + _dim(config, "n_classes") * (hidden + 1)


def reference_cnn(seed=None, fused=True):
    """``CNN.reference``: the original project's 5,357-parameter network."""
    return CNN.reference(seed=seed, fused=fused)


def module_from_config(config, seed=None):
    """A freshly initialised module with the architecture ``config`` describes."""
    kind = config.get("type") if isinstance(config, dict) else None
    if not isinstance(kind, str) or kind not in LAYER_TYPES:
        got = kind if isinstance(config, dict) else type(config).__name__
        raise ValueError(f"Expected a model config with a type in {sorted(LAYER_TYPES)}, got {got!r}")
    try:
        return LAYER_TYPES[kind].from_config(config, _rng(seed))
    except (KeyError, TypeError) as e:
        raise ValueError(f"Model config for {config['type']} is incomplete or malformed: {e}") from None


def module_from_checkpoint(ckpt, seed=None):
    """A new model with ``ckpt``'s architecture and parameters; ``ckpt`` may also be a path.

    A flat checkpoint does not say its architecture: it is taken to be the reference CNN
    (``CNN.reference``, 5,357 parameters) and refused at any other length. A config that would
    build far more than the file's parameters (a hostile ``in_dim`` of a billion) is refused
    before anything is built.
    """
    if not isinstance(ckpt, dict):
        ckpt = checkpoint.read(ckpt)
    name = checkpoint.checkpoint_name(ckpt)
    config = checkpoint.architecture(ckpt)
    if config is None:
        model = CNN.reference(seed=seed)
        n, got = len(model.parameters()), len(ckpt.get("parameters") or ())
        if got != n:
            raise checkpoint.CheckpointError(f"{name}: expected {n} parameters (a flat checkpoint of the "
                                             f"reference CNN), got {got}; build the model and use load_into")
    else:
        n, size = _leaf_count(ckpt["parameters"]), config_size(config)
        if size > 4 * n + 2 ** 22:
            got = f"{size:,}" if size < 10 ** 15 else "more than 10**15"
            raise checkpoint.CheckpointError(
                f"{name}: expected a model config in proportion to the {n:,} parameter values the file "
                f"holds, got one that builds {got} parameters and window indices")
        model = checkpoint.as_checkpoint_error(name, module_from_config, config, seed)
    return checkpoint.load_into(model, ckpt)


def _leaf_count(tree):
    """How many non-list, non-dict values ``tree`` holds, without recursion."""
    count, stack = 0, [tree]
    while stack:
        x = stack.pop()
        if isinstance(x, dict):
            stack.extend(x.values())
        elif isinstance(x, list):
            stack.extend(x)
        else:
            count += 1
    return count


def config_size(config):
    """``build_size`` of the layer type ``config`` names (0 for a config that names none)."""
    kind = config.get("type") if isinstance(config, dict) else None
    return LAYER_TYPES[kind].build_size(config) if isinstance(kind, str) and kind in LAYER_TYPES else 0


def _dim(config, key):
    """``config[key]`` if it is a positive int, else 1 (for ``build_size``: the constructor refuses it)."""
    v = config.get(key) if isinstance(config, dict) else None
    return v if isinstance(v, int) and not isinstance(v, bool) and v > 0 else 1


def _list(config, key):
    v = config.get(key) if isinstance(config, dict) else None
    return v if isinstance(v, list) else []


def _conv_size(channels, height, width, layer):
    """Values and window indices of one convolution of ``layer``'s kernel, stride and output channels
    over ``channels`` maps of ``height`` x ``width``: ``(size, out channels, out height, out width)``."""
    k, s, out = _dim(layer, "kernel_size"), _dim(layer, "stride"), _dim(layer, "out_channels")
    oh, ow = max(height - k, 0) // s + 1, max(width - k, 0) // s + 1
    return out * (channels * k * k + 1) + oh * ow * channels * k * k, out, oh, ow


__all__ = ["Module", *LAYER_TYPES, "CNNLayerConfig", "reference_cnn", "module_from_config",
           "module_from_checkpoint", "mse_loss", "cross_entropy", "as_value_array"]
