"""Analytic gradients against central differences, for checks that need no reference library."""
from .core import Value, grad


class GradcheckError(AssertionError):
    """Analytic and numerical gradients disagree."""


def numerical_gradient(fn, inputs, eps=1e-6):
    """Central differences of the scalar ``fn(*values)`` at the float ``inputs``."""
    inputs = [float(x) for x in inputs]
    out = []
    for i in range(len(inputs)):
        up, down = list(inputs), list(inputs)
        up[i] += eps
        down[i] -= eps
        out.append((_scalar(fn, up) - _scalar(fn, down)) / (2 * eps))
    return out


def _scalar(fn, floats):
    y = fn(*[Value(x) for x in floats])
    return y.v if isinstance(y, Value) else float(y)


def gradcheck(fn, inputs, eps=1e-6, atol=1e-5, rtol=1e-3, raise_exception=True):
    """True when ``grad(fn(*inputs), inputs)`` matches central differences, like torch's gradcheck.

    ``fn`` takes one Value per input and returns a scalar Value; ``inputs`` are numbers
    or Values (their payloads are used). On a mismatch raise ``GradcheckError`` naming
    the input, or return False with ``raise_exception=False``.
    """
    floats = [x.v if isinstance(x, Value) else float(x) for x in inputs]
    values = [Value(x) for x in floats]
    out = fn(*values)
    if not isinstance(out, Value):
        raise TypeError(f"Expected fn to return a Value, got {type(out).__name__}")
    analytic = grad(out, values)
    analytic = [g.v if isinstance(g, Value) else float(g) for g in analytic]
    numeric = numerical_gradient(fn, floats, eps)
    for i, (a, n) in enumerate(zip(analytic, numeric)):
        if not abs(a - n) <= atol + rtol * abs(n):
            if raise_exception:
                raise GradcheckError(f"Gradient of input {i} (at {floats[i]!r}): analytic {a!r}, numerical {n!r}")
            return False
    return True
