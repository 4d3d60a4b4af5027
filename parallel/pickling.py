"""How the payload (model_fn, loss_fn, ...) and the datasets travel to the workers: as bytes.

cloudpickle sends a lambda or a closure by value, its code included. On an interpreter where it
cannot rebuild that code (PyPy 3.11 7.3.19: cloudpipe/cloudpickle#557), the standard ``pickle``
is used instead: functions then travel by reference only, so they must be importable (defined at
a module's top level, as the scripts' are), and anything else is refused up front with one line.
The bytes are read with ``pickle.loads`` either way (cloudpickle writes ordinary pickles).
"""
import functools
import pickle
import platform

import cloudpickle

loads = pickle.loads


@functools.cache
def cloudpickle_rebuilds_code():
    """Whether a lambda survives cloudpickle's round trip on this interpreter (probed once)."""
    try:
        return pickle.loads(cloudpickle.dumps(lambda x: x + 1))(1) == 2
    except Exception:  # whatever breaks, it cannot here
        return False


def dumps(obj, what="the payload"):
    """``obj`` as bytes the workers can load; ``ValueError`` naming ``what`` if it cannot travel."""
    if cloudpickle_rebuilds_code():
        return cloudpickle.dumps(obj)
    try:
        return pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    except (pickle.PicklingError, AttributeError, TypeError) as e:
        raise ValueError(
            f"Expected {what} to be picklable by reference (module-level functions): cloudpickle cannot send "
            f"code by value on {platform.python_implementation()} {platform.python_version()}; got {e}") from None
