"""The fused weighted sums of a layer: one node per output instead of one per multiply and add.

Built op by op, a neuron's ``activation(b + w0*x0 + w1*x1 + ...)`` is a multiply node and an add
node per weight, and one node for the activation. A fused node (``WeightedSumBackward``) is the whole
output, its activation included, as one Value; every output of one layer call also reads one hidden
Value whose ``LayerBackward`` applies all their gradients at once, in whole rows of floats. A weight
shared by many positions, or an input read by many neurons, is then touched once instead of once per
use. That is why it exists: a layer's forward and backward are many times faster (the reference CNN
takes 3.26 ms a sample fused and 68.8 ms op by op on CPython; see the README's benchmarks).

The fused node computes what the op-by-op graph it replaces computes: the same additions in the same
order, so the same values bit for bit, and gradients equal to rounding (a shared weight's contributions
are added in another order). Its ``gradient_graph`` answers with ordinary ops, so gradients of
gradients go through it too. It is tested against that graph: ``test_weighted_sum_equals_op_by_op_and_torch``
in ``tests/test_core.py``, ``test_fused_and_op_by_op_agree`` in ``tests/test_nn.py`` (every layer, with
``set_fused(False)``) and ``test_weighted_sum_matches_the_op_by_op_graph_it_replaces`` in
``tests/test_higher_order.py`` (up to third derivatives).
"""
from itertools import repeat
from operator import itemgetter, mul

from .core import GradFunction, Value, is_grad_enabled
from .portable_math import fold_sum, sigmoid, tanh


def _relu_float(s):
    return s if s > 0.0 else 0.0


# name: (the activation on a float, the output gradients times its derivative, from the outputs ys)
_FUSED_ACTIVATIONS = {
    "tanh": (tanh, lambda gs, ys: [g * (1.0 - y * y) for g, y in zip(gs, ys)]),
    "relu": (_relu_float, lambda gs, ys: [g if y > 0.0 else 0.0 for g, y in zip(gs, ys)]),
    "sigmoid": (sigmoid, lambda gs, ys: [g * y * (1.0 - y) for g, y in zip(gs, ys)]),
}


def weighted_sums(weights, biases, windows, window_values=None, sources=None, leaf_weights=False,
                  activation=None, gathers=None):
    """``activation(biases[o] + sum(weights[o][k] * windows[p][k]))`` for every neuron ``o`` and window ``p``.

    One node per output (``WeightedSumBackward``): what a Linear layer (one window) or a
    convolution (one window per output position) computes, with the layer's activation
    (None, "tanh", "relu" or "sigmoid") fused in. ``windows`` are sequences of floats;
    ``window_values`` the Values they came from, or None when the inputs are constants that
    need no gradient; ``sources`` optionally the distinct Values the windows are drawn from
    (a conv layer's input map), so backward visits each once, and ``gathers`` (from
    ``input_gathers``, aligned with ``sources``) the window positions that read each source,
    so its gradient is one sum. ``leaf_weights=True`` promises that weights and biases are
    leaves (a layer's own parameters), which saves checking them. Returns one list of
    outputs per neuron.

    The outputs of one call share a ``LayerBackward``: each output's backward only records
    its gradient there, and once all of them have run, the layer turns the recorded
    gradients into weight, bias and input gradients with whole-row arithmetic. A weight
    shared by many positions, or an input read by many neurons, is then touched once
    instead of once per use, which is most of the work saved.
    """
    weight_values = [[w.v for w in row] for row in weights]
    bias_values = [b.v for b in biases]
    act = None if activation is None else _FUSED_ACTIVATIONS[activation][0]
    if not is_grad_enabled():
        rows = zip(weight_values, bias_values)
        if act is None:
            return [[Value(fold_sum(map(mul, wv, win), b)) for win in windows] for wv, b in rows]
        return [[Value(act(fold_sum(map(mul, wv, win), b))) for win in windows] for wv, b in rows]
    if window_values is not None and sources is None:
        sources = [x for xs in window_values for x in xs]
    sources = list(sources or ())
    if None in [x.grad for x in sources]:  # constants among the inputs get no gradient
        keep = [i for i, x in enumerate(sources) if x.grad is not None]
        sources = [sources[i] for i in keep]
        gathers = None if gathers is None else [gathers[i] for i in keep]
    upstream = list(sources)
    if not leaf_weights:
        upstream += [v for row in weights for v in row if v.grad_fn is not None]
        upstream += [b for b in biases if b.grad_fn is not None]
    layer = LayerBackward(weights, biases, weight_values, windows, window_values, sources, gathers, upstream,
                          activation)
    hub = (Value(0.0, layer),)
    outs, first = [], 0
    for wv, b in zip(weight_values, bias_values):
        # fold_sum(..., b) adds in the order b + w0*x0 + w1*x1 + ..., as the op-by-op graph does
        if act is None:
            ys = [fold_sum(map(mul, wv, win), b) for win in windows]
        else:
            ys = [act(fold_sum(map(mul, wv, win), b)) for win in windows]
        outs.append([Value(y, WeightedSumBackward(hub, i)) for i, y in enumerate(ys, first)])
        layer.outputs += ys
        first += len(ys)
    return outs


class WeightedSumBackward(GradFunction):
    """One output of ``weighted_sums``: ``activation(b + sum(w_k * x_k))``.

    Its gradient is ``d * x_k`` to ``w_k``, ``d * w_k`` to ``x_k`` and ``d`` to ``b``, with
    ``d`` the activation's derivative times the output's gradient; on the float path the
    shared ``LayerBackward`` applies it for all outputs of the layer at once.
    """

    __slots__ = ("hub", "index")

    def __init__(self, hub, index):
        self.hub = hub  # (Value of the shared LayerBackward,): what backward must visit next
        self.index = index

    def _parts(self):
        layer = self.hub[0].grad_fn
        o, p = divmod(self.index, len(layer.windows))
        xs = None if layer.window_values is None else layer.window_values[p]
        return layer, layer.weights[o], xs, layer.biases[o], layer.windows[p]

    def inputs(self):
        _, weights, xs, bias, _ = self._parts()
        return tuple(weights) + (tuple(xs) if xs is not None else ()) + (bias,)

    def next_values(self):
        return self.hub

    def compute_and_add_gradient(self, grad):
        self.hub[0].grad_fn.grads[self.index] += grad

    def gradient_graph(self, grad):
        layer, weights, xs, bias, window = self._parts()
        if layer.activation is not None:
            s = weighted_sum(weights, xs if xs is not None else window, bias)
            grad = grad * _activation_derivative_graph(layer.activation, s)
        dw = tuple(grad * x for x in (xs if xs is not None else window))
        dx = () if xs is None else tuple(grad * w for w in weights)
        return dw + dx + (grad,)


def _activation_derivative_graph(name, s):
    """The activation's derivative at the Value ``s``, as a Value with a graph (as its op's GradFunction writes it)."""
    if name == "tanh":
        t = s.tanh()
        return 1.0 - t * t
    if name == "sigmoid":
        y = s.sigmoid()
        return y * (1.0 - y)
    return 1.0 if s.v > 0.0 else 0.0


class LayerBackward(GradFunction):
    """Applies the gradients recorded by the ``WeightedSumBackward`` outputs of one layer call.

    It sits in the graph as a hidden Value that every output of the layer reads, so the
    reverse topological order runs it after all of them and before the layer's inputs.
    """

    __slots__ = ("weights", "biases", "weight_values", "windows", "window_values", "sources", "gathers",
                 "upstream", "activation", "outputs", "grads")

    def __init__(self, weights, biases, weight_values, windows, window_values, sources, gathers, upstream,
                 activation):
        self.weights = weights
        self.biases = biases
        self.weight_values = weight_values
        self.windows = windows
        self.window_values = window_values
        self.sources = sources
        self.gathers = gathers
        self.upstream = upstream
        self.activation = activation
        self.outputs = []  # the outputs' values, for the activation's derivative
        self.grads = [0.0] * (len(weights) * len(windows))

    def inputs(self):
        return ()  # the outputs' own nodes name the real inputs

    def next_values(self):
        return self.upstream

    def gradient_graph(self, grad):
        return ()

    def compute_and_add_gradient(self, grad):
        grads, n_windows = self.grads, len(self.windows)
        if self.activation is not None:
            grads = _FUSED_ACTIVATIONS[self.activation][1](grads, self.outputs)
        columns = None
        for o, (weights, bias) in enumerate(zip(self.weights, self.biases)):
            g = grads[o * n_windows:(o + 1) * n_windows]
            if bias.grad is not None:
                bias.grad += fold_sum(g)
            if n_windows == 1:
                dw = map(mul, self.windows[0], repeat(g[0]))
            elif 2 * n_windows >= len(weights):  # long columns: one dot product per weight
                columns = columns or list(zip(*self.windows))
                dw = map(fold_sum, map(map, repeat(mul), repeat(g), columns))
            else:
                dw = _combine(self.windows, g)
            for w, d in zip(weights, dw):
                try:  # free unless it raises (zero-cost exceptions)
                    w.grad += d
                except TypeError:
                    if w.grad is not None:
                        raise
                    # a weight made a constant (requires_grad=False) gets no gradient
        if self.sources:
            self._add_input_gradients(grads, n_windows)
        self.forget_pending_gradients()

    def _add_input_gradients(self, grads, n_windows):
        if self.gathers is not None:  # each window's gradient as one row, then one sum per input element
            window_grads = []
            if 2 * len(self.weight_values) >= len(self.weight_values[0]):  # long columns: dot products
                weight_columns = list(zip(*self.weight_values))
                for p in range(n_windows):
                    window_grads += map(fold_sum, map(map, repeat(mul), repeat(grads[p::n_windows]), weight_columns))
            else:
                for p in range(n_windows):
                    window_grads += _combine(self.weight_values, grads[p::n_windows])
            for x, gather in zip(self.sources, self.gathers):
                if gather is not None:
                    x.grad += fold_sum(gather(window_grads))
        elif n_windows == 1:  # a Linear layer: each input's gradient is one column of the weights
            for x, column in zip(self.window_values[0], zip(*self.weight_values)):
                if x.grad is not None:
                    x.grad += fold_sum(map(mul, column, grads))
        else:
            for p, xs in enumerate(self.window_values):
                for x, d in zip(xs, _combine(self.weight_values, grads[p::n_windows])):
                    if x.grad is not None:
                        x.grad += d

    def forget_pending_gradients(self):
        self.grads[:] = repeat(0.0, len(self.grads))


def _combine(rows, coefficients):
    """``sum(c * row)`` over rows, as one list: the rows' weighted sum, element by element.

    Four rows per pass (one comprehension adds four products to each element), in row order.
    """
    n = len(rows)
    acc = None
    p = 0
    while p + 4 <= n:
        a, b, c, d = rows[p:p + 4]
        ca, cb, cc, cd = coefficients[p:p + 4]
        if acc is None:
            acc = [x * ca + y * cb + z * cc + w * cd for x, y, z, w in zip(a, b, c, d)]
        else:
            acc = [s + x * ca + y * cb + z * cc + w * cd for s, x, y, z, w in zip(acc, a, b, c, d)]
        p += 4
    for row, c in zip(rows[p:], coefficients[p:]):
        acc = [x * c for x in row] if acc is None else [s + x * c for s, x in zip(acc, row)]
    return acc


def weighted_sum(weights, inputs, bias):
    """``bias + sum(w * x)`` as one node; ``inputs`` may be Values or constant floats."""
    inputs = list(inputs)
    if len(weights) != len(inputs):
        raise ValueError(f"Expected {len(weights)} inputs, got {len(inputs)}")
    if inputs and isinstance(inputs[0], Value):
        return weighted_sums([weights], [bias], [[x.v for x in inputs]], [inputs])[0][0]
    return weighted_sums([weights], [bias], [[float(x) for x in inputs]])[0][0]


def input_gathers(window_indices, n_sources):
    """For each source element, a getter of the window positions that read it, or None if none does.

    ``window_indices[p][k]`` is the source element at position ``k`` of window ``p``; the getter
    picks, from the windows' gradients laid end to end (``p * K + k``), this element's terms.
    """
    width = len(window_indices[0])
    terms = [[] for _ in range(n_sources)]
    for p, indices in enumerate(window_indices):
        for k, i in enumerate(indices):
            terms[i].append(p * width + k)
    return [tuple_getter(ts) if ts else None for ts in terms]


def tuple_getter(indices):
    """``itemgetter(*indices)`` that returns a tuple even for one index."""
    return itemgetter(*indices) if len(indices) > 1 else (lambda seq, k=indices[0]: (seq[k],))
