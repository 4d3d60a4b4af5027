"""Argument checks shared by the library: each raises one ValueError that says expected vs got."""
import math
import numbers


def positive_int(name, value):
    """``value`` if it is an int >= 1 (a bool is not), else ValueError."""
    return int_at_least(name, value, 1, "a positive integer")


def is_finite_real(x):
    """Whether ``x`` is a real number (a bool is not) with a finite float value; an int too large
    for a float is not (``math.isfinite`` would raise OverflowError on it)."""
    if isinstance(x, bool) or not isinstance(x, numbers.Real):
        return False
    try:
        return math.isfinite(x)
    except OverflowError:
        return False


def int_at_least(name, value, least, what=None):
    """``value`` if it is an int >= ``least`` (a bool is not), else ValueError."""
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise ValueError(f"Expected {name} to be {what or f'an integer >= {least}'}, got {value!r}")
    return value
