"""Argument checks shared by the library: each raises one ValueError that says expected vs got."""


def positive_int(name, value):
    """``value`` if it is an int >= 1 (a bool is not), else ValueError."""
    return int_at_least(name, value, 1)


def int_at_least(name, value, least):
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        what = "a positive integer" if least == 1 else f"an integer >= {least}"
        raise ValueError(f"Expected {name} to be {what}, got {value!r}")
    return value
