"""Nested lists of Values: the arrays of a scalar engine.

An image is ``[channel][row][column]`` of Values (or of floats, which are constants); these helpers
make such lists from numpy arrays and back, and flatten, reshape and transpose them, row-major, as
the original minigrad's functions of the same names did.
"""
from .checks import positive_int
from .core import Value

ValueMatrix = list[list[Value]]  # the original minigrad's name for a 2-D nested list of Values


def as_value_array(array, requires_grad=True):
    """Nested lists of Values with the shape of ``array`` (a numpy array, nested lists or iterables).

    ``requires_grad=False`` makes them constants (an input image, a target): no gradient is
    computed for them. Values already in ``array`` are kept as they are.
    """
    if hasattr(array, "tolist"):
        array = array.tolist()
    if isinstance(array, (list, tuple)) or (not isinstance(array, _SCALARS) and hasattr(array, "__iter__")):
        return [as_value_array(x, requires_grad) for x in array]
    return array if isinstance(array, Value) else Value(array, None, requires_grad)


def value_array_to_list(array):
    """The payloads of nested lists of Values, as nested lists of floats."""
    if isinstance(array, (list, tuple)):
        return [value_array_to_list(x) for x in array]
    return array.v if isinstance(array, Value) else float(array)


_SCALARS = (Value, float, int, complex, str, bytes)


def flatten(array):
    """Everything nested in ``array`` as one flat list, row-major, down to the scalars.

    Lists and tuples, numpy arrays (whose numbers come out as Python floats and ints),
    generators and other iterables are all opened; Values, numbers and strings are not.
    """
    out = []
    stack = [iter([array])]
    while stack:
        for x in stack[-1]:
            if isinstance(x, (list, tuple)):
                stack.append(iter(x))
                break
            if not isinstance(x, _SCALARS):
                if hasattr(x, "tolist"):
                    x = x.tolist()
                if isinstance(x, list) or (not isinstance(x, _SCALARS) and hasattr(x, "__iter__")):
                    stack.append(iter(x))
                    break
            out.append(x)
        else:
            stack.pop()
    return out


def reshape(array, *shape):
    """The items of ``array`` (nested or flat) as nested lists of ``shape``, row-major.

    ``shape`` is a tuple, ``reshape(x, (3, 4))``, or the sizes themselves, ``reshape(x, 3, 4)``
    (the original minigrad's ``reshape(input, height, width)``).
    """
    items = flatten(array)
    shape = tuple(shape[0]) if len(shape) == 1 and isinstance(shape[0], (list, tuple)) else shape
    for n in shape:
        positive_int("each size in the shape", n)
    size = 1
    for n in shape:
        size *= n
    if size != len(items):
        raise ValueError(f"Expected {size} items for shape {shape}, got {len(items)}")
    return nest(items, shape)


def nest(flat, shape):
    """A flat list holding exactly the items of ``shape`` as nested lists of that shape, row-major."""
    for n in reversed(shape[1:]):
        flat = [flat[i:i + n] for i in range(0, len(flat), n)]
    return flat


def transpose(matrix):
    """Rows become columns of a 2-D nested list."""
    return [list(col) for col in zip(*matrix)]


def shape_of(array):
    shape = []
    while isinstance(array, (list, tuple)):
        shape.append(len(array))
        array = array[0] if array else None
    return tuple(shape)
