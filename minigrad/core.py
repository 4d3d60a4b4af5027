"""The scalar autograd engine.

A ``Value`` wraps one float. Every operation on Values returns a new Value whose
``grad_fn`` is a ``GradFunction``: it remembers the inputs and whatever the
forward computed that the local derivative needs. ``backward()`` walks the graph
once in reverse topological order and applies the chain rule.

Each ``GradFunction`` has two ways to hand gradients to its inputs:

* ``compute_and_add_gradient(grad)`` with a float ``grad``: the fast path, adds
  plain floats into the inputs' ``.grad``;
* ``gradient_graph(grad)`` with a Value ``grad``: returns the contributions as
  Values built from ordinary ops, so a gradient can itself be differentiated
  (``backward(create_graph=True)``, ``minigrad.grad``).

Undefined math follows IEEE 754 and PyTorch rather than Python's exceptions:
``log(0) == -inf``, ``log(-1)`` is nan, ``1 / 0 == inf``, ``0 / 0`` is nan,
``exp(1000) == inf``, ``(-8) ** (1/3)`` is nan. The one error is the gradient of
a Value exponent at a base that is negative (or zero with a negative exponent),
where the derivative ``log(base)`` does not exist: backward raises ``ValueError``.

A layer's fused nodes live in ``minigrad.fused``, the helpers for nested lists of Values in
``minigrad.nested``; both are re-exported at the bottom of this module.
"""
import math
import numbers
from abc import ABC, abstractmethod

from .portable_math import exp as _exp, log as _log, power as _power, sigmoid as _sigmoid, tanh as _tanh

_grad_enabled = True


class no_grad:
    """Context manager (and decorator) under which operations build no graph."""

    def __enter__(self):
        global _grad_enabled
        self._previous = _grad_enabled
        _grad_enabled = False
        return self

    def __exit__(self, *exc):
        global _grad_enabled
        _grad_enabled = self._previous
        return False

    def __call__(self, fn):
        def wrapper(*args, **kwargs):
            with no_grad():
                return fn(*args, **kwargs)
        wrapper.__name__ = fn.__name__
        wrapper.__doc__ = fn.__doc__
        return wrapper


class enable_grad(no_grad):
    """Turns graph building back on inside a ``no_grad`` block."""

    def __enter__(self):
        global _grad_enabled
        self._previous = _grad_enabled
        _grad_enabled = True
        return self


def is_grad_enabled():
    return _grad_enabled


def _real(x):
    """``x`` as a float, or None when it is not a real number."""
    if type(x) is float:
        return x
    if isinstance(x, numbers.Real):  # numpy scalars too, as plain floats
        return float(x)
    return None


class Value:
    """One float of a computation, its gradient and the function that made it.

    The primitive ops (``+ * / **``, unary ``-``, ``abs relu tanh sigmoid exp log``) are
    installed below the class, each forward beside the ``GradFunction`` it creates.
    ``Value(v, requires_grad=False)`` is a constant: an op builds a node only when one of
    its inputs requires a gradient, and hands gradients only to those that do.
    """

    __slots__ = ("v", "grad", "grad_fn")
    __array_ufunc__ = None  # numpy defers to our reflected operators

    def __init__(self, v, grad_fn=None, requires_grad=True):
        if type(v) is not float:
            f = _real(v)
            if f is None:
                raise TypeError(f"Value expects a real number, got {type(v).__name__}")
            v = f
        self.v = v
        self.grad = 0.0 if requires_grad else None  # a constant's grad stays None, as torch's
        self.grad_fn = grad_fn

    @property
    def requires_grad(self):
        """False for a constant: no gradient is computed for it, nor for what only it feeds."""
        return self.grad is not None

    @requires_grad.setter
    def requires_grad(self, flag):
        if self.grad_fn is not None:
            raise ValueError("Expected a leaf Value to change requires_grad on, got the result of an op")
        if not flag:
            self.grad = None
        elif self.grad is None:
            self.grad = 0.0

    # micrograd spells the payload .data
    @property
    def data(self):
        return self.v

    @data.setter
    def data(self, v):
        self.v = v

    @property
    def is_leaf(self):
        return self.grad_fn is None

    def item(self):
        return self.v

    def __float__(self):
        return self.v

    def detach(self):
        return Value(self.v)

    def __repr__(self):
        return f"Value(v={self.v!r}, grad={self.grad!r})"

    # comparisons look at the payload; == stays identity so Values hash by identity
    def __lt__(self, other):
        return self.v < _payload(other)

    def __le__(self, other):
        return self.v <= _payload(other)

    def __gt__(self, other):
        return self.v > _payload(other)

    def __ge__(self, other):
        return self.v >= _payload(other)

    # ---- composites, built from the primitive ops below ----

    def __sub__(self, other):
        if isinstance(other, Value):
            return self + (-other)
        c = _real(other)
        if c is None:
            return NotImplemented
        return self + (-c)

    def __rsub__(self, other):
        return (-self) + other

    def __rtruediv__(self, other):
        c = _real(other)
        if c is None:
            return NotImplemented
        return Value(c, None, False) / self  # the number as a constant

    def __rpow__(self, other):
        c = _real(other)
        if c is None:
            return NotImplemented
        return Value(c, None, False) ** self  # the number as a constant

    # ---- backward ----

    def backward(self, grad=1.0, create_graph=False):
        """Adds d(self)/d(x) * grad into ``x.grad`` for every Value ``x`` this one depends on.

        Leaves accumulate across calls, as PyTorch's do; a non-leaf's ``.grad`` holds the
        gradient of the latest backward that reached it. The graph is kept, so calling
        backward twice through the same graph adds the same gradients to the leaves twice.
        With ``create_graph=True`` the gradients are Values with graphs of their own.
        """
        backward([self], [grad], create_graph=create_graph)


def _payload(x):
    return x.v if isinstance(x, Value) else x


class GradFunction(ABC):
    """The backward half of one op: knows its inputs and its local derivative."""

    __slots__ = ()

    @abstractmethod
    def inputs(self):
        """The Values this op read, in the order ``gradient_graph`` answers for."""

    @abstractmethod
    def compute_and_add_gradient(self, grad):
        """Adds ``grad * d(out)/d(input)`` (floats) into each input's ``.grad``."""

    @abstractmethod
    def gradient_graph(self, grad):
        """The same contributions as Values built from ops, one per input."""

    def next_values(self):
        """The Values backward must finish after this node: ``inputs()`` unless a subclass knows better."""
        return self.inputs()

    def forget_pending_gradients(self):
        """Drops gradients recorded but not yet applied, when a backward stops before this node ran.

        An op applies its gradient as it runs and has none pending; a node that defers its work to a
        later one (``minigrad.fused``'s layer node) overrides this.
        """
        return None

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "next_values" not in cls.__dict__ and "inputs" in cls.__dict__:
            cls.next_values = cls.inputs  # one call less per node on the hot traversal

    @property
    def name(self):
        return type(self).__name__


class UnaryBackward(GradFunction):
    """An op of one Value ``a``, with the one number its derivative needs (``saved``), if any."""

    __slots__ = ("a", "saved")

    def __init__(self, a, saved=None):
        self.a = a
        self.saved = saved

    def inputs(self):
        return (self.a,)


class BinaryBackward(GradFunction):
    """An op of two Values ``a`` and ``b``."""

    __slots__ = ("a", "b")

    def __init__(self, a, b):
        self.a = a
        self.b = b

    def inputs(self):
        return (self.a, self.b)


def _value_method(*aliases):
    """Installs the decorated forward as a method of ``Value``, under its own name and ``aliases``."""
    def install(fn):
        for name in (fn.__name__,) + aliases:
            setattr(Value, name, fn)
        return fn
    return install


def _untracked(v):
    """The result of an op that builds no node: a constant when grad mode is on (its inputs were)."""
    return Value(v, None, not _grad_enabled)


# ---- primitive ops: each forward, then the GradFunction it creates ----

@_value_method("__radd__")
def __add__(self, other):
    if isinstance(other, Value):
        if self.grad is not None is not other.grad:
            return Value(self.v + other.v, AddBackward(self, other) if _grad_enabled else None)
        if other.grad is not None:
            self, other = other, self  # the constant is added as a number (addition commutes exactly)
        c = other.v
    else:
        c = _real(other)
        if c is None:
            return NotImplemented
    if self.grad is None:
        return _untracked(self.v + c)
    return Value(self.v + c, AddConstBackward(self) if _grad_enabled else None)


class AddBackward(BinaryBackward):
    __slots__ = ()

    def compute_and_add_gradient(self, grad):
        self.a.grad += grad
        self.b.grad += grad

    def gradient_graph(self, grad):
        return (grad, grad)


class AddConstBackward(UnaryBackward):
    """``a + c`` for a number (or constant) ``c``."""

    __slots__ = ()

    def compute_and_add_gradient(self, grad):
        self.a.grad += grad

    def gradient_graph(self, grad):
        return (grad,)


@_value_method()
def __neg__(self):
    if self.grad is None:
        return _untracked(-self.v)
    return Value(-self.v, NegBackward(self) if _grad_enabled else None)


class NegBackward(UnaryBackward):
    __slots__ = ()

    def compute_and_add_gradient(self, grad):
        self.a.grad -= grad

    def gradient_graph(self, grad):
        return (-grad,)


@_value_method("__rmul__")
def __mul__(self, other):
    if isinstance(other, Value):
        if self.grad is not None is not other.grad:
            return Value(self.v * other.v, MulBackward(self, other) if _grad_enabled else None)
        if other.grad is not None:
            self, other = other, self  # the constant multiplies as a number (multiplication commutes exactly)
        c = other.v
    else:
        c = _real(other)
        if c is None:
            return NotImplemented
    if self.grad is None:
        return _untracked(self.v * c)
    return Value(self.v * c, MulConstBackward(self, c) if _grad_enabled else None)


class MulBackward(BinaryBackward):
    __slots__ = ()

    def compute_and_add_gradient(self, grad):
        a, b = self.a, self.b
        a.grad += grad * b.v
        b.grad += grad * a.v

    def gradient_graph(self, grad):
        return (grad * self.b, grad * self.a)


class MulConstBackward(UnaryBackward):
    """``a * c`` for a number (or constant) ``c`` (saved); also ``a / c``, as ``a * (1 / c)``."""

    __slots__ = ()

    def compute_and_add_gradient(self, grad):
        self.a.grad += grad * self.saved

    def gradient_graph(self, grad):
        return (grad * self.saved,)


@_value_method()
def __truediv__(self, other):
    if isinstance(other, Value):
        if self.grad is None and other.grad is None:
            return _untracked(_div(self.v, other.v))
        return Value(_div(self.v, other.v), DivBackward(self, other) if _grad_enabled else None)
    c = _real(other)
    if c is None:
        return NotImplemented
    if self.grad is None:
        return _untracked(_div(self.v, c))
    return Value(_div(self.v, c), MulConstBackward(self, _div(1.0, c)) if _grad_enabled else None)


def _div(a, b):
    try:
        return a / b
    except ZeroDivisionError:
        if a == 0.0 or a != a:
            return math.nan
        return math.copysign(math.inf, a) * math.copysign(1.0, b)


class DivBackward(BinaryBackward):
    """``a / b``; one of them may be a constant, which gets no gradient."""

    __slots__ = ()

    def compute_and_add_gradient(self, grad):
        a, b = self.a, self.b
        if a.grad is not None:
            a.grad += _div(grad, b.v)
        if b.grad is not None:
            b.grad -= grad * _div(_div(a.v, b.v), b.v)

    def gradient_graph(self, grad):
        a, b = self.a, self.b
        return (grad / b, -grad * (a / b / b))


@_value_method()
def __pow__(self, other):
    if isinstance(other, Value):
        out = _pow(self.v, other.v)
        if self.grad is None and other.grad is None:
            return _untracked(out)
        return Value(out, PowBackward(self, other, out) if _grad_enabled else None)
    p = _real(other)
    if p is None:
        return NotImplemented
    if self.grad is None:
        return _untracked(_pow(self.v, p))
    return Value(_pow(self.v, p), PowConstBackward(self, p) if _grad_enabled else None)


def _is_odd_integer(p):
    return p == p and not math.isinf(p) and p == int(p) and int(p) % 2 == 1


def _pow(a, p):
    try:
        return _power(a, p)
    except ZeroDivisionError:  # 0 ** negative
        return -math.inf if math.copysign(1.0, a) < 0 and _is_odd_integer(p) else math.inf


class PowConstBackward(UnaryBackward):
    """``a ** p`` for a number ``p`` (saved)."""

    __slots__ = ()

    def compute_and_add_gradient(self, grad):
        p = self.saved
        self.a.grad += grad * p * _pow(self.a.v, p - 1.0) if p != 0.0 else 0.0

    def gradient_graph(self, grad):
        p = self.saved
        return (grad * p * self.a ** (p - 1.0) if p != 0.0 else grad * 0.0,)


def _log_base_for_exponent(a, p):
    """log(a) for d(a**p)/dp, where it exists; 0 where torch defines the gradient as 0."""
    if a > 0.0:
        return _log(a)
    if a == 0.0 and p >= 0.0:
        return None
    raise ValueError(
        f"PowBackward: the gradient with respect to a Value exponent needs a positive base, got {a!r}")


class PowBackward(BinaryBackward):
    """a ** b with b a Value: base and exponent get gradients (unless constant); ``out`` is a ** b."""

    __slots__ = ("out",)

    def __init__(self, a, b, out):
        super().__init__(a, b)
        self.out = out

    def compute_and_add_gradient(self, grad):
        a, b = self.a.v, self.b.v
        if b != 0.0 and self.a.grad is not None:
            self.a.grad += grad * b * _pow(a, b - 1.0)
        if self.b.grad is None:
            return
        log_a = _log_base_for_exponent(a, b)
        if log_a is not None:
            self.b.grad += grad * self.out * log_a

    def gradient_graph(self, grad):
        a, b = self.a, self.b
        d_base = grad * b * a ** (b - 1.0) if b.v != 0.0 else grad * 0.0
        if _log_base_for_exponent(a.v, b.v) is None:
            return (d_base, grad * 0.0)
        return (d_base, grad * a ** b * a.log())


@_value_method("abs")
def __abs__(self):
    if self.grad is None:
        return _untracked(abs(self.v))
    return Value(abs(self.v), AbsBackward(self) if _grad_enabled else None)


class AbsBackward(UnaryBackward):
    __slots__ = ()

    def compute_and_add_gradient(self, grad):
        x = self.a.v
        if x > 0.0:
            self.a.grad += grad
        elif x < 0.0:
            self.a.grad -= grad

    def gradient_graph(self, grad):
        x = self.a.v
        return (grad * (1.0 if x > 0.0 else -1.0 if x < 0.0 else 0.0),)


@_value_method()
def relu(self):
    x = self.v
    if self.grad is None:
        return _untracked(x if x > 0.0 else 0.0)
    return Value(x if x > 0.0 else 0.0, ReLUBackward(self) if _grad_enabled else None)


class ReLUBackward(UnaryBackward):
    __slots__ = ()

    def compute_and_add_gradient(self, grad):
        if self.a.v > 0.0:
            self.a.grad += grad

    def gradient_graph(self, grad):
        return (grad * (1.0 if self.a.v > 0.0 else 0.0),)


@_value_method()
def tanh(self):
    t = _tanh(self.v)
    if self.grad is None:
        return _untracked(t)
    return Value(t, TanhBackward(self, t) if _grad_enabled else None)


class TanhBackward(UnaryBackward):
    """saved: the output tanh(a)."""

    __slots__ = ()

    def compute_and_add_gradient(self, grad):
        t = self.saved
        self.a.grad += grad * (1.0 - t * t)

    def gradient_graph(self, grad):
        t = self.a.tanh()
        return (grad * (1.0 - t * t),)


@_value_method()
def sigmoid(self):
    s = _sigmoid(self.v)
    if self.grad is None:
        return _untracked(s)
    return Value(s, SigmoidBackward(self, s) if _grad_enabled else None)


class SigmoidBackward(UnaryBackward):
    """saved: the output sigmoid(a)."""

    __slots__ = ()

    def compute_and_add_gradient(self, grad):
        s = self.saved
        self.a.grad += grad * s * (1.0 - s)

    def gradient_graph(self, grad):
        s = self.a.sigmoid()
        return (grad * s * (1.0 - s),)


@_value_method()
def exp(self):
    e = _exp(self.v)
    if self.grad is None:
        return _untracked(e)
    return Value(e, ExpBackward(self, e) if _grad_enabled else None)


class ExpBackward(UnaryBackward):
    """saved: the output exp(a)."""

    __slots__ = ()

    def compute_and_add_gradient(self, grad):
        self.a.grad += grad * self.saved

    def gradient_graph(self, grad):
        return (grad * self.a.exp(),)


@_value_method()
def log(self):
    if self.grad is None:
        return _untracked(_log(self.v))
    return Value(_log(self.v), LogBackward(self) if _grad_enabled else None)


class LogBackward(UnaryBackward):
    __slots__ = ()

    def compute_and_add_gradient(self, grad):
        self.a.grad += _div(grad, self.a.v)

    def gradient_graph(self, grad):
        return (grad / self.a,)


# ---- n-ary primitives ----

def value_sum(values):
    """One node for the sum of many Values (numbers and constants are folded into the constant)."""
    values = list(values)
    nodes = [x for x in values if isinstance(x, Value) and x.grad is not None]
    total = 0.0
    for x in values:
        if isinstance(x, Value):
            total += x.v
        else:
            c = _real(x)
            if c is None:
                raise TypeError(f"sum expects Values or numbers, got {type(x).__name__}")
            total += c
    if not nodes and any(isinstance(x, Value) for x in values):
        return _untracked(total)
    return Value(total, SumBackward(nodes) if _grad_enabled and nodes else None)


class SumBackward(GradFunction):
    __slots__ = ("xs",)

    def __init__(self, xs):
        self.xs = xs

    def inputs(self):
        return tuple(self.xs)

    def compute_and_add_gradient(self, grad):
        for x in self.xs:
            x.grad += grad

    def gradient_graph(self, grad):
        return (grad,) * len(self.xs)


def value_max(values):
    """The largest of several Values (nan wins); the gradient goes to the first maximum, as in max_pool2d."""
    values = list(values)
    if not values:
        raise ValueError("max expects at least one Value, got none")
    best = 0
    for i in range(1, len(values)):
        x = values[i].v
        if x > values[best].v or (x != x and values[best].v == values[best].v):
            best = i
    if all(x.grad is None for x in values):
        return _untracked(values[best].v)
    return Value(values[best].v, MaxBackward(values, best) if _grad_enabled else None)


class MaxBackward(GradFunction):
    __slots__ = ("xs", "index")

    def __init__(self, xs, index):
        self.xs = xs
        self.index = index

    def inputs(self):
        return tuple(self.xs)

    def compute_and_add_gradient(self, grad):
        x = self.xs[self.index]
        if x.grad is not None:
            x.grad += grad

    def gradient_graph(self, grad):
        zero = grad * 0.0
        return tuple(grad if i == self.index else zero for i in range(len(self.xs)))


# ---- graph traversal ----

def _topological_order(roots):
    """Non-leaf Values reachable from ``roots``, each after all the Values it depends on.

    Iterative depth-first search; children are visited in input order, so the order is
    the same on every run.
    """
    order = []
    seen = set()  # membership only, never iterated; Values hash by identity
    visit, finish = seen.add, order.append  # bound once: this loop runs once per node
    for root in roots:
        if root.grad_fn is None or root in seen:
            continue
        visit(root)
        stack = [(root, iter(root.grad_fn.next_values()))]
        push, pop = stack.append, stack.pop
        while stack:
            node, children = stack[-1]
            for child in children:
                if child.grad_fn is not None and child not in seen:
                    visit(child)
                    push((child, iter(child.grad_fn.next_values())))
                    break
            else:
                pop()
                finish(node)
    return order


def backward(roots, grads=None, create_graph=False):
    """Backpropagates from several roots at once (each with its own output gradient)."""
    roots = list(roots)
    grads = [1.0] * len(roots) if grads is None else list(grads)
    if len(grads) != len(roots):
        raise ValueError(f"Expected {len(roots)} output gradients, got {len(grads)}")
    if roots and all(root.grad is None for root in roots):
        raise ValueError(f"Expected outputs that require grad, got {len(roots)} constant(s)")
    pairs = [(root, g) for root, g in zip(roots, grads) if root.grad is not None]  # constants pass nothing on
    roots, grads = [root for root, _ in pairs], [g for _, g in pairs]
    order = _topological_order(roots)
    for node in order:
        node.grad = 0.0
    for root, g in zip(roots, grads):
        root.grad = root.grad + g
    if create_graph:
        _backward_graph(order)
        return
    try:
        for node in reversed(order):
            node.grad_fn.compute_and_add_gradient(node.grad)
    except BaseException:
        for node in order:  # forget gradients a node recorded but never applied
            node.grad_fn.forget_pending_gradients()
        raise


def _backward_graph(order):
    with enable_grad():
        for node in reversed(order):
            fn = node.grad_fn
            g = node.grad if isinstance(node.grad, Value) else Value(node.grad)
            for x, d in zip(fn.inputs(), fn.gradient_graph(g)):
                if x.grad is not None:  # constants get none
                    x.grad = d if isinstance(x.grad, float) and x.grad == 0.0 else x.grad + d


def grad(outputs, inputs, grad_outputs=None, create_graph=False):
    """d(outputs)/d(inputs) as a list, leaving every ``.grad`` as it was (``torch.autograd.grad``)."""
    outputs = [outputs] if isinstance(outputs, Value) else list(outputs)
    single = isinstance(inputs, Value)
    inputs = [inputs] if single else list(inputs)
    for i, x in enumerate(inputs):
        if x.grad is None:
            raise ValueError(f"Expected inputs that require grad, got a constant at index {i}")
    touched = [x for x in _reached_values(outputs) + inputs if x.grad is not None]
    saved = [x.grad for x in touched]
    try:
        for x in touched:
            x.grad = 0.0
        backward(outputs, grad_outputs, create_graph=create_graph)
        result = [x.grad for x in inputs]
    finally:
        for x, g in zip(touched, saved):
            x.grad = g
    return result[0] if single else result


def _reached_values(roots):
    """Every Value reached from ``roots``, leaves included, in a deterministic order."""
    order = _topological_order(roots)
    reached, seen = [], set()
    for node in order:
        for x in node.grad_fn.inputs():
            if id(x) not in seen:
                seen.add(id(x))
                reached.append(x)
    for x in list(order) + list(roots):
        if id(x) not in seen:
            seen.add(id(x))
            reached.append(x)
    return reached


def hessian(fn, inputs):
    """The matrix of second derivatives of the scalar ``fn(*values)`` at ``inputs`` (floats)."""
    values = [Value(x) for x in inputs]
    out = fn(*values)
    first = grad(out, values, create_graph=True)
    rows = []
    for g in first:
        if isinstance(g, Value) and g.grad_fn is not None:
            rows.append([_as_float(h) for h in grad(g, values)])
        else:
            rows.append([0.0] * len(values))
    return rows


def _as_float(x):
    return x.v if isinstance(x, Value) else float(x)


# ---- softmax (relu, tanh, sigmoid, exp and log above are functions too: ``tanh(x)`` is ``x.tanh()``) ----

def log_softmax(values):
    """log(softmax(values)), stable: the largest value is subtracted before exp."""
    values = list(values)
    m = max(x.v for x in values)
    shifted = [x - m for x in values]
    log_total = value_sum([s.exp() for s in shifted]).log()
    return [s - log_total for s in shifted]


def softmax(values):
    values = list(values)
    m = max(x.v for x in values)
    exps = [(x - m).exp() for x in values]
    total = value_sum(exps)
    return [e / total for e in exps]


# ---- the names that live in other modules now, for ``from minigrad.core import ...`` ----
# (after the definitions above: those modules import them from here)

from .fused import (LayerBackward, WeightedSumBackward, input_gathers, weighted_sum,  # noqa: E402, F401
                    weighted_sums)
from .nested import (ValueMatrix, as_value_array, flatten, reshape, shape_of, transpose,  # noqa: E402, F401
                     value_array_to_list)
